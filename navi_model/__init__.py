"""navi's brain: models, data, training, diagnostics and gates. Imports neither navi_tui nor store."""
