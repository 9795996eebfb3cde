"""navi's record of runs: a SQLite database and the checkpoint files beside it."""

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .db import Store, connect
from .disk import DiskError, disk_error
from .writer import StoreWriter, StoreWriterError

__all__ = [
    "CheckpointError",
    "DiskError",
    "Store",
    "StoreWriter",
    "StoreWriterError",
    "connect",
    "disk_error",
    "load_checkpoint",
    "save_checkpoint",
]
