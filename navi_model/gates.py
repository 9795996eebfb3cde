"""Gates: each one measures, compares against a threshold from the profile, and can fail.

A run is green only when every gate passes (M-014: if a metric exists, it gates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GateVerdict:
    name: str
    value: float | None
    threshold: float
    op: str  # ">=" or "<="
    passed: bool
    summary: str  # what a person reads first, e.g. "64/64"
    detail: Any = None  # per-item results, stored as JSON

    @property
    def threshold_text(self) -> str:
        return f"{self.op} {self.threshold:g}"

    def to_row(self) -> dict:
        return {"name": self.name, "value": self.value, "threshold": self.threshold_text,
                "passed": self.passed, "summary": self.summary}


def gate(name: str, value: float | None, threshold: float, op: str, summary: str, detail: Any = None) -> GateVerdict:
    """Compare value against threshold; a missing or NaN value never passes."""
    if op not in (">=", "<="):
        raise ValueError(f"gate {name}: unknown comparison {op!r}")
    if value is None or math.isnan(value):
        passed = False
    else:
        passed = value >= threshold if op == ">=" else value <= threshold
    return GateVerdict(name, value, threshold, op, passed, summary, detail)


def bench_gate(name: str, items: list[dict], min_share: float) -> GateVerdict:
    """items: per-item results with a boolean "correct". Value is the share correct."""
    n = len(items)
    correct = sum(1 for it in items if it["correct"])
    value = correct / n if n else None  # an empty bench proves nothing: it fails
    failures = [it for it in items if not it["correct"]]
    summary = f"{correct}/{n}"
    if failures:
        f = failures[0]
        summary += f"; first miss: {f['goal']!r} -> {f['predicted']} (want {f['expected']})"
    return gate(name, value, min_share, ">=", summary, items)


def truncation_gate(lengths: dict[str, int], seq_len: int, max_truncated: int) -> GateVerdict:
    """lengths: text -> byte length, over every sample the model will read (M-008)."""
    over = sorted((t for t, n in lengths.items() if n > seq_len), key=lambda t: -lengths[t])
    longest = max(lengths.values(), default=0)
    summary = f"longest {longest} bytes, seq_len {seq_len}"
    if over:
        summary += f"; {len(over)} too long, e.g. {over[0][:40]!r}"
    return gate("truncation", float(len(over)), float(max_truncated), "<=", summary, {"too_long": over[:20]})


def coverage_gate(coverage_min: float, coverage_mean: float, min_coverage: float) -> GateVerdict:
    summary = f"least-seen goal {coverage_min:g} samples, mean {coverage_mean:.1f}"
    return gate("coverage", coverage_min, min_coverage, ">=", summary)


def all_passed(gates: list[GateVerdict]) -> bool:
    return bool(gates) and all(g.passed for g in gates)
