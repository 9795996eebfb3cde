"""One relay per home folder: a lock file that holds the relay's pid.

Two consoles on one home would otherwise deliver every message twice. The file holds the pid
for people and for the stale check; an flock on it makes taking over a stale lock safe when two
processes find it stale at once (only one gets the flock), and the kernel drops the flock when
its process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from store.db import process_alive

LOCK_FILENAME = "discord-relay.lock"


class RelayLock:
    def __init__(self, home: Path):
        self.path = Path(home) / LOCK_FILENAME
        self.holder: int | None = None  # the pid of the live relay that holds it, when it is not us
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; False (and holder set) when a live relay holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.holder = _read_pid(fd)
                os.close(fd)
                return False
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                # someone replaced the file between our open and our flock: start over on the new one
                os.close(fd)
                return self.acquire()
            pid = _read_pid(fd)
            if pid is not None and pid != os.getpid() and process_alive(pid):
                # a live process claims it without an flock (one that predates the flock): respect the pid
                self.holder = pid
                os.close(fd)
                return False
            # free, or stale (its pid is dead): ours now
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            if self._fd is None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            raise
        self._fd, self.holder = fd, None
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        # emptied, not deleted: a process that opened the file before an unlink would lock a
        # file nobody else can see any more
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
