"""RunRecorder: turns the trainer's events into store rows and checkpoint files.

Metrics and log lines go through the StoreWriter thread in batches; checkpoints are written
here, at the few moments the trainer hands one over.
"""

from __future__ import annotations

from pathlib import Path

from navi_model.events import CheckpointReady, Event, LogLine, MetricsLogged
from store import Store, StoreWriter, save_checkpoint


class RunRecorder:
    def __init__(self, store: Store, writer: StoreWriter, run_id: int):
        self.store, self.writer, self.run_id = store, writer, run_id
        self.checkpoint_ids: dict[str, int] = {}  # model -> id of its newest checkpoint

    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricsLogged):
            self.writer.metrics(self.run_id, event.step, event.phase, event.values)
        elif isinstance(event, LogLine):
            self.writer.event(self.run_id, event.level, event.kind, event.message, event.data)
        elif isinstance(event, CheckpointReady):
            path, sha = save_checkpoint(self.store.home, self.run_id, event.name, event.payload)
            cid = self.store.add_checkpoint(self.run_id, step=event.step, phase=event.phase, model=event.model,
                                            path=Path(path), sha256=sha)
            self.checkpoint_ids[event.model] = cid
            self.writer.event(self.run_id, "info", "checkpoint", f"checkpoint {cid}: {event.name} ({sha[:12]})",
                              {"checkpoint_id": cid, "step": event.step})
