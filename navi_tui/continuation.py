"""Where a continued or rolled-back run starts: a stored checkpoint and the models before it.

The brain trains in order (policy, planner, talker), so continuing from a checkpoint of one
model needs the weights every earlier model had when that checkpoint was written: the newest
checkpoint of each earlier model at or before the picked one. Later models train afresh.
A continuation is a new run whose `resumed_from` names the source, so the source's history
stays as it was (wandb's "fork" rather than its "resume").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from navi_model.brain import MODELS  # the brain's training order
from navi_model.payload import PayloadError, check_resume_fits
from store import CheckpointError, Store

from navi_tui.run_lock import refuse_if_busy
from navi_tui.stored_checkpoint import describe_checkpoint, load_stored_checkpoint



class ResumeError(ValueError):
    """The run or checkpoint cannot be continued as asked: exit 2, or a notice in the console."""


@dataclass
class ResumePoint:
    source_run: int
    checkpoint: dict  # the picked checkpoint row
    payloads: dict[str, dict] = field(default_factory=dict)  # model -> checkpoint payload to start from
    checkpoint_ids: dict[str, int] = field(default_factory=dict)  # model -> the checkpoint each payload came from
    profile: str = "tiny"
    data: Path | None = None  # the corpus folder the source trained on
    steps: int | None = None  # the source's --steps, if it had one
    rollback: bool = False  # picked by a person as a rollback target, not just "the newest"
    rows: dict[str, dict] = field(default_factory=dict)  # model -> the checkpoint row each payload came from
    paths: dict[str, Path] = field(default_factory=dict)  # model -> that row's file

    def describe(self) -> str:
        c = self.checkpoint
        verb = "rolled back to" if self.rollback else "continues"
        return (f"{verb} run {self.source_run} checkpoint {c['id']} ({c['model']}, {c['phase']}, step {c['step']})")


def resume_point(store: Store, run_id: int, checkpoint_id: int | None = None, *, rollback: bool = False) -> ResumePoint:
    """The newest checkpoint of the run (continue), or the one picked (rollback)."""
    run = store.get_run(run_id)
    if run is None:
        raise ResumeError(f"no run {run_id} in {store.path}")
    # a run a live process trains or continues is refused before its checkpoints are read
    refuse_if_busy(store.home, run)
    ckpts = store.checkpoints(run_id)
    if not ckpts:
        raise ResumeError(f"run {run_id} has no checkpoint to continue from")
    if checkpoint_id is None:
        # the furthest model along the brain's order, its newest checkpoint
        picked = max(ckpts, key=lambda c: (MODELS.index(c["model"]), c["step"], c["id"]))
    else:
        picked = next((c for c in ckpts if c["id"] == checkpoint_id), None)
        if picked is None:
            raise ResumeError(f"checkpoint {checkpoint_id} is not a checkpoint of run {run_id}")
    chosen = {picked["model"]: picked}
    for model in MODELS[:MODELS.index(picked["model"])]:
        earlier = [c for c in ckpts if c["model"] == model and c["id"] <= picked["id"]]
        if not earlier:
            raise ResumeError(f"run {run_id} has no {model} checkpoint before checkpoint {picked['id']}, "
                              f"so the {picked['model']} cannot continue")
        chosen[model] = max(earlier, key=lambda c: (c["step"], c["id"]))
    # CheckpointError (missing file, sha256 mismatch, unsafe pickle, not a navi payload) names the
    # checkpoint and propagates: nothing is written before every payload is known to be sound
    payloads = {m: load_stored_checkpoint(store, c, resume=True, needed_by=picked) for m, c in chosen.items()}
    config = json.loads(run["config_json"] or "{}")
    steps = (config.get("steps") or {}).get("policy") if config.get("steps_from") == "--steps" else None
    return ResumePoint(run_id, picked, payloads, {m: c["id"] for m, c in chosen.items()},
                       profile=run["profile"] or "tiny", data=Path(config["data"]) if config.get("data") else None,
                       steps=steps, rollback=rollback, rows=dict(chosen),
                       paths={m: store.checkpoint_path(c) for m, c in chosen.items()})


def check_resume_point(resume: ResumePoint, profile, data, intents: list[str], device=None) -> None:
    """CheckpointError naming the checkpoint when a payload cannot continue in this profile on this
    data (another corpus, another batch size, another model shape): before the run row exists."""
    for model, payload in resume.payloads.items():
        try:
            check_resume_fits(model, payload, profile, data, intents, device)
        except PayloadError as e:
            row = resume.rows.get(model)
            name = describe_checkpoint(row, resume.checkpoint) if row else f"the {model} checkpoint"
            where = f" at {resume.paths[model]}" if model in resume.paths else ""
            raise CheckpointError(f"{name}{where}: {e}") from None
