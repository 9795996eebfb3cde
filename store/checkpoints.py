"""Write checkpoint files atomically and read them back only if intact and safe.

torch is imported inside the functions, not at the top, so that reading the
run database (the tui does) does not pay for importing torch.
"""

import hashlib
import io
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path

from .disk import disk_error

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch's messages bold their advice


class CheckpointError(Exception):
    """A checkpoint file is missing, damaged or not safe to load."""


def checkpoint_folder(home: Path, run_id: int) -> Path:
    return Path(home) / "checkpoints" / f"run_{run_id:04d}"


def save_checkpoint(home: Path, run_id: int, name: str, payload: dict) -> tuple[Path, str]:
    """Write payload to home/checkpoints/run_<id>/<name>.pt; return (path, sha256)."""
    import torch

    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"checkpoint name must be a plain file name, not {name!r}")
    folder = checkpoint_folder(home, run_id)
    path = folder / f"{name}.pt"
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # write a temporary file in the same folder and rename it over the final
        # name: the rename is atomic, so a reader never sees half a checkpoint
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        digest = file_sha256(Path(temporary))
        os.replace(temporary, path)
        temporary = None
        _fsync_folder(folder)
    except BaseException as exc:
        if temporary is not None:
            _remove_quietly(Path(temporary))
        # a full disk or a read-only file system: one line naming the file and the OS error
        found = disk_error(exc, "the checkpoint", path) if isinstance(exc, Exception) else None
        if found is not None:
            raise found from exc
        raise
    return path, digest


def _remove_quietly(path: Path) -> None:
    # on a read-only file system even the clean-up fails; the write's own error is the news,
    # and an unregistered temporary file is never read (no row names it)
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def load_checkpoint(path: Path, expected_sha256: str) -> dict:
    """Load a checkpoint after checking its sha256, refusing anything but weights."""
    import torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file missing: {path}") from None
    # hash and load the same bytes, so a file replaced in between cannot
    # slip past the check
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise CheckpointError(
            f"checksum mismatch for {path}: expected {expected_sha256}, got {actual}"
        )
    try:
        # weights_only refuses pickles that would import or call arbitrary code. Its warnings about
        # bytes it does not expect ("Detected pickle protocol 130") are no news: the load either
        # gives a payload or fails below, with one message
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} is not a safe weights-only checkpoint, so it was not loaded: "
                              f"{_weights_only_reason(exc)}") from exc
    except Exception as exc:
        # bytes that match their recorded sha256 but are no checkpoint (a file written by
        # something else, damaged before it was hashed) fail anywhere inside the unpickler:
        # RuntimeError, EOFError, but also IndexError, KeyError, TypeError, UnicodeDecodeError,
        # ValueError, AssertionError (found by tests/test_checkpoint_faults.py)
        raise CheckpointError(f"{path} could not be read as a checkpoint: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a checkpoint payload (a dict)")
    return payload


def _weights_only_reason(exc: BaseException) -> str:
    # torch wraps the reason (the global it refused) in advice to load with weights_only=False or
    # to allowlist the global: the very things never to do with a file like this. Keep the reason
    text = _ANSI.sub("", str(exc))
    for line in text.splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith("WeightsUnpickler error"):
            line = line.removeprefix("WeightsUnpickler error: ").split(". Please use", 1)[0].rstrip(".")
            return line if len(line) <= 300 else line[:297] + "..."
    return "its pickle asks for something outside torch's weights-only allowlist"


def _first_line(exc: BaseException) -> str:
    # torch's messages run over several lines (weights_only's advice); an error message is one
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    # makes the rename itself survive a power cut
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
