"""Known points where a trainer stops itself, armed only by tests and harnesses.

A harness that kills or stops a trainer "a second after a line" depends on the machine's speed:
on a fast one the run has already ended. These points make the moment part of the run instead:

    NAVI_HALT_AT=PHASE:STEP     the training thread prints `[halt] PHASE step N` and blocks for good
                                once phase PHASE has logged step STEP or later; the store writer
                                and every other thread go on, so the harness can wait until the
                                rows are committed, then SIGKILL the process at that known point.
                                PHASE `start` halts before the store is opened: nothing of the run
                                exists yet.
    NAVI_STOP_AT=run            once the run's row exists and the trainer holds its locks, it commits
                                what its writer holds, prints `[stop] run N` and stops itself
                                (SIGSTOP): a live trainer with no write open, for a harness that
                                tries a second trainer meanwhile, then sends SIGCONT.
    NAVI_PAUSE_AT=PHASE:STEP[,PHASE:STEP...]
                                the run pauses itself there, as if the operator had pressed p;
                                the console shows PAUSED and its keys act on a run that is known
                                to be still running.

Unset (every real run), both are inert: no sink is added and nothing is read per step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, TextIO

from navi_model.control import TrainingControl
from navi_model.events import EmitFn, Event, MetricsLogged

HALT_ENV = "NAVI_HALT_AT"
STOP_ENV = "NAVI_STOP_AT"
PAUSE_ENV = "NAVI_PAUSE_AT"


def _points(value: str, name: str) -> list[tuple[str, int]]:
    points = []
    for part in value.split(","):
        phase, _, step = part.strip().partition(":")
        if not phase or (step and not step.isdigit()):
            raise ValueError(f"{name}={value!r}: expected PHASE:STEP, e.g. sft:2")
        points.append((phase, int(step or 0)))
    return points


def halt_now(phase: str, step: int, out: TextIO | None = None) -> None:
    """Announce the halt on stdout, then block the calling thread until the process is killed."""
    print(f"[halt] {phase} step {step}", file=out or sys.stdout, flush=True)
    threading.Event().wait()


def halt_before_store(out: TextIO | None = None) -> None:
    """NAVI_HALT_AT=start: halt before the run's store is opened."""
    value = os.environ.get(HALT_ENV)
    if value and _points(value, HALT_ENV)[0][0] == "start":
        halt_now("start", 0, out)


def stop_after_claim(run_id: int, flush: Callable[[], None], out: TextIO | None = None) -> None:
    """NAVI_STOP_AT=run: commit the writer's rows, then stop this process until SIGCONT."""
    if os.environ.get(STOP_ENV) != "run":
        return
    flush()  # a stopped process must not hold the database's write lock
    print(f"[stop] run {run_id}", file=out or sys.stdout, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)


def armed_sink(control: TrainingControl | None, out: TextIO | None = None) -> EmitFn | None:
    """The sink that halts or pauses the run at the armed points, or None when nothing is armed.

    It goes last in the run's fanout: the recorder and the printer have had the step's event, so
    its rows are on the writer's queue and its progress line is printed before the halt."""
    halt = os.environ.get(HALT_ENV)
    pause = os.environ.get(PAUSE_ENV)
    halt_points = [p for p in _points(halt, HALT_ENV) if p[0] != "start"] if halt else []
    pause_points = _points(pause, PAUSE_ENV) if pause else []
    if not halt_points and not pause_points:
        return None

    def sink(event: Event) -> None:
        if not isinstance(event, MetricsLogged) or "loss" not in event.values:
            return
        for point in list(pause_points):
            if event.phase == point[0] and event.step >= point[1] and control is not None:
                pause_points.remove(point)
                control.pause()
        for phase, step in halt_points:
            if event.phase == phase and event.step >= step:
                halt_now(phase, event.step, out)

    return sink
