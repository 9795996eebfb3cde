"""Diagnostic: how well the policy and the planner generalise, per variant of the model and the data.

Trains the policy (and the planner, warm from it) of a profile on a corpus, as `train` does, with
overrides, and prints each bench's score: seen (trained cores under new wrappers), unseen (held-out
cores) and wild (hand-written). No store, no talker: this isolates the two models whose benches
measure understanding of a request.

    python benchmarks/generalisation.py --profile tiny --variant base --variant fold+ngram --seeds 1337
    # a variant is a '+'-joined list of overrides: fold, ngram (4093 buckets), ngramN (N buckets),
    # noiseR (noise rate R), passesP (policy passes per goal), ppassesP (planner's), dD (d_model),
    # wordN (whole words hashed into N buckets, 4093 without N),
    # lN (layers), lrX, plrX (the planner's lr alone), pwarmN (its warmup steps), wdX (weight decay),
    # composeX (X times the corpus's composites made from
    # single goals, navi_model/compose.py), pfreeze (the planner's warm encoder frozen),
    # membersN (the policy as an ensemble of N, model.PolicyModel),
    # slN (the planner's step_layers), nocount (no count head: greedy decoding), noreader (plans
    # decoded by the planner alone, without the policy re-reading each step; with the reader,
    # plan_*_alone reports the planner alone beside)

Prints one JSON line per (variant, seed) and a table at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from navi_model.assets import holdout_corpus_dir  # noqa: E402
from navi_model.brain import build_brain_data, planned_steps, to_device  # noqa: E402
from navi_model.config import Profile, get_profile  # noqa: E402
from navi_model.corpus.load import load_corpus  # noqa: E402
from navi_model.evaluate import policy_step_reader, run_intent_bench  # noqa: E402
from navi_model.events import MetricsLogged  # noqa: E402
from navi_model.model import PolicyModel  # noqa: E402
from navi_model.planner import PlannerModel, run_plan_bench, train_planner  # noqa: E402
from navi_model.train import train_policy  # noqa: E402


def apply_variant(profile: Profile, variant: str, seed: int) -> tuple[Profile, dict]:
    enc, pt, plt = {}, {"seed": seed}, {"seed": seed}
    extra = {"noreader": False, "pfreeze": False, "step_layers": profile.planner.step_layers,
             "members": profile.policy_members,
             "count_head": profile.planner.count_head}
    for part in filter(None, variant.split("+")):
        if part == "base":
            continue
        elif part.startswith("compose"):
            plt["composed_share"] = float(part[7:] or 1.0)
        elif part == "nocount":
            extra["count_head"] = False
        elif part == "noreader":
            extra["noreader"] = True
        elif part == "pfreeze":
            extra["pfreeze"] = True
        elif part.startswith("members"):
            extra["members"] = int(part[7:])
        elif part == "fold":
            enc["fold_case"] = True
        elif part.startswith("sl") and part[2:].isdigit():
            extra["step_layers"] = int(part[2:])
        elif part.startswith("word"):
            enc["word_buckets"] = int(part[4:] or 4093)
        elif part.startswith("ngram"):
            enc["ngram_buckets"] = int(part[5:] or 4093)
        elif part.startswith("noise"):
            pt["noise_rate"] = plt["noise_rate"] = float(part[5:])
        elif part.startswith("ppasses"):
            plt["passes_per_goal"] = float(part[7:])
        elif part.startswith("passes"):
            pt["passes_per_goal"] = float(part[6:])
        elif part.startswith("d"):
            enc["d_model"] = int(part[1:])
        elif part.startswith("l") and part[1:].isdigit():
            enc["n_layers"] = int(part[1:])
        elif part.startswith("ls"):
            pt["label_smoothing"] = float(part[2:])
        elif part.startswith("lr"):
            pt["lr"] = plt["lr"] = float(part[2:])
        elif part.startswith("plr"):
            plt["lr"] = float(part[3:])
        elif part.startswith("pwarm"):
            plt["warmup_steps"] = int(part[5:])
        elif part.startswith("wd"):
            pt["weight_decay"] = plt["weight_decay"] = float(part[2:])
        else:
            raise SystemExit(f"unknown variant part {part!r}")
    return replace(profile, policy=replace(profile.policy, **enc), policy_members=extra["members"],
                   planner=replace(profile.planner, encoder=replace(profile.planner.encoder, **enc),
                                   step_layers=extra["step_layers"], count_head=extra["count_head"]),
                   policy_train=replace(profile.policy_train, **pt),
                   planner_train=replace(profile.planner_train, **plt)), extra


def score(items: list[dict]) -> float:
    return sum(it["correct"] for it in items) / max(1, len(items))


def run(corpus, profile: Profile, device: torch.device, planner_too: bool, extra: dict,
        save: Path | None = None) -> dict:
    t0 = time.perf_counter()
    data = build_brain_data(corpus, profile)
    steps = planned_steps(corpus, profile)
    quiet = lambda event: None  # noqa: E731
    torch.manual_seed(profile.policy_train.seed)
    policy = PolicyModel(profile.policy, len(corpus.intents), profile.policy_members)
    train_policy(policy, to_device(data.policy, device), profile.policy_train, steps=steps["policy"],
                 device=device, emit=quiet)
    out = {"policy_steps": steps["policy"], "policy_s": round(time.perf_counter() - t0, 1)}
    misses = {}
    for name in ("policy", "paraphrase", "policy_unseen", "policy_wild"):
        items = run_intent_bench(policy, corpus.benches[name], corpus.intent_names, device)
        out[name] = round(score(items), 3)
        misses[name] = [(it["goal"], it["predicted"], it["expected"]) for it in items if not it["correct"]][:12]
    if planner_too:
        torch.manual_seed(profile.planner_train.seed)
        planner = PlannerModel(profile.planner, data.vocab.size)
        planner.encoder.load_state_dict(policy.encoder.state_dict())
        if extra["pfreeze"]:
            planner.encoder.requires_grad_(False)
        accs: list[tuple[int, float]] = []  # (step, training plans right): when the planner leaves the blank plateau

        def track(event) -> None:
            if isinstance(event, MetricsLogged) and "plan_acc" in event.values:
                accs.append((event.step, event.values["plan_acc"]))
        train_planner(planner, to_device(data.plan, device), profile.planner_train, steps=steps["planner"],
                      device=device, emit=track, vocab=data.vocab)
        out["planner_takeoff"] = next((step for step, acc in accs if acc >= 0.5), None)
        out["planner_final_acc"] = round(accs[-1][1], 3) if accs else None
        reader = None if extra["noreader"] else policy_step_reader(policy, corpus.intent_names, data.vocab.actions,
                                                                     device)
        for name in ("plan_seen", "plan", "plan_wild"):
            items = run_plan_bench(planner, corpus.benches[name], data.vocab, device, reader=reader)
            if reader is not None:  # the planner read alone: what the policy's re-reading adds
                alone = run_plan_bench(planner, corpus.benches[name], data.vocab, device)
                out[f"{name}_alone"] = round(score(alone), 3)
            out[name] = round(score(items), 3)
            # where a plan goes wrong: its length (a step dropped or added), or a step's intent
            right_len = [it for it in items if len(it["predicted"]) == len(it["expected"])]
            out[f"{name}_len"] = round(len(right_len) / max(1, len(items)), 3)
            hits = [(a == b) for it in right_len for a, b in zip(it["predicted"], it["expected"]) if b not in ("STEP", "EOS")]
            out[f"{name}_step"] = round(sum(hits) / max(1, len(hits)), 3)
            misses[name] = [(it["goal"], it["predicted"]) for it in items if not it["correct"]][:8]
            if planner.count_head is not None:  # the same model read greedily, alone: what the count adds
                head, planner.count_head = planner.count_head, None  # no counts out: decode_plans reads greedily
                out[f"{name}_greedy"] = round(score(run_plan_bench(planner, corpus.benches[name], data.vocab, device)), 3)
                planner.count_head = head
        out["planner_steps"] = steps["planner"]
        if save is not None:  # the two models as checkpoints hold them (policy_from_payload, planner_from_payload)
            torch.save({"policy": {"model": policy.state_dict(), "model_args": asdict(profile.policy),
                                   "n_intents": len(corpus.intents), "members": policy.members},
                        "planner": {"model": planner.state_dict(), "model_args": asdict(planner.cfg),
                                    "vocab_size": data.vocab.size, "actions": list(data.vocab.actions)}}, save)
    out["total_s"] = round(time.perf_counter() - t0, 1)
    out["misses"] = misses
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--data", type=Path, default=holdout_corpus_dir())
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--seeds", default="1337")
    ap.add_argument("--no-planner", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--save", type=Path, help="folder: each (variant, seed)'s policy and planner go in a .pt there")
    args = ap.parse_args()
    corpus = load_corpus(args.data)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    rows = []
    for variant in args.variant or ["base"]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            profile, extra = apply_variant(get_profile(args.profile), variant, seed)
            r = {"profile": args.profile, "variant": variant, "seed": seed,
                 **run(corpus, profile, device, not args.no_planner, extra,
                       args.save / f"{variant}_{seed}.pt" if args.save else None)}
            rows.append(r)
            print(json.dumps(r), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
    cols = ["policy", "paraphrase", "policy_unseen", "policy_wild", "plan_seen", "plan", "plan_len", "plan_step",
            "plan_wild", "plan_wild_len", "plan_wild_step", "total_s"]
    print(f"{'variant':34} {'seed':>5} " + " ".join(f"{c[:13]:>13}" for c in cols))
    for r in rows:
        print(f"{r['variant']:34} {r['seed']:>5} " + " ".join(f"{r.get(c, float('nan')):>13}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
