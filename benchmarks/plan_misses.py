"""Diagnostic: every plan a run's brain gets wrong on a bench, as decoded for the verdict
(decode_plans with the run's policy as reader), and whether its length or a step is what is wrong.

    python benchmarks/plan_misses.py CORPUS HOME [BENCH ...]   # BENCH: plan, plan_seen, plan_wild

HOME is a run's home (`--home`); its newest policy and planner checkpoints are read.
2026-12-03: of tiny seed 1's 11 held-out-core misses (80-plan bench, segment_steps), 9 were a step
whose core the policy misreads on its own too ("clang-tidy" -> format); docs/benchmarks.md.
"""
import glob
import sys

import torch
from navi_model.corpus.load import load_corpus
from navi_model.evaluate import policy_from_payload, policy_step_reader
from navi_model.planner import planner_from_payload, run_plan_bench

cpu = torch.device("cpu")
corpus = load_corpus(sys.argv[1])


def newest(kind: str) -> dict:
    return torch.load(sorted(glob.glob(f"{sys.argv[2]}/checkpoints/*/{kind}_*.pt"))[-1], weights_only=True)


policy = policy_from_payload(newest("policy"), cpu)
planner, vocab = planner_from_payload(newest("planner"), cpu)
reader = policy_step_reader(policy, corpus.intent_names, vocab.actions, cpu)
for name in sys.argv[3:] or ["plan", "plan_seen", "plan_wild"]:
    rows = run_plan_bench(planner, corpus.benches[name], vocab, cpu, reader=reader)
    kinds = {"LEN": 0, "STEP": 0}
    print(f"== {name}: {sum(r['correct'] for r in rows)}/{len(rows)} right")
    for r in rows:
        if r["correct"]:
            continue
        want = [t for t in r["expected"] if t not in ("STEP", "EOS")]
        got = [t for t in r["predicted"] if t not in ("STEP", "EOS")]
        kind = "LEN" if len(want) != len(got) else "STEP"
        kinds[kind] += 1
        print(f"{kind:4} {r['goal']!r}\n     want {want} got {got}")
    print(f"   wrong length {kinds['LEN']}, wrong step {kinds['STEP']}")
