"""The real navi-tui binary in a real terminal (tmux): start it, press keys, read the screen.

    python -m pytest -q tests/test_console_tmux.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import Store

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed")


def navi_binary() -> str:
    # the console script pip installed beside this interpreter: what a user runs
    script = Path(sys.executable).parent / "navi-tui"
    return str(script) if script.exists() else f"{sys.executable} -m navi_tui"


class Terminal:
    def __init__(self, command: str):
        # a server of our own (-L): it takes this process's environment, and never touches a user's tmux;
        # COLUMNS and LINES (pytest sets them) would override the terminal's real size
        self.base = [TMUX, "-L", f"navi-test-{os.getpid()}"]
        command = f"env -u COLUMNS -u LINES {command}"
        subprocess.run([*self.base, "new-session", "-d", "-s", "navi", "-x", "140", "-y", "45", command], check=True)

    def screen(self) -> str:
        out = subprocess.run([*self.base, "capture-pane", "-p", "-t", "navi"], capture_output=True, text=True)
        return out.stdout

    def send(self, key: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "navi", key], check=True)

    def wait_for(self, text: str, timeout: float = 180) -> str:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)


def test_the_real_binary_trains_pauses_stops_and_quits(tmp_path):
    home = tmp_path / "home"
    term = Terminal(f"{navi_binary()} --home {home} train --steps 100000; echo navi-exited-$?; sleep 60")
    try:
        term.wait_for("q quit")  # the footer names the keys
        screen = term.wait_for("phase policy")
        assert "run 1" in screen and "live" in screen
        term.send("p")
        term.wait_for("PAUSED")
        term.send("p")
        term.wait_for(" live ")
        term.send("s")
        screen = term.wait_for("stopped", timeout=240)
        term.send("q")
        term.wait_for("navi-exited-0")
    finally:
        term.close()
    with Store(home) as store:
        run = store.get_run(1)
        assert run["status"] == "stopped"
        assert store.latest_checkpoint(1, "policy") is not None
