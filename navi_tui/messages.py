"""Messages the console's threads send to the UI thread (post_message is thread-safe and never blocks)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class EventsReady(Message):
    """The trainer's bridge holds events to drain. At most one is pending at a time, and a newer
    one replaces an older still in the queue, so a fast trainer never floods the UI."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventsReady)


@dataclass
class RunStarted(Message):
    run_id: int
    session: object  # the TrainingSession that posted it: a rollback may already have started the next


@dataclass
class SessionEnded(Message):
    """The training thread is done: finished, stopped or failed (error holds why)."""
    run_id: int | None
    status: str
    summary: str
    session: object
    error: str | None = None


@dataclass
class TaskDone(Message):
    """A side task (eval, gallery, diagnose) finished in its worker thread."""
    title: str
    text: str
    ok: bool
    run_id: int | None = None
