"""How much margin the planner's bench has at a profile's step budget, over seeds and pass counts.

One policy per seed (the planner's encoder starts from it), then one planner per pass count,
each judged on the plan bench. A budget that passes on one seed and misses on the next is a
budget CI cannot rely on: CPU results move with the machine's kernels and thread count.

    python benchmarks/planner_margin.py --profile tiny --seeds 1337 1 2 --passes 6 8 10
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from navi_model.brain import build_brain_data, planned_steps, to_device
from navi_model.config import PROFILES
from navi_model.corpus.load import load_corpus
from navi_model.model import PolicyModel
from navi_model.planner import PlannerModel, plan_loss, run_plan_bench, train_planner
from navi_model.vocab import encode_encoder_batch
from navi_model.train import train_policy
from navi_model.assets import corpus_dir


@torch.no_grad()
def margins(planner, bench, vocab, device) -> list[tuple[float, str]]:
    """Per bench item, minus its CTC loss per step: near zero, the planner is sure of the plan; far
    below, the plan is a coin that a seed flips (or a miss)."""
    planner.eval()
    ids, valid = encode_encoder_batch([it["goal"] for it in bench.items], planner.cfg.encoder.seq_len)
    _, targets = vocab.encode_batch([it["plan"] for it in bench.items], planner.cfg.plan_len)
    ids, valid, targets = ids.to(device), valid.to(device), targets.to(device)
    out = planner(ids, valid)
    per_item = [-plan_loss(out.frames[i:i + 1].float(), valid[i:i + 1], targets[i:i + 1]).item()
                for i in range(len(bench.items))]  # the CTC term alone: how sure of the steps
    return sorted((round(g, 2), it["goal"]) for g, it in zip(per_item, bench.items))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="tiny", choices=sorted(PROFILES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--passes", type=float, nargs="+", default=[6.0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default); CI has 2 cores")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    corpus = load_corpus(corpus_dir())
    base = PROFILES[a.profile]
    data = build_brain_data(corpus, base)
    quiet = lambda event: None  # noqa: E731
    for seed in a.seeds:
        torch.manual_seed(seed)
        policy = PolicyModel(base.policy, len(corpus.intents))
        pcfg = replace(base.policy_train, seed=seed)
        train_policy(policy, to_device(data.policy, device), pcfg, steps=planned_steps(corpus, base)["policy"],
                     device=device, emit=quiet)
        for passes in a.passes:
            profile = replace(base, planner_train=replace(base.planner_train, passes_per_goal=passes, seed=seed))
            steps = planned_steps(corpus, profile)["planner"]
            torch.manual_seed(seed)
            planner = PlannerModel(profile.planner, data.vocab.size)
            planner.encoder.load_state_dict(policy.encoder.state_dict())
            t0 = time.perf_counter()
            r = train_planner(planner, to_device(data.plan, device), profile.planner_train, steps=steps,
                              device=device, emit=quiet, vocab=data.vocab)
            items = run_plan_bench(planner, corpus.benches["plan"], data.vocab, device)
            passed = sum(it["correct"] for it in items)
            print(json.dumps({"seed": seed, "passes": passes, "steps": steps, "final_loss": round(r.final_loss, 4),
                              "plan_bench": f"{passed}/{len(items)}", "seconds": round(time.perf_counter() - t0, 1),
                              "misses": [it["goal"] for it in items if not it["correct"]],
                              "smallest_margins": margins(planner, corpus.benches["plan"], data.vocab, device)[:4]}),
                  flush=True)


if __name__ == "__main__":
    main()
