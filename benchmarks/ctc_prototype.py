"""The experiment that chose the CTC planner (2026-12-03): a standalone CTC head on the policy's
encoder (encoder -> per-byte logits over the plan vocabulary, blank = PAD), trained on the same data
with the same warm start as the decoder planner navi had then, judged on the held-out plan benches.

It trains navi's PlannerModel with navi's plan_loss in a plain loop (no compile, no graph, no
statistics), as it ran then, and stays as the record behind docs/benchmarks.md ("Generalisation").
When it ran it held its own copy of the model, the loss and the greedy decoding, later replaced by
navi's; they match but for xl0, where the copy skipped the final norm that PlannerModel applies.

    python benchmarks/ctc_prototype.py --profile tiny --seeds 1,2,3 --variant word+xl1+cpasses6
    # on top of benchmarks/generalisation.py's variant parts: xlN (N blocks over the encoder's
    # states, the profile's step_layers), cpassesP (passes per goal), clrX, cfreeze (encoder frozen)

Results: benchmarks/results/2026-12-03-h200-ctc-prototype-{tiny,base}.jsonl.
"""
import argparse, json, sys, time
from dataclasses import replace
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from generalisation import apply_variant, score
from navi_model.assets import holdout_corpus_dir
from navi_model.brain import build_brain_data, planned_steps, to_device
from navi_model.config import get_profile
from navi_model.corpus.load import load_corpus
from navi_model.evaluate import run_intent_bench
from navi_model.model import PolicyModel
from navi_model.planner import BOS, EOS, STEP, PlannerModel, decode_plans, plan_loss
from navi_model.train import train_policy, get_lr, make_optimizer, EpochSampler

def decode(model, goals, vocab, device):
    """Greedy plans as action-id lists (decode_plans without its BOS, STEP and EOS)."""
    plans = decode_plans(model, goals, vocab, device)
    model.train()
    return [[t for t in p if t not in (BOS, STEP, EOS)] for p in plans]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="tiny"); ap.add_argument("--seeds", default="1")
    ap.add_argument("--variant", action="append", default=[]); ap.add_argument("--out")
    args = ap.parse_args()
    corpus = load_corpus(holdout_corpus_dir()); dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for variant in args.variant:
        for seed in map(int, args.seeds.split(",")):
            parts = variant.split("+"); extra_layers = 0; ppasses = None; lr = None; freeze = False
            keep = []
            for p in parts:
                if p == "cfreeze": freeze = True
                elif p.startswith("xl"): extra_layers = int(p[2:])
                elif p.startswith("cpasses"): ppasses = float(p[7:])
                elif p.startswith("clr"): lr = float(p[3:])
                else: keep.append(p)
            profile, _ = apply_variant(get_profile(args.profile), "+".join(keep) or "base", seed)
            if ppasses: profile = replace(profile, planner_train=replace(profile.planner_train, passes_per_goal=ppasses))
            if lr: profile = replace(profile, planner_train=replace(profile.planner_train, lr=lr))
            t0 = time.perf_counter()
            data = build_brain_data(corpus, profile); steps = planned_steps(corpus, profile)
            torch.manual_seed(seed)
            policy = PolicyModel(profile.policy, len(corpus.intents))
            train_policy(policy, to_device(data.policy, dev), profile.policy_train, steps=steps["policy"], device=dev, emit=lambda e: None)
            out = {"variant": variant, "seed": seed}
            for name in ("policy_unseen", "policy_wild"):
                out[name] = round(score(run_intent_bench(policy, corpus.benches[name], corpus.intent_names, dev)), 3)
            t1 = time.perf_counter()
            torch.manual_seed(seed)
            m = PlannerModel(replace(profile.planner, step_layers=extra_layers), data.vocab.size).to(dev)
            m.encoder.load_state_dict(policy.encoder.state_dict())
            if freeze: m.encoder.requires_grad_(False)
            cfg = profile.planner_train
            targets = data.plan.plan_targets.to(dev)
            ids_all, valid_all = data.plan.goal_ids.to(dev), data.plan.goal_valid.to(dev)
            opt = make_optimizer(m, cfg, dev) if dev.type == "cpu" else torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9,0.95), weight_decay=cfg.weight_decay)
            sampler = EpochSampler(data.plan.n, cfg.batch_size, dev, seed)
            n = steps["planner"]
            for step in range(n):
                for g in opt.param_groups: g["lr"] = get_lr(step, n, cfg)
                idx = sampler.next()
                ids, valid = ids_all[idx], valid_all[idx]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    lg = m(ids, valid)
                loss = plan_loss(lg, valid, targets[idx])
                opt.zero_grad(set_to_none=True); loss.backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip); opt.step()
            out["planner_steps"] = n; out["planner_s"] = round(time.perf_counter() - t1, 1); out["final_loss"] = round(loss.item(), 4)
            for name in ("plan_seen", "plan", "plan_wild"):
                items = corpus.benches[name].items
                pred = decode(m, [it["goal"] for it in items], data.vocab, dev)
                exp = [[data.vocab.id(a) for a in it["plan"]] for it in items]
                out[name] = round(sum(p == e for p, e in zip(pred, exp)) / len(items), 3)
                out[name + "_len"] = round(sum(len(p) == len(e) for p, e in zip(pred, exp)) / len(items), 3)
                out[name + "_miss"] = [(it["goal"], [data.vocab.names[t] for t in p]) for it, p, e in zip(items, pred, exp) if p != e][:6]
            print(json.dumps({k: v for k, v in out.items() if not k.endswith("_miss")}), flush=True)
            if args.out:
                with open(args.out, "a") as f: f.write(json.dumps(out) + "\n")

main()
