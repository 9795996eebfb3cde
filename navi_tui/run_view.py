"""RunView: what the console knows about one run, fed the same way whoever writes the run.

A run this console trains feeds it through the trainer's events; a run another process writes
(another `navi-tui --no-ui`, a torchrun job) feeds it through store rows read past a cursor.
Both end up as `metric(...)` and `event(...)` calls here, so every pane renders one model.
Plain Python, no widgets: the panes read it on their own redraw timer.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field

# phases in training order; the talker's DA continues SFT's step count
PHASES = ("policy", "planner", "sft", "da")
PHASE_MODEL = {"policy": "policy", "planner": "planner", "sft": "talker", "da": "talker"}
# metrics that mark an evaluation point on the loss plot
EVAL_MARKS = ("concept_sim", "gallery_similarity", "coverage_min")
MAX_POINTS = 4000  # per phase; older points are thinned, so a long run never grows the view without bound
MAX_EVENTS = 1000
# what a pane draws from; a change marks only the panes that show it, so a new loss point
# redraws the loss plot and leaves the tables alone
PANES = ("loss", "concept", "weights", "gates", "gallery", "events")


@dataclass
class Latest:
    phase: str | None = None
    step: int = 0
    loss: float | None = None
    tokens_per_s: float | None = None
    step_ms: float | None = None


@dataclass
class RunView:
    run_id: int | None = None
    run: dict | None = None  # the runs row, as last read from the store
    totals: dict[str, int] = field(default_factory=dict)  # phase -> planned steps
    loss: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # phase -> (step, loss)
    eval_steps: dict[str, set[int]] = field(default_factory=dict)  # phase -> steps with an evaluation
    concept_sim: list[tuple[int, float]] = field(default_factory=list)  # (talker step, mean cosine)
    class_weights: dict[str, float] = field(default_factory=dict)  # planner class -> loss weight
    class_shares: dict[str, tuple[float, float]] = field(default_factory=dict)  # class -> (raw, weighted) share
    latest: Latest = field(default_factory=Latest)
    events: deque = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))  # (time, level, kind, message)
    samples: list[dict] = field(default_factory=list)  # live gallery samples: step, prompt, output, reference
    gates: list[dict] = field(default_factory=list)  # the store's eval rows, newest verdict per gate
    gallery: list[dict] = field(default_factory=list)  # the store's newest gallery (one eval's or one run's)
    checkpoints: list[dict] = field(default_factory=list)
    event_total: int = 0  # events ever added (the deque keeps the newest), so a log appends only the new ones
    dirty: set = field(default_factory=lambda: set(PANES))  # panes whose data moved since their last redraw

    @classmethod
    def for_run(cls, run: dict | None) -> "RunView":
        view = cls(run_id=run["id"] if run else None)
        if run:
            view.set_run(run)
        return view

    def set_run(self, run: dict) -> None:
        self.run = run
        config = json.loads(run.get("config_json") or "{}")
        steps = config.get("steps") or {}
        da = (config.get("profile") or {}).get("talker_train", {}).get("da_steps", 0)
        if steps:
            self.totals = {"policy": steps.get("policy", 0), "planner": steps.get("planner", 0),
                           "sft": steps.get("talker", 0), "da": steps.get("talker", 0) + int(da or 0)}
        self.dirty.add("loss")

    # feeding

    def metric(self, step: int, phase: str, name: str, value: float | None) -> None:
        if value is None:
            return
        if name == "loss":
            self.dirty.add("loss")
            series = self.loss.setdefault(phase, [])
            series.append((step, value))
            if len(series) > MAX_POINTS:
                del series[1::2]  # keep every other point: the shape survives, the memory does not grow
            self.latest.phase, self.latest.step, self.latest.loss = phase, step, value
        elif name == "tokens_per_s":
            self.latest.tokens_per_s = value
        elif name == "step_ms":
            self.latest.step_ms = value
        elif name == "concept_sim" and phase in ("sft", "da", "talker"):
            self.concept_sim.append((step, value))
            self.dirty.add("concept")
        elif name.startswith("weight/"):
            self.class_weights[name[7:]] = value
            self.dirty.add("weights")
        elif name.startswith("share/") or name.startswith("weighted_share/"):
            self.dirty.add("weights")
            cls = name.split("/", 1)[1]
            # a run of the CTC planner stores shares only (its loss weighs every action alike): no
            # weighted share is shown as none, not as 0
            raw, weighted = self.class_shares.get(cls, (None, None))
            self.class_shares[cls] = (value, weighted) if name.startswith("share/") else (raw, value)
        if name in EVAL_MARKS and phase in PHASES:
            self.eval_steps.setdefault(phase, set()).add(step)
            self.dirty.add("loss")

    def metrics(self, step: int, phase: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.metric(step, phase, name, value)

    def event(self, level: str, kind: str, message: str, data: dict | None = None, at: float | None = None) -> None:
        self.events.append((at or time.time(), level, kind, message))
        self.event_total += 1
        self.dirty.add("events")
        if kind == "sample" and data:
            self.samples.append({k: data.get(k) for k in ("step", "prompt", "output", "reference")})
            del self.samples[:-200]
            self.dirty.add("gallery")

    def store_rows(self, metrics: list[dict], events: list[dict]) -> None:
        """Rows another process wrote, read past the follower's cursor."""
        for m in metrics:
            self.metric(m["step"], m["phase"], m["name"], m["value"])
        for e in events:
            data = json.loads(e["data_json"]) if e.get("data_json") else None
            self.event(e["level"], e["kind"], e["message"], data, e["time"])

    def set_results(self, evals: list[dict], gallery: list[dict], checkpoints: list[dict]) -> None:
        """Gates, gallery and checkpoints: small tables, re-read whole when they change."""
        newest: dict[str, dict] = {}
        for row in evals:  # oldest first: a later eval of the same gate replaces the earlier one
            newest[row["gate"]] = row
        gates = list(newest.values())
        gallery_rows = gallery
        if gallery:
            # the newest gallery only: one add_gallery call stamps its rows with one time
            last = gallery[-1]["created"]
            gallery_rows = [g for g in gallery if g["created"] == last]
        if (gates, gallery_rows, checkpoints) != (self.gates, self.gallery, self.checkpoints):
            self.gates, self.gallery, self.checkpoints = gates, gallery_rows, checkpoints
            self.dirty.update(("gates", "gallery"))

    # reading

    def take_dirty(self, panes: tuple[str, ...]) -> set[str]:
        """The given panes that need a redraw; they count as drawn from here on."""
        out = self.dirty.intersection(panes)
        self.dirty.difference_update(out)
        return out

    @property
    def status(self) -> str:
        return (self.run or {}).get("status") or "-"

    def eta_seconds(self) -> float | None:
        """Seconds left in the current phase and the phases after it, at the current step time."""
        phase, ms = self.latest.phase, self.latest.step_ms
        if phase not in self.totals or not ms:
            return None
        left = self.totals[phase] - self.latest.step
        later = PHASES[PHASES.index(phase) + 1:]
        for p in later:
            # da's total includes sft's; each later phase counts its own steps only
            left += self.totals[p] - (self.totals["sft"] if p == "da" else 0)
        return max(0.0, left * ms / 1000.0)

    def loss_series(self) -> list[tuple[str, list[float], list[float], list[float]]]:
        """(phase, xs, ys, eval xs) on one axis: each phase starts where the one before it ended."""
        out, offset = [], 0
        for phase in PHASES:
            series = self.loss.get(phase)
            if series:
                xs = [offset + s for s, _ in series]
                marks = sorted(offset + s for s in self.eval_steps.get(phase, ()))
                out.append((phase, xs, [v for _, v in series], marks))
            if phase in ("policy", "planner"):
                # the talker's sft and da share one step count, so only the first two shift it
                offset += self.totals.get(phase) or (series[-1][0] if series else 0)
        return out

    def gate_rows(self) -> list[dict]:
        """Failures first, then by name."""
        return sorted(self.gates, key=lambda g: (bool(g["passed"]), g["gate"]))
