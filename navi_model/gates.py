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


def truncation_gate(name: str, samples: list[tuple[str, int, int]], max_truncated: int) -> GateVerdict:
    """samples: (text, positions it needs, positions its model has), over everything a model reads (M-008)."""
    over = sorted((s for s in samples if s[1] > s[2]), key=lambda s: s[2] - s[1])
    worst = max(samples, key=lambda s: s[1] - s[2]) if samples else ("", 0, 0)
    summary = f"{len(samples)} samples, tightest {worst[1]} of {worst[2]} positions"
    if over:
        summary += f"; {len(over)} too long, e.g. {over[0][0][:40]!r} ({over[0][1]} > {over[0][2]})"
    return gate(name, float(len(over)), float(max_truncated), "<=", summary, {"too_long": [s[0] for s in over[:20]]})


def coverage_gate(name: str, coverage_min: float, coverage_mean: float, min_coverage: float) -> GateVerdict:
    summary = f"least-seen sample {coverage_min:g} times, mean {coverage_mean:.1f}"
    return gate(name, coverage_min, min_coverage, ">=", summary)


def class_share_gate(stats: dict[str, float], max_share: float) -> GateVerdict:
    """The largest share of one class among the planner's targets (M-002: a dominant class drowns
    the others' gradient). stats: planner.action_shares."""
    value = stats.get("share_max")
    raw = {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("share/")}
    top = max(raw, key=raw.get) if raw else "-"
    summary = f"largest share {top} {raw.get(top, 0):.1%} of {len(raw)} actions"
    return gate("class_share", value, max_share, "<=", summary, stats)


def memory_prefix_gate(share: float, min_share: float) -> GateVerdict:
    return gate("memory_prefix", share, min_share, ">=", f"{share:.1%} of SFT samples carried memory from step 0")


def gallery_gates(summary: dict[str, float], rows: list[dict], thresholds) -> list[GateVerdict]:
    n = len(rows)
    exact = sum(r["exact"] for r in rows)
    misses = [r for r in rows if not r["exact"]]
    miss = f"; e.g. {misses[0]['prompt']!r} -> {misses[0]['output']!r}" if misses else ""
    distinct = len({r["output"] for r in rows})
    refs = len({r["reference"] for r in rows})
    return [
        gate("gallery_quality", summary.get("gallery_similarity"), thresholds.min_gallery_similarity, ">=",
             f"mean similarity over {n} prompts{miss}", rows),
        gate("gallery_exact", summary.get("gallery_exact"), thresholds.min_gallery_exact, ">=", f"{exact}/{n} exact"),
        gate("gallery_diversity", summary.get("gallery_diversity"), thresholds.min_gallery_diversity, ">=",
             f"{distinct} distinct answers for {refs} distinct references"),
    ]


def concept_sim_gate(value: float, max_sim: float) -> GateVerdict:
    return gate("concept_sim", value, max_sim, "<=", "mean pairwise cosine of concept vectors, distinct gallery prompts")


def prefix_use_gate(true_loss: float, shuffled_loss: float, min_ratio: float) -> GateVerdict:
    ratio = shuffled_loss / true_loss if true_loss > 0 else math.inf
    return gate("prefix_use", ratio, min_ratio, ">=",
                f"decoder loss {true_loss:.4f} with the true prefixes, {shuffled_loss:.4f} shuffled",
                {"true_loss": true_loss, "shuffled_loss": shuffled_loss})


def da_regression_gate(pre: dict | None, final: dict | None, rolled_back: bool, max_drop: float) -> GateVerdict:
    """Gallery similarity of the final talker against its pre-DA checkpoint (M-039)."""
    if pre is None or final is None:
        return gate("da_regression", None, max_drop, "<=", "no gallery before and after DA")
    drop = pre["gallery_similarity"] - final["gallery_similarity"]
    if rolled_back:
        how = "DA regressed the gallery; rolled back to the pre-DA checkpoint"
    elif final is pre:
        how = "no DA phase"
    else:
        how = "DA kept"
    return gate("da_regression", drop, max_drop, "<=", f"{how}; similarity {pre['gallery_similarity']:.3f} -> "
                f"{final['gallery_similarity']:.3f}")


