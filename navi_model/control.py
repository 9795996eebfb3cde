"""A thread-safe control object the training loop checks between steps (pause, resume, stop).

Cancellation is cooperative: the caller sets a flag, the loop notices it at the next step
boundary, so a stop always leaves a consistent model to checkpoint.
"""

from __future__ import annotations

import threading


class TrainingControl:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # a paused loop must wake up to see the stop

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def checkpoint_between_steps(self) -> bool:
        """Block while paused; return True if the loop should stop."""
        self._running.wait()
        return self._stop.is_set()
