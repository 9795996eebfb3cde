"""navi's record of runs: a SQLite database and the checkpoint files beside it."""

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .db import Store, connect
from .writer import StoreWriter, StoreWriterError

__all__ = [
    "CheckpointError",
    "Store",
    "StoreWriter",
    "StoreWriterError",
    "connect",
    "load_checkpoint",
    "save_checkpoint",
]
