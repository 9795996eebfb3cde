"""Data-parallel scaling: tokens/s of the brain's trainers in 1 and in N processes (torchrun, DDP).

    python benchmarks/ddp_scaling.py --profile base --device cuda --steps 300          # 1 and 2 GPUs
    python benchmarks/ddp_scaling.py --profile tiny --device cpu --steps 6 --batch 16 --nprocs 1,2   # its logic, gloo

Weak scaling: every process keeps the same per-process batch (the profile's batch sizes, or
--batch), so N processes step a global batch N times larger. That is the fair comparison for
data parallelism: each GPU does the work one GPU did, and what is left to measure is what the
gradient all-reduce and the lost CUDA graph cost. (Strong scaling, one global batch split N ways,
would halve each GPU's work and mostly measure the small models' launch overhead.)

Each count of processes is one torchrun job of this same script (--worker): it trains the
policy, the planner and the talker (SFT, then DA) of the profile for --steps steps each, with
navi's own trainers and no store, and rank 0 writes each phase's tokens/s: the median of its log
windows after the first (which holds the compile and the graph capture). Printed as one JSON
document: tokens/s per phase and in all, and efficiency = tok/s(N) / (N x tok/s(1)).
One process runs exactly the single-process trainers (CUDA graph on a GPU); N > 1 runs them
under DDP, eagerly (navi_model/distributed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("policy", "planner", "sft", "da")


def per_rank_profile(profile, world: int, batch: int | None):
    """The profile with every phase's GLOBAL batch = world x the per-process batch."""
    def scaled(cfg):
        b = batch if batch is not None else cfg.batch_size
        return replace(cfg, batch_size=b * world, checkpoint_every_s=0.0)

    t = scaled(profile.talker_train)
    return replace(profile, policy_train=scaled(profile.policy_train), planner_train=scaled(profile.planner_train),
                   talker_train=t)


def worker(args) -> None:
    import torch

    from navi_model.assets import corpus_dir
    from navi_model.brain import build_brain_data, to_device
    from navi_model.config import get_profile
    from navi_model.corpus.load import load_corpus
    from navi_model.distributed import Ranks
    from navi_model.events import MetricsLogged
    from navi_model.model import PolicyModel
    from navi_model.planner import PlannerModel, train_planner
    from navi_model.talker import TalkerModel, train_talker
    from navi_model.train import train_policy

    ranks = Ranks.from_env(torch.device(args.device))
    device = ranks.device if ranks.distributed else torch.device(args.device)
    profile = per_rank_profile(get_profile(args.profile), ranks.world_size, args.batch)
    profile = replace(profile, talker_train=replace(profile.talker_train, da_steps=args.steps, sample_every=0))
    corpus = load_corpus(corpus_dir())
    data = build_brain_data(corpus, profile)
    windows: dict[str, list[float]] = {p: [] for p in PHASES}
    step_ms: dict[str, list[float]] = {p: [] for p in PHASES}

    def emit(event):
        if isinstance(event, MetricsLogged) and "tokens_per_s" in event.values:
            windows[event.phase].append(event.values["tokens_per_s"])
            step_ms[event.phase].append(event.values["step_ms"])

    quiet = lambda e: None  # noqa: E731
    sink = emit if ranks.is_main else quiet
    common = dict(steps=args.steps, device=device, ranks=ranks)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    policy = PolicyModel(profile.policy, len(corpus.intents), profile.policy_members)
    train_policy(policy, to_device(data.policy, device), profile.policy_train, emit=sink, **common)
    torch.manual_seed(0)
    planner = PlannerModel(profile.planner, data.vocab.size)
    planner.encoder.load_state_dict(policy.encoder.state_dict())
    train_planner(planner, to_device(data.plan, device), profile.planner_train, emit=sink, vocab=data.vocab, **common)
    torch.manual_seed(0)
    talker = TalkerModel(profile.talker)
    talker.warm_from(policy.member_encoders())
    train_talker(talker, to_device(data.talk, device), profile.talker_train, emit=sink, gallery=[], **common)
    if ranks.is_main:
        steady = {p: statistics.median(w[1:] or w) for p, w in windows.items() if w}
        Path(args.out).write_text(json.dumps({
            "world_size": ranks.world_size, "backend": ranks.backend, "device": str(device),
            "global_batch": {"policy": profile.policy_train.batch_size, "planner": profile.planner_train.batch_size,
                             "sft": profile.talker_train.batch_size},
            "tokens_per_s": steady,
            "step_ms": {p: statistics.median(w[1:] or w) for p, w in step_ms.items() if w},
            "windows": {p: len(w) for p, w in windows.items()},
            "seconds": time.perf_counter() - t0,
        }))
    ranks.close()


def overall(run: dict) -> float:
    """Tokens over stepping time, all phases together, as if each phase ran the same steps at its
    steady rate: sum of tokens per step over sum of step times."""
    tps, ms = run["tokens_per_s"], run["step_ms"]
    return sum(tps[p] * ms[p] for p in tps) / sum(ms[p] for p in tps)


def run_job(nproc: int, args, out: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(Path(__file__).resolve()), "--worker", "--out", str(out), "--profile", args.profile,
           "--device", args.device, "--steps", str(args.steps)]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if args.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    print(f"{nproc} process(es): {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)
    return json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="base")
    ap.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    ap.add_argument("--steps", type=int, default=300, help="steps of each phase (default: 300)")
    ap.add_argument("--batch", type=int, default=None, help="per-process batch of every phase (default: the profile's)")
    ap.add_argument("--nprocs", default="1,2", help="process counts to compare, the first is the baseline")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    counts = [int(n) for n in args.nprocs.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            results[n] = run_job(n, args, Path(tmp) / f"n{n}.json")
    base = results[counts[0]]
    summary = {"profile": args.profile, "device": args.device, "steps": args.steps,
               "scaling": "weak: the same batch per process, a global batch N times larger", "runs": {}}
    base_all = overall(base)
    for n, r in results.items():
        tps_all = overall(r)
        summary["runs"][str(n)] = {
            **r, "tokens_per_s_all": tps_all,
            "efficiency": {p: v / (n / counts[0] * base["tokens_per_s"][p]) for p, v in r["tokens_per_s"].items()},
            "efficiency_all": tps_all / (n / counts[0] * base_all),
        }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
