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
        self._parked = threading.Event()  # set while the loop waits in a pause
        self._lock = threading.Lock()
        self._requests: set[str] = set()

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

    @property
    def parked(self) -> bool:
        """The loop is waiting at a step boundary: paused, and no step can run until resume()."""
        return self._parked.is_set()

    def checkpoint_between_steps(self) -> bool:
        """Block while paused; return True if the loop should stop."""
        if not self._running.is_set():
            self._parked.set()
            self._running.wait()
            self._parked.clear()
        return self._stop.is_set()

    def request(self, what: str) -> None:
        """Ask the loop for a one-off action at its next step boundary (e.g. "gallery")."""
        with self._lock:
            self._requests.add(what)

    def take(self, what: str) -> bool:
        """True once per request: the loop that serves it takes it."""
        with self._lock:
            if what in self._requests:
                self._requests.discard(what)
                return True
            return False
