"""One trainer per run: a lock file per run under the home folder, flock'ed by its trainer.

A trainer holds the lock of the run it writes for as long as it trains. A continuation (train
--resume R, rollback --run R) writes a new run that names R, so it also holds R's lock: "the
same run" is the run being continued. A second continuation of R, or a continuation of R while
R's own trainer lives, finds the lock held and is refused with one line (exit 2) before it
writes anything.

The pattern is navi_tui/mirror/relay_lock.py's (one relay per home): the file holds the pid, for
people and for the message, and the flock decides. The kernel drops an flock when its process
dies, however it dies, so a lock of a killed trainer is free at once: a stale lock is taken
over. Unlike the relay lock, a pid in a file nobody flocks is not respected: every trainer
flocks its lock, so such a file is stale whatever its pid (a reused pid must not block a run).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from store.db import process_alive

LOCK_FOLDER = "locks"
# how long a try waits out another holder before it calls the lock held: a probe (below) holds a
# lock for microseconds, a trainer for the whole run, so a probe never refuses a trainer
PATIENCE_S = 0.5


class RunBusyError(Exception):
    """A live trainer already writes the run (or continues it): exit 2, one line."""


def lock_path(home: Path, run_id: int) -> Path:
    return Path(home) / LOCK_FOLDER / f"run_{run_id:04d}.lock"


class RunLock:
    """The flock on one run's lock file."""

    def __init__(self, home: Path, run_id: int):
        self.run_id = run_id
        self.path = lock_path(home, run_id)
        self.holder: tuple[int | None, int | None] = (None, None)  # (pid, run it trains) of a live holder
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, training: int, patience: float = PATIENCE_S) -> bool:
        """Take the lock for a process that trains run `training`; False (and holder set) when a
        live process holds it for longer than `patience` seconds."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + patience
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.02)
                        continue
                    self.holder = _read_holder(fd)
                    os.close(fd)
                    return False
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                # replaced between our open and our flock: start over on the new file
                os.close(fd)
                return self.acquire(training, patience)
            # free, or left by a dead process (its flock went with it): ours now
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {training}\n".encode(), 0)
        except BaseException:
            if self._fd is None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise
        self._fd, self.holder = fd, (None, None)
        return True

    def probe(self) -> tuple[int | None, int | None] | None:
        """(pid, run) of the live holder, or None when the lock is free; holds nothing afterwards."""
        if self._fd is not None:
            return None
        if not self.path.exists():
            return None
        if self.acquire(self.run_id):
            self.release()
            return None
        return self.holder

    def release(self) -> None:
        if self._fd is None:
            return
        # emptied, not deleted (as the relay lock): a process that opened the file before an
        # unlink would lock a file nobody else can see any more
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            # a disk gone read-only or full mid-run: the pid stays in the file, which blocks
            # nobody once the flock is gone, and the error that ended the run is the one to show
            pass
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _read_holder(fd: int) -> tuple[int | None, int | None]:
    try:
        words = os.pread(fd, 64, 0).decode("ascii", "replace").split()
    except OSError:
        return None, None
    numbers = [int(w) if w.isdigit() else None for w in words[:2]]
    return (numbers + [None, None])[0], (numbers + [None, None])[1]


def busy_message(run: dict, holder: tuple[int | None, int | None] | None) -> str | None:
    """Why nobody else may train into or continue this run now; None when nothing stops it.

    holder: the live holder of the run's lock (probe()). A run whose row says it is running in a
    live process on this host is busy too: the gap between its row and its lock, or a trainer
    that holds no lock (an older navi).
    """
    run_id = run["id"]
    if holder is not None:
        pid, training = holder
        who = f"process {pid}" if pid else "another process"
        if training is None or training == run_id:
            return f"run {run_id} is still being trained by {who}: one trainer per run (stop it first, or wait)"
        return (f"run {run_id} is already being continued by {who} as run {training}: one trainer per run "
                f"(stop it first, or continue run {training} once it ends)")
    if run["status"] == "running" and run["host"] == socket.gethostname() and run["pid"] != os.getpid() \
            and process_alive(run["pid"]):
        return (f"run {run_id} is still being trained by process {run['pid']}: one trainer per run "
                f"(stop it first, or wait)")
    return None


def refuse_if_busy(home: Path, run: dict) -> None:
    """RunBusyError when a live process trains or continues the run (a check that holds nothing)."""
    message = busy_message(run, RunLock(home, run["id"]).probe())
    if message:
        raise RunBusyError(message)


class TrainerLocks:
    """The locks one trainer holds: its source's (a continuation) before its run row exists, and
    its own run's from right after. Released together when training ends, however it ends."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.locks: list[RunLock] = []

    def claim_source(self, run: dict) -> None:
        """Before the new run row: RunBusyError when another live process trains or continues `run`."""
        lock = RunLock(self.home, run["id"])
        # the row's pid too: a live trainer that is between its row and its lock is busy all the same
        message = busy_message(run, None if lock.acquire(run["id"]) else lock.holder)
        if message:
            lock.release()
            raise RunBusyError(message)
        self.locks.append(lock)

    def claim_own(self, run_id: int) -> None:
        lock = RunLock(self.home, run_id)
        if not lock.acquire(run_id):
            # nobody can know a run id before its row exists, so this is a bug, not a user's error
            raise RuntimeError(f"the lock of new run {run_id} is held by process {lock.holder[0]}")
        # the source's lock now names the run its holder trains
        for source in self.locks:
            os.ftruncate(source._fd, 0)
            os.pwrite(source._fd, f"{os.getpid()} {run_id}\n".encode(), 0)
        self.locks.append(lock)

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks.clear()
