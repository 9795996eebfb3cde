"""Which gate judges each intent and plan bench of a corpus, at which threshold: one table that
`train` and `eval` both read, so a run and its later evaluation are judged alike.

A corpus held out by core (it has a plan_seen bench, as assets/holdout_corpus does) keeps its
unseen composites in bench_plan.jsonl, so there the plan bench is judged as unseen; in a corpus
without that split (assets/corpus, most --data folders) the plan bench is the only one and keeps
its own threshold. The generalisation gaps (seen minus unseen, M-007) gate wherever both sides exist.
"""

from __future__ import annotations

from navi_model.config import GateThresholds
from navi_model.gates import GateVerdict, bench_gate, gate

# bench (corpus/load.py BUNDLED_BENCHES) -> (gate name, GateThresholds field), in the order gates are shown
BENCH_GATES: dict[str, tuple[str, str]] = {
    "policy": ("policy_bench", "policy_bench"),  # seen: trained cores under wrappers never trained
    "paraphrase": ("paraphrase_bench", "paraphrase_bench"),
    "policy_unseen": ("policy_unseen_bench", "unseen_intents"),
    "policy_wild": ("policy_wild_bench", "wild_intents"),
    "plan_seen": ("plan_seen_bench", "plan_bench"),
    "plan": ("plan_bench", "plan_bench"),
    "plan_wild": ("plan_wild_bench", "wild_plans"),
}
# gap gate -> (seen bench, unseen bench)
GAPS: dict[str, tuple[str, str]] = {"policy_gap": ("policy", "policy_unseen"), "plan_gap": ("plan_seen", "plan")}
POLICY_BENCHES = ("policy", "paraphrase", "policy_unseen", "policy_wild")
PLAN_BENCHES = ("plan_seen", "plan", "plan_wild")


def threshold(bench: str, present: set[str] | frozenset[str], th: GateThresholds) -> float:
    """The share of `bench` that must be right, given the names of the corpus's benches."""
    if bench == "plan" and "plan_seen" in present:
        return th.unseen_plans
    return getattr(th, BENCH_GATES[bench][1])


def gap_gate(name: str, seen: float | None, unseen: float | None, max_gap: float, seen_bench: str,
             unseen_bench: str) -> GateVerdict:
    """Seen minus unseen share: a model that scores far better on what it trained on memorised (M-007)."""
    value = None if seen is None or unseen is None else seen - unseen
    shown = "n/a" if value is None else f"{seen:.3f} - {unseen:.3f}"
    return gate(name, value, max_gap, "<=", f"{seen_bench} minus {unseen_bench}: {shown}")


def judge(results: dict[str, list[dict]], present: set[str] | frozenset[str], th: GateThresholds) -> list[GateVerdict]:
    """results: bench name -> per-item results of one model; present: every bench the corpus has.
    Returns each bench's gate, then each gap whose two benches are both in results."""
    gates = [bench_gate(BENCH_GATES[b][0], results[b], threshold(b, present, th)) for b in BENCH_GATES if b in results]
    shares = {g.name: g.value for g in gates}
    for name, (seen, unseen) in GAPS.items():
        if seen in results and unseen in results:
            gates.append(gap_gate(name, shares[BENCH_GATES[seen][0]], shares[BENCH_GATES[unseen][0]],
                                  th.max_generalisation_gap, seen, unseen))
    return gates
