"""What a failed write to the home folder means, in one line a person can act on.

A full disk, a file system gone read-only or a folder the process may not write reach navi as an
OSError from a file write, as a sqlite3 error from the store (sqlite names no OS error: "database or
disk is full", "disk I/O error", "attempt to write a readonly database"), or wrapped by torch in a
RuntimeError while it saves a checkpoint. DiskError is each of them as one message naming the file
and the OS error: "cannot write the store /h/navi.db: disk full (No space left on device)".
"""

from __future__ import annotations

import errno
import os
import resource
import sqlite3
from pathlib import Path

# the OS errors that mean "this folder cannot take the write", and how a person says each
REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file too large",
    errno.EIO: "I/O error",
}
# sqlite's result codes for a write the file system refused (SQLITE_IOERR has many extended forms)
SQLITE_DISK_CODES = ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_IOERR", "SQLITE_CANTOPEN")
PROBE_BYTES = 4096


class DiskError(Exception):
    """A write to the home folder failed for a reason of the disk, not of navi: exit 2, one line."""

    def __init__(self, what: str, path: Path | str, os_error: OSError | None, detail: str = ""):
        self.what, self.path, self.os_error, self.detail = what, Path(path), os_error, detail
        if os_error is not None and os_error.errno in REASONS:
            reason = f"{REASONS[os_error.errno]} ({os_error.strerror or os.strerror(os_error.errno)})"
        else:
            reason = detail or "the write failed"
        super().__init__(f"cannot write {what} {path}: {reason}")

    def again(self) -> "DiskError":
        """A fresh copy, for raising the same trouble once more from another place."""
        return DiskError(self.what, self.path, self.os_error, self.detail)


def disk_error(exc: BaseException, what: str, path: Path | str) -> DiskError | None:
    """exc as a DiskError naming what (e.g. "the store") and path, or None when it is no disk trouble."""
    if isinstance(exc, DiskError):
        return exc
    found = _os_error_in(exc)
    if found is not None:
        return DiskError(what, path, found)
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if not name.startswith(SQLITE_DISK_CODES) and not _sqlite_disk_text(str(exc)):
            return None
        # sqlite keeps the errno to itself: ask the folder what it refuses now. A full disk is
        # one whatever the probe meets (space may have come back since); any other code is disk
        # trouble only when the folder refuses a write too (a missing folder is not)
        probed = probe_folder(Path(path).parent)
        if name.startswith("SQLITE_FULL") or (probed is not None and probed.errno in REASONS):
            return DiskError(what, path, probed if probed is not None and probed.errno in REASONS else None,
                             f"disk full (sqlite: {exc})" if name.startswith("SQLITE_FULL") else f"sqlite: {exc}")
        return None
    if isinstance(exc, RuntimeError) and "write" in str(exc).lower():
        # torch's checkpoint writer reports a failed write as "... file write failed"
        probed = probe_folder(Path(path).parent)
        if probed is not None and probed.errno in REASONS:
            return DiskError(what, path, probed)
    return None


def probe_folder(folder: Path) -> OSError | None:
    """The OS error a small write into folder meets now, or None when it goes through.

    The file system's read-only flag is read first, so nothing is tried on one; then a 4 KiB file
    is written, synced and removed. A per-process file size limit (RLIMIT_FSIZE) smaller than the
    file navi was writing is the last guess, since a probe that small slips under it.
    """
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return OSError(errno.EROFS, os.strerror(errno.EROFS))
    except OSError as e:
        return e
    probe = folder / f".navi-disk-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        return e
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        largest = max((p.stat().st_size for p in folder.iterdir() if p.is_file()), default=0)
        if largest + (1 << 20) > soft:
            return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    return None


def _os_error_in(exc: BaseException) -> OSError | None:
    # torch and sqlite-utils wrap what the OS said; the chain still holds it
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in REASONS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _sqlite_disk_text(message: str) -> bool:
    # sqlite3 errors raised before python 3.11 carry no sqlite_errorname
    return any(text in message for text in ("disk is full", "disk I/O error", "readonly database",
                                            "unable to open database file"))
