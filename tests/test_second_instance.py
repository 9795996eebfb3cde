"""One trainer per run (navi_tui/run_lock.py), with real processes.

    python -m pytest -q -m slow tests/test_second_instance.py

A continuation (train --resume R, rollback --run R) writes a new run and holds R's lock as well as
its own: a second continuation of R, or one of a run whose trainer lives, is refused with one line
and exit 2, and writes nothing. A lock whose process died is taken over. (A second relay on one home
is refused by the relay's own lock: tests/test_discord_mirror.py::
test_a_live_lock_means_no_relay_and_a_stale_one_is_taken_over.)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import crash_harness as H
from cli_harness import one_line_error, store_dump
from navi_tui.run_lock import RunBusyError, RunLock, TrainerLocks, lock_path, refuse_if_busy
from store import Store

# a long harness: the slow tier (python -m pytest -q -m slow; .ci/run runs it after the everyday tier)
pytestmark = pytest.mark.slow

REPO = H.REPO


# the lock itself, in this process and one other ------------------------------------------------

def test_a_held_lock_refuses_a_second_holder_even_in_the_same_process(tmp_path):
    first, second = RunLock(tmp_path, 3), RunLock(tmp_path, 3)
    assert first.acquire(5)
    assert not second.acquire(5, patience=0.05)
    assert second.holder == (os.getpid(), 5)
    assert RunLock(tmp_path, 3).probe() == (os.getpid(), 5)
    first.release()
    assert lock_path(tmp_path, 3).read_text() == ""  # emptied, not deleted
    assert RunLock(tmp_path, 3).probe() is None
    assert second.acquire(5)
    second.release()


def test_a_probe_creates_no_file(tmp_path):
    assert RunLock(tmp_path, 1).probe() is None
    assert not (tmp_path / "locks").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = ("import sys, time; from navi_tui.run_lock import RunLock; "
            "assert RunLock(sys.argv[1], 1).acquire(1); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, env=H.ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = RunLock(tmp_path, 1)
        assert not lock.acquire(1, patience=0.05) and lock.holder == (holder.pid, 1)
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    assert lock_path(tmp_path, 1).read_text() == f"{holder.pid} 1\n"  # the dead holder's pid is still there
    assert lock.acquire(1)  # but its flock went with it
    assert lock_path(tmp_path, 1).read_text() == f"{os.getpid()} 1\n"
    lock.release()


def test_a_pid_in_a_file_nobody_flocks_is_stale_whatever_the_pid(tmp_path):
    # unlike the relay lock: every trainer flocks, so a live pid (a reused one) in a free file blocks nothing
    path = lock_path(tmp_path, 1)
    path.parent.mkdir()
    path.write_text("1 1\n")  # pid 1 is alive
    assert RunLock(tmp_path, 1).probe() is None


def test_a_running_row_of_a_live_process_is_busy_without_any_lock(tmp_path):
    # the gap between a trainer's run row and its lock, or a trainer of a navi without locks
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with Store(tmp_path) as store:
            run_id = store.create_run(profile="tiny", command="train", config={})
            store.db.execute("UPDATE runs SET pid = ? WHERE id = ?", [sleeper.pid, run_id])
            run = store.get_run(run_id)
        with pytest.raises(RunBusyError, match=f"run {run_id} is still being trained by process {sleeper.pid}"):
            refuse_if_busy(tmp_path, run)
        locks = TrainerLocks(tmp_path)
        with pytest.raises(RunBusyError):
            locks.claim_source(run)
        assert locks.locks == [] and RunLock(tmp_path, run_id).probe() is None  # nothing kept
    finally:
        sleeper.kill()
        sleeper.wait(10)


# with the real command line --------------------------------------------------------------------

@pytest.fixture
def home(trained_home_template, tmp_path):
    # run 1: a real `train --steps 3` (conftest.py's session run, copied) with a checkpoint of every model
    return Path(shutil.copytree(trained_home_template, tmp_path / "home"))


def wait_until_stopped(pid: int, timeout: float = 60.0) -> None:
    """Until every thread of pid is stopped (state T in /proc): a SIGSTOP is asynchronous, and a
    thread still running could commit a row while the test reads the store."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0]
                      for t in Path(f"/proc/{pid}/task").iterdir()]
        except (OSError, IndexError):  # a thread ended as we looked: look again
            states = []
        if states and all(state == "T" for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} did not stop within {timeout:.0f} s: {states}"
        time.sleep(0.01)


def refused(home, *args) -> str:
    code, out, err = H.run(H.navi_command(home, *args))
    assert code == 2, (code, out, err)
    return one_line_error(err)


def test_second_trainers_of_one_run_are_refused_and_a_dead_ones_lock_is_taken_over(home):
    # the trainer stops itself once it holds run 2 and its locks, its writer's rows committed
    # (NAVI_STOP_AT=run): a SIGSTOP from here at an arbitrary moment once froze it inside a write
    # transaction, and the second trainer met "database is locked" instead of the refusal under test
    first = H.Child(H.navi_command(home, "train", "--resume", 1), env={H.STOP_ENV: "run"})
    try:
        assert first.wait_for(H.STOP_LINE, 300), (first.lines, first.err)
        wait_until_stopped(first.pid)  # alive, holding its locks, writing nothing while we look
        before = store_dump(home)
        assert refused(home, "train", "--resume", 1) == (
            f"navi-tui: error: run 1 is already being continued by process {first.pid} as run 2: one trainer "
            f"per run (stop it first, or continue run 2 once it ends)")
        assert "already being continued by process" in refused(home, "rollback", "--run", 1)
        assert "already being continued by process" in refused(home, "rollback", "--run", 1, "--to", 1)
        assert refused(home, "train", "--resume", 2) == (
            f"navi-tui: error: run 2 is still being trained by process {first.pid}: one trainer per run "
            f"(stop it first, or wait)")
        assert store_dump(home) == before  # no run row, no event, no file
    finally:
        first.kill()  # SIGKILL works on a stopped process
    assert first.proc.returncode == -signal.SIGKILL
    # the dead trainer's locks are free: the next continuation takes them, and marks its run crashed
    code, out, err = H.run(H.navi_command(home, "train", "--resume", 1))
    assert code == 1, err  # a 3-step run fails its gates
    assert "marked crashed: run 2 (its process ended without finishing)" in out
    with Store(home) as store:
        assert [(r["id"], r["status"], r["resumed_from"]) for r in store.list_runs()] == [
            (3, "completed", 1), (2, "crashed", 1), (1, "completed", None)]
    assert lock_path(home, 1).read_text() == "" and lock_path(home, 3).read_text() == ""
