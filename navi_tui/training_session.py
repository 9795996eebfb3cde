"""The console's training thread and the bridge that carries its events to the UI.

The thread never touches a widget. Its events go to the store writer (through the run
recorder, as headless) and to an EventBridge, which buffers them and wakes the UI with at most
one pending EventsReady message; the UI drains the whole buffer when it gets to it. Keys reach
the trainer through the session's TrainingControl, which the loops check between steps.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from navi_model.config import Profile
from navi_model.control import TrainingControl
from navi_model.corpus.load import Corpus
from navi_model.events import CheckpointReady, Event, LogLine

from navi_tui.continuation import ResumePoint
from navi_tui.messages import EventsReady, RunStarted, SessionEnded


@dataclass(frozen=True)
class CheckpointSaved:
    """What the UI needs of a CheckpointReady: never the payload's tensors."""
    step: int
    phase: str
    model: str
    name: str


class EventBridge:
    """The trainer's emit function on the UI side: buffer, and wake the UI once."""

    def __init__(self, post: Callable[[object], object]):
        self._post = post
        self._lock = threading.Lock()
        self._buffer: list = []
        self._pending = False
        self.posted = 0  # how many wake-ups were sent: the coalescing test reads it

    def __call__(self, event: Event) -> None:
        if isinstance(event, CheckpointReady):
            event = CheckpointSaved(event.step, event.phase, event.model, event.name)
        with self._lock:
            self._buffer.append(event)
            if self._pending:
                return
            self._pending = True
            self.posted += 1
        self._post(EventsReady())

    def drain(self) -> list:
        with self._lock:
            events, self._buffer, self._pending = self._buffer, [], False
        return events


class LineSink(io.TextIOBase):
    """train_run's printed lines (run header, crash marks) become log lines: the screen is the UI's."""

    def __init__(self, emit: Callable[[Event], None]):
        self._emit, self._partial = emit, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                level = "error" if line.startswith("[error]") else "info"
                self._emit(LogLine(level, "run", line))
        return len(text)


class TrainingSession:
    """One training run in a background thread, driven by its control object."""

    def __init__(self, corpus: Corpus, profile: Profile, *, home: Path, device: torch.device,
                 post: Callable[[object], object], steps: int | None = None, resume: ResumePoint | None = None):
        self.corpus, self.profile, self.home, self.device = corpus, profile, home, device
        self.steps, self.resume, self._post = steps, resume, post
        self.control = TrainingControl()
        self.bridge = EventBridge(post)
        self.run_id: int | None = None
        self.outcome = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="navi-train", daemon=True)

    def start(self) -> "TrainingSession":
        self.thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def _started(self, run_id: int) -> None:
        self.run_id = run_id
        self._post(RunStarted(run_id, self))

    def _run(self) -> None:
        from navi_tui.training_run import train_run

        status, summary, error = "failed", "", None
        try:
            self.outcome = train_run(self.corpus, self.profile, home=self.home, device=self.device, steps=self.steps,
                                     control=self.control, progress=self.bridge, out=LineSink(self.bridge),
                                     resume=self.resume, on_start=self._started)
            o = self.outcome
            status = o.status
            summary = (f"run {o.run_id} {o.status}: {'PASS' if o.ok else 'FAIL'} "
                       f"({sum(g.passed for g in o.gates)}/{len(o.gates)} gates) in {o.seconds:.0f}s")
        except BaseException as e:  # the app stays up; the run is marked failed by train_run
            self.error = e
            error = f"{type(e).__name__}: {e}"
            summary = f"training failed: {error}"
            self.bridge(LogLine("error", "crash", summary))
        finally:
            self._post(SessionEnded(self.run_id, status, summary, self, error))

    def stop(self, timeout: float | None = None) -> bool:
        """Stop at the next step boundary (the trainer saves a checkpoint); True once the thread ended."""
        self.control.stop()
        self.thread.join(timeout)
        return not self.thread.is_alive()