def gpu_util_gate(samples: list[float] | None, min_mean: float, warmup: int,
                  where: str = "after warm-up") -> GateVerdict:
    """Mean GPU utilisation (NVML, % of the whole GPU) after the warm-up samples (M-015, M-035).
    where: which samples these are, for the summary.

    samples is None when the run did not train on a GPU: then there is nothing to hold to the
    80% rule, and the row says so instead of failing a CPU run.
    """
    if samples is None:
        return GateVerdict("gpu_util", None, min_mean, ">=", True, "n/a: not training on a GPU")
    after = samples[warmup:]
    if not after:
        return gate("gpu_util", None, min_mean, ">=", f"no samples {where}")
    value = sum(after) / len(after)
    return gate("gpu_util", value, min_mean, ">=",
                f"mean {value:.1f}% over {len(after)} samples {where}, lowest {min(after):.0f}%")


# continuous metrics whose exact repetition across different configs means the data never
# reached them (M-031: concept_sim 0.9591 in 12 runs); bench shares of 1.0 repeat legitimately
CONSTANT_WATCH = ("concept_sim", "prefix_use", "gallery_quality", "final_loss_policy", "final_loss_planner",
                  "final_loss_talker")


def constant_metric_gate(values: dict[str, float], config: str, earlier: list[tuple[int, str, dict[str, float]]],
                         diagnose_hint: str) -> GateVerdict:
    """values: this run's watched metrics; earlier: (run id, config, metrics) of earlier runs.

    Fails when a watched metric equals, to 4 decimals, its value in an earlier run whose config
    differs: the number is set upstream of training (M-010, M-031).
    """
    repeats = []
    for name in CONSTANT_WATCH:
        v = values.get(name)
        if v is None or not math.isfinite(v) or v in (0.0, 1.0):
            continue
        for run_id, other_config, other in earlier:
            w = other.get(name)
            if other_config != config and w is not None and round(w, 4) == round(v, 4):
                repeats.append((name, round(v, 4), run_id))
    if repeats:
        name, v, run_id = repeats[0]
        summary = (f"{name} = {v} here and in run {run_id}, whose config differs: the number is set upstream "
                   f"of training; trace the data flow before another run: {diagnose_hint}")
    else:
        summary = f"no watched metric repeats across {len(earlier)} earlier runs"
    return gate("constant_metric", float(len(repeats)), 0.0, "<=", summary, repeats)


def noise_share_gate(shares: dict[str, float], rates: dict[str, float], min_ratio: float) -> GateVerdict:
    """Per model, the share of training rows that are noisy copies against the share its noise_rate
    asks for (rate / (1 + rate): copies sit beside the clean rows). The value is the lowest ratio over
    the models that ask for noise: noise the profile asks for and the data does not have fails."""
    ratios = {m: shares.get(m, 0.0) / (r / (1.0 + r)) for m, r in rates.items() if r > 0}
    if not ratios:
        return gate("noise_share", None, min_ratio, ">=", "no model asks for noise (noise_rate 0): n/a")
    worst = min(ratios, key=ratios.get)
    summary = ", ".join(f"{m} {shares.get(m, 0.0):.1%} of rows at rate {rates[m]:g}" for m in ratios)
    return gate("noise_share", ratios[worst], min_ratio, ">=", f"lowest {worst}; {summary}", ratios)


def not_run(name: str, threshold: float, op: str, why: str) -> GateVerdict:
    """A gate whose measurement never happened (the run stopped first): it fails."""
    return gate(name, None, threshold, op, f"not measured: {why}")


def renamed(g: GateVerdict, name: str) -> GateVerdict:
    """The same verdict under another name (a gate measured on a second bench of its kind)."""
    return GateVerdict(name, g.value, g.threshold, g.op, g.passed, g.summary, g.detail)


def wild_gallery_gates(summary: dict[str, float], rows: list[dict], thresholds) -> list[GateVerdict]:
    """The gallery's three gates on the hand-written prompts (gallery_wild.jsonl), named *_wild."""
    return [renamed(g, g.name + "_wild") for g in gallery_gates(summary, rows, thresholds)]


def all_passed(gates: list[GateVerdict]) -> bool:
    return bool(gates) and all(g.passed for g in gates)
