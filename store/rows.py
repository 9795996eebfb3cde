"""Build metric and event rows the same way for Store and StoreWriter."""

import json
import time as clock

RUN_STATUSES = ("running", "completed", "failed", "crashed", "stopped")
VERDICTS = ("pass", "fail")
EVENT_LEVELS = ("info", "warn", "error")
# how an outbox row was closed: delivered to discord; superseded by a newer version of the same
# message before it went out; rejected by discord as malformed (retrying cannot help)
OUTBOX_OUTCOMES = ("delivered", "superseded", "rejected")


def metric_row(
    run_id: int,
    step: int,
    phase: str,
    name: str,
    value: float | None,
    time: float | None = None,
) -> dict:
    # float() here, in the caller's thread, so a bad value fails where it was
    # logged and a tensor is not kept alive on the writer's queue.
    # nan is stored as NULL (sqlite has no nan) and reads back as None;
    # +inf and -inf are stored and read back as they are
    return {
        "run_id": run_id,
        "step": int(step),
        "phase": phase,
        "name": name,
        "value": None if value is None else float(value),
        "time": clock.time() if time is None else time,
    }


def event_row(
    run_id: int | None,
    level: str,
    kind: str,
    message: str,
    data=None,
    time: float | None = None,
) -> dict:
    if level not in EVENT_LEVELS:
        raise ValueError(f"event level must be one of {EVENT_LEVELS}, not {level!r}")
    # data is serialised at the call, so a later change to the caller's
    # object cannot change what is stored, and bad data fails at the caller
    return {
        "run_id": run_id,
        "time": clock.time() if time is None else time,
        "level": level,
        "kind": kind,
        "message": message,
        "data_json": None if data is None else json.dumps(data, sort_keys=True),
    }
