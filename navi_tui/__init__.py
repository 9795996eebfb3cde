"""navi's face: the command line, the headless mode and (later) the Textual console."""
