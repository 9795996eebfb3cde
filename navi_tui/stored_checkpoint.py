"""Loading a checkpoint row of the store: one error that names the checkpoint and what is wrong.

The store checks the file (present, its sha256, torch's weights-only unpickler); navi_model.payload
checks what it holds. Either way the error is a CheckpointError (exit 2 in the CLI, a notice
in the console) that names the checkpoint by id, model, run and path, so a person knows which
file to look at, and it is raised before eval, resume or rollback writes anything.
"""

from __future__ import annotations

from navi_model.payload import PayloadError, check_payload
from store import CheckpointError, Store, load_checkpoint


def describe_checkpoint(row: dict, needed_by: dict | None = None) -> str:
    """'checkpoint 3 (talker, sft, step 20 of run 1)', and what it is needed for."""
    text = f"checkpoint {row['id']} ({row['model']}, {row['phase']}, step {row['step']} of run {row['run_id']}"
    if needed_by is not None and needed_by["id"] != row["id"]:
        text += f"; the {row['model']} that checkpoint {needed_by['id']} ({needed_by['model']}) continues from"
    return text + ")"


def load_stored_checkpoint(store: Store, row: dict, *, resume: bool = False, needed_by: dict | None = None) -> dict:
    """The payload of a checkpoint row, checked; CheckpointError naming the row otherwise.
    resume: the payload must also hold what continuing training needs."""
    path = store.checkpoint_path(row)
    try:
        payload = load_checkpoint(path, row["sha256"])
    except CheckpointError as e:  # its message names the path and what is wrong with the file
        raise CheckpointError(f"{describe_checkpoint(row, needed_by)}: {e}") from None
    try:
        check_payload(row["model"], payload, resume=resume)
    except PayloadError as e:
        raise CheckpointError(f"{describe_checkpoint(row, needed_by)} at {path}: {e}") from None
    return payload
