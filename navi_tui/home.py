"""Opening the run store under a home folder, with errors a person can act on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store import Store, disk_error
from store.db import DB_FILENAME


class HomeError(Exception):
    """The home folder cannot hold or does not hold a run store: exit 2."""


def open_store(home: Path, *, create: bool) -> Store:
    """Open home/navi.db; reading commands pass create=False and never make one."""
    if not create and not (home / DB_FILENAME).is_file():
        raise HomeError(f"no run store at {home} (expected {home / DB_FILENAME}); train a run first or pass --home")
    try:
        return Store(home)
    except (OSError, sqlite3.Error) as e:
        found = disk_error(e, "the store", home / DB_FILENAME)
        if found is not None:  # a full or read-only disk: say which, with the OS's words
            raise HomeError(str(found)) from None
        raise HomeError(f"cannot open the run store at {home / DB_FILENAME}: {e}") from None
