"""RunFollower: reads the runs in the store and queues what Discord should hear of them.

The mirror follows the store, not the trainer's event stream: the same rows the console
follows. So it mirrors any run in its home folder, including one that another console or a
torchrun job writes, it sees gates as they are stored, and it can tell of a crash whose
process never lived to say so. What it queues lands in the outbox, keyed so that a second
relay, or a restarted one, never queues the same announcement twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from store import Store

from . import compose

# the metrics a status line shows
_PROGRESS = ("loss", "tokens_per_s")


@dataclass
class _Watch:
    """What the follower knows of one running run."""
    run: dict
    event_cursor: int
    eval_cursor: int = 0
    metric_cursor: int = 0
    progress: dict = field(default_factory=dict)  # phase, step, loss, tokens_per_s
    gates: dict = field(default_factory=dict)  # gate name -> newest eval row
    status_text: str | None = None  # the last status queued, without its clock line
    status_at: float = 0.0


class RunFollower:
    def __init__(self, store: Store, *, since: float, edit_interval: float, gpu_reading: Callable[[dict], str]):
        self.store, self.since, self.edit_interval, self.gpu_reading = store, since, edit_interval, gpu_reading
        self._watches: dict[int, _Watch] = {}
        self._seen_run_id: int | None = None

    def running(self) -> list[tuple[dict, dict]]:
        """(run, progress) of every run followed now, for the heartbeat."""
        return [(w.run, w.progress) for w in self._watches.values()]

    def tick(self, *, final: bool = False) -> int:
        """Read what moved since the last tick and queue messages; returns how many were queued.

        final: the process is about to exit, so a withheld status edit goes out now.
        """
        queued = 0
        if self._seen_run_id is None:
            # first tick: runs created since the mirror was made are news (a headless run starts
            # its relay once its run row exists), and so are runs that ended since (marked crashed
            # by that run's start); runs already running are followed from here on; older
            # history is not announced
            for run in self.store.db.query(
                    "SELECT * FROM runs WHERE status = 'running' OR created >= ? OR finished >= ? ORDER BY id",
                    [self.since, self.since]):
                new = run["created"] >= self.since
                if new:
                    queued += self._queue(run, "start", compose.run_started(run), dedupe=f"start:{run['id']}")
                self._watches[run["id"]] = self._watch(run, announce=new)
            row = next(self.store.db.query("SELECT max(id) AS id FROM runs"))
            self._seen_run_id = row["id"] or 0
        for run in self.store.db.query("SELECT * FROM runs WHERE id > ? ORDER BY id", [self._seen_run_id]):
            self._seen_run_id = run["id"]
            queued += self._queue(run, "start", compose.run_started(run), dedupe=f"start:{run['id']}")
            self._watches[run["id"]] = self._watch(run, announce=True)
        for run_id, watch in list(self._watches.items()):
            watch.run = self.store.get_run(run_id) or watch.run
            queued += self._follow(watch, final)
            if watch.run["status"] != "running":
                queued += self._ended(watch)
                del self._watches[run_id]
        return queued

    def _watch(self, run: dict, *, announce: bool) -> _Watch:
        # a run met mid-way (a relay that starts late or takes over): its earlier log lines are
        # skipped, but its gates so far and its latest numbers are read at once
        watch = _Watch(run, event_cursor=0 if announce else self.store.last_event_id(run["id"]))
        watch.metric_cursor = self.store.last_metric_id(run["id"])
        for name in _PROGRESS:
            row = self.store.latest_metric(run["id"], name)
            if row is not None:
                self._take_metric(watch, row)
        if not announce:
            for row in self.store.evals(run["id"]):
                watch.gates[row["gate"]] = row
                watch.eval_cursor = row["id"]
        return watch

    def _follow(self, watch: _Watch, final: bool) -> int:
        run, queued = watch.run, 0
        for event in self.store.events_after(run["id"], watch.event_cursor):
            watch.event_cursor = event["id"]
            if event["kind"] == "rollback":
                text = compose.rollback(run, event)
            elif event["kind"] == "crash":
                text = compose.crash(run, event["message"])
            elif event["level"] == "error":
                text = compose.alarm(run, event)
            else:
                continue
            queued += self._queue(run, event["kind"], text, dedupe=f"event:{event['id']}")
        for row in self.store.evals_after(run["id"], watch.eval_cursor):
            watch.eval_cursor = row["id"]
            watch.gates[row["gate"]] = row
            if not row["passed"]:
                queued += self._queue(run, "gate", compose.gate_failed(run, row), dedupe=f"gate:{row['id']}")
        while True:
            rows = self.store.metrics_after(run["id"], watch.metric_cursor, limit=5000)
            for row in rows:
                watch.metric_cursor = row["id"]
                if row["name"] in _PROGRESS:
                    self._take_metric(watch, row)
            if len(rows) < 5000:
                break
        return queued + self._status(watch, force=final or run["status"] != "running")

    @staticmethod
    def _take_metric(watch: _Watch, row: dict) -> None:
        if row["phase"] == "eval":
            return
        if watch.progress.get("phase") != row["phase"]:
            watch.progress = {"phase": row["phase"]}
        watch.progress.update({"step": row["step"], row["name"]: row["value"]})

    def _status(self, watch: _Watch, *, force: bool) -> int:
        gates = list(watch.gates.values())
        text = compose.status(watch.run, watch.progress, gates, self.gpu_reading(watch.run))
        body = text.rsplit("\n", 1)[0]  # without "updated hh:mm:ss", which always changes
        now = time.monotonic()
        if body == watch.status_text or (not force and now - watch.status_at < self.edit_interval):
            return 0
        watch.status_text, watch.status_at = body, now
        return self._queue(watch.run, "status", text, edit_key=f"status:{watch.run['id']}")

    def _ended(self, watch: _Watch) -> int:
        run = watch.run
        queued = 0
        if run["status"] == "crashed":
            # its process died without a word; the next navi to start marked it
            queued += self._queue(run, "crash", compose.crash(run, run["message"] or "its process ended"),
                                  dedupe=f"crash:{run['id']}")
        gates = compose.latest_gates(self.store.evals(run["id"]))
        text = compose.run_ended(run, gates)
        for i, part in enumerate(compose.split_message(text)):
            queued += self._queue(run, "end", part, dedupe=f"end:{run['id']}:{i}")
        return queued

    def _queue(self, run: dict, kind: str, text: str, *, dedupe: str | None = None, edit_key: str | None = None) -> int:
        queued = 0
        parts = [text] if edit_key else compose.split_message(text)
        for i, part in enumerate(parts):
            key = dedupe if dedupe is None or len(parts) == 1 else f"{dedupe}:{i}"
            if self.store.queue_message(kind, part, run_id=run["id"], edit_key=edit_key, dedupe_key=key) is not None:
                queued += 1
        return queued
