"""RunRecorder: turns the trainer's events into store rows and checkpoint files.

Metrics and log lines go through the StoreWriter thread in batches; checkpoints are written
here, at the few moments the trainer hands one over.
"""

from __future__ import annotations

from pathlib import Path

from navi_model.events import CheckpointReady, Event, LogLine, MetricsLogged
from navi_model.gates import GateVerdict
from store import Store, StoreWriter, save_checkpoint


def eval_row(g: GateVerdict, **context) -> dict:
    """A gate's verdict as a row of the store's evals table; per-item results go in its detail."""
    return {"gate": g.name, "value": g.value, "threshold": g.threshold_text, "passed": g.passed,
            "detail": {"summary": g.summary, "items": g.detail, **context}}


class RunRecorder:
    def __init__(self, store: Store, writer: StoreWriter, run_id: int):
        self.store, self.writer, self.run_id = store, writer, run_id
        self.checkpoint_ids: dict[str, int] = {}  # model -> id of the checkpoint that holds its current weights
        self._saved: dict[str, dict] = {}  # checkpoint name -> {id, path, sha256, step, model}
        self._last_step: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricsLogged):
            self.writer.metrics(self.run_id, event.step, event.phase, event.values)
        elif isinstance(event, LogLine):
            self.writer.event(self.run_id, event.level, event.kind, event.message, event.data)
            if event.kind == "rollback" and event.data and event.data.get("restore") in self._saved:
                self._record_rollback(event)
        elif isinstance(event, CheckpointReady):
            path, sha = save_checkpoint(self.store.home, self.run_id, event.name, event.payload)
            cid = self.store.add_checkpoint(self.run_id, step=event.step, phase=event.phase, model=event.model,
                                            path=Path(path), sha256=sha)
            self._saved[event.name] = {"id": cid, "path": Path(path), "sha256": sha, "step": event.step,
                                       "model": event.model}
            self._last_step[event.model] = max(event.step, self._last_step.get(event.model, 0))
            self.checkpoint_ids[event.model] = cid
            self.writer.event(self.run_id, "info", "checkpoint", f"checkpoint {cid}: {event.name} ({sha[:12]})",
                              {"checkpoint_id": cid, "step": event.step})

    def _record_rollback(self, event: LogLine) -> None:
        # the restored weights become the model's newest checkpoint: a row of phase "rollback"
        # pointing at the restored file, so whoever takes the latest checkpoint gets what is in use
        saved = self._saved[event.data["restore"]]
        model = saved["model"]
        cid = self.store.add_checkpoint(self.run_id, step=self._last_step.get(model, saved["step"]), phase="rollback",
                                        model=model, path=saved["path"], sha256=saved["sha256"],
                                        meta={"restored": saved["id"], "reason": event.message})
        self.checkpoint_ids[model] = cid
