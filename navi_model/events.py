"""Typed events the training code emits. The trainer never touches the store or a screen:
whoever runs it (headless printer, console, store writer) consumes these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class MetricsLogged:
    step: int
    phase: str
    values: dict[str, float]


@dataclass(frozen=True)
class LogLine:
    level: str  # info, warn, error
    kind: str
    message: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class CheckpointReady:
    step: int
    phase: str
    model: str
    name: str  # file stem, e.g. policy_000500
    payload: dict[str, Any]  # plain tensors and values: loads with weights_only=True


Event = MetricsLogged | LogLine | CheckpointReady
EmitFn = Callable[[Event], None]
