"""Diagnostic: if a planner split each goal into its steps well (told the step count), and the policy
read each step, how many plans would be right? Separates finding the steps from reading them.

Each multi-step bench goal is matched against the catalog's join templates with its step count; of
the splits that match, the first that splits off no filler ("navi", "hey navi", ...) is taken, and
the trained policy of a run reads each piece.

    python benchmarks/plan_split_ceiling.py HOME   # HOME: a run's home trained on assets/holdout_corpus

2026-12-03 (tiny, the run of /tmp/h1 at 5042a27): plans right 0.967 seen, 0.700 held-out cores,
0.759 wild; the policy right on 0.986, 0.851 and 0.894 of the pieces (docs/benchmarks.md).
"""
import glob
import re
import sys

import torch
from navi_model.corpus.catalog import PAIR_JOINS, TRIPLE_JOINS
from navi_model.corpus.load import load_corpus
from navi_model.evaluate import policy_from_payload, predict_intents

ck = sorted(glob.glob(sys.argv[1] + "/checkpoints/*/policy*"))[-1]
payload = torch.load(ck, weights_only=True)
model = policy_from_payload(payload, torch.device("cpu"))
corpus = load_corpus("assets/holdout_corpus")
intents = corpus.intent_names

FILL = {"navi", "hey navi", "ok", "yo", "hmm", "um", "so", "pls", "please"}


def splits(goal, n):
    temps = PAIR_JOINS if n == 2 else TRIPLE_JOINS
    out = []
    for t in temps:
        pat = "^" + re.escape(t).replace(r"\{a\}", "(.+?)").replace(r"\{b\}", "(.+?)").replace(r"\{c\}", "(.+?)") + "$"
        pat = pat.replace("(.+?)$", "(.+)$")
        m = re.match(pat, goal.strip(), flags=re.I)
        if m:
            out.append(list(m.groups()))
    return out

for name in ("plan_seen", "plan", "plan_wild"):
    items = corpus.benches[name].items
    ok = nsplit = steps_ok = steps_n = 0
    misses = []
    for it in items:
        plan = it["plan"]
        if len(plan) == 1:
            pieces = [it["goal"]]
        else:
            c = splits(it["goal"], len(plan))
            if not c:
                misses.append(("NOSPLIT", it["goal"], plan)); continue
            good = [p for p in c if not any(x.strip(" ,.!?").lower() in FILL for x in p)]
            pieces = (good or c)[0]
        nsplit += 1
        pred = predict_intents(model, pieces, intents, torch.device("cpu"))
        steps_ok += sum(p == e for p, e in zip(pred, plan)); steps_n += len(plan)
        if pred == plan: ok += 1
        else: misses.append((pieces, pred, plan))
    print(f"{name}: {ok}/{len(items)} = {ok/len(items):.3f}; split {nsplit}; step acc {steps_ok/steps_n:.3f}")
    for m in misses[:40]: print("   ", m)
