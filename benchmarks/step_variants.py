"""Where a training step's time goes, per model: eager, CUDA-graphed, block-compiled, both.

    python benchmarks/step_variants.py --profile base --device cuda --steps 60 --out /tmp/variants.json
    python benchmarks/step_variants.py --profile tiny --device cpu --steps 10 --models policy

For each model of the profile, on its real batch shapes, it times:
- ref: the nanoGPT-style minimum on one fixed batch (forward, loss, backward, AdamW step);
- eager: navi's TrainStep run eagerly (clip, window statistics);
- graph: the same step captured as a CUDA graph and replayed;
- compiled / compiled+graph: the same with every transformer Block under torch.compile
  (regional compilation: one compiled block serves every layer), with the compile time.
"host" is the time the host needs to enqueue one step (no sync): when it is near the device
time, the step is launch-bound. A torch.profiler table of the eager policy step's kernels and
an RMSNorm micro-benchmark go to --out as well.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from navi_model.assets import corpus_dir  # noqa: E402
from navi_model.brain import build_brain_data, to_device  # noqa: E402
from navi_model.config import get_profile  # noqa: E402
from navi_model.corpus.load import load_corpus  # noqa: E402
from navi_model.model import Block, PolicyModel  # noqa: E402
from navi_model.planner import PlannerModel, plan_loss  # noqa: E402
from navi_model.step import TrainStep  # noqa: E402
from navi_model.talker import (  # noqa: E402
    EncoderCache, TalkerModel, memory_rows, pad_denoise, sample_memory, talk_loss, talker_step_loss,
)
from navi_model.train import make_optimizer  # noqa: E402


def setups(profile, data, device, models):
    """name -> (make_model, loss_fn(model) -> fn(*batch), batch_fn(step) -> batch tuple, tokens per step)."""
    out = {}
    g = torch.Generator(device=device).manual_seed(0)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if "policy" in models:
        d, B = data.policy, profile.policy_train.batch_size

        def policy_loss(model):
            def fn(ids, valid, labels):
                with torch.autocast(**autocast):
                    logits = model(ids, valid)
                loss = F.cross_entropy(logits.float(), labels)
                return loss, (logits.detach().argmax(-1) == labels).sum()
            return fn

        def policy_batch(_, d=d, B=B):
            idx = torch.randint(0, d.n, (B,), device=device, generator=g)
            return d.ids[idx], d.valid[idx], d.labels[idx]
        n_intents = len(d.intents)
        out["policy"] = (lambda: PolicyModel(profile.policy, n_intents), policy_loss, policy_batch,
                         B * d.ids.shape[1])
    if "planner" in models:
        d, B = data.plan, profile.planner_train.batch_size
        def planner_loss(model):
            def fn(goal_ids, goal_valid, plan_tgt):
                with torch.autocast(**autocast):
                    logits = model(goal_ids, goal_valid)
                return (plan_loss(logits, goal_valid, plan_tgt),)
            return fn

        def planner_batch(_, d=d, B=B):
            idx = torch.randint(0, d.n, (B,), device=device, generator=g)
            return d.goal_ids[idx], d.goal_valid[idx], d.plan_targets[idx]
        out["planner"] = (lambda: PlannerModel(profile.planner, data.vocab.size), planner_loss, planner_batch,
                          B * d.goal_ids.shape[1])
    if "talker" in models or "talker_cached" in models:
        d, B, K = data.talk, profile.talker_train.batch_size, profile.talker.memory_k

        def make_talker():
            m = TalkerModel(profile.talker)
            if profile.talker_train.freeze_encoder:
                m.encoder.requires_grad_(False)
            return m

        def talker_loss(model):
            def fn(p_ids, p_valid, m_ids, m_valid, present, noisy, targets):
                with torch.autocast(**autocast):
                    logits = model(p_ids, p_valid, m_ids, m_valid, present, noisy)
                return (talk_loss(logits, targets),)
            return fn

        def talker_batch(_, d=d, B=B, K=K):
            idx = torch.randint(0, d.n, (B,), device=device, generator=g)
            m_ids, m_valid, present = sample_memory(d, idx, K, g)
            noisy = pad_denoise(d.dec_inputs[idx], 0.1, g)
            return d.prompt_ids[idx], d.prompt_valid[idx], m_ids, m_valid, present, noisy, d.dec_targets[idx]
        T, R = profile.talker.encoder.seq_len, profile.talker.response_len
        out["talker"] = (make_talker, talker_loss, talker_batch, B * (T * (K + 1) + R))

        def cached_loss(model):
            # navi's own SFT step: the frozen encoder's pooled vectors computed once (EncoderCache)
            cache = EncoderCache.build(model, d, device)
            fn = talker_step_loss(model, d, cache, device)
            return lambda idx, rows, present, noisy: fn(idx, rows, present, noisy)[:1]

        def cached_batch(_, d=d, B=B, K=K):
            idx = torch.randint(0, d.n, (B,), device=device, generator=g)
            rows, present = memory_rows(d, idx, K, g)
            return idx, rows, present, pad_denoise(d.dec_inputs[idx], 0.1, g)
        out["talker_cached"] = (make_talker, cached_loss, cached_batch, B * (T * (K + 1) + R))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step_fn, batches, device, steps, warm):
    for i in range(warm):
        step_fn(batches[i % len(batches)])
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step_fn(batches[i % len(batches)])
    host = time.perf_counter() - t0
    sync(device)
    total = time.perf_counter() - t0
    return 1000 * total / steps, 1000 * host / steps


def compile_blocks(model):
    for m in model.modules():
        if isinstance(m, Block):
            m.compile()


def run_variant(name, kind, setup, profile, device, steps):
    make_model, loss_of, batch_fn, tokens = setup
    torch.manual_seed(0)
    model = make_model().to(device).train()
    cfg = {"policy": profile.policy_train, "planner": profile.planner_train, "talker": profile.talker_train,
           "talker_cached": profile.talker_train}[name]
    opt = make_optimizer(model, cfg, device)
    batches = [batch_fn(i) for i in range(8)]
    compile_s = None
    if "compiled" in kind:
        compile_blocks(model)
    if kind == "ref":
        fixed = batches[0]
        loss_fn = loss_of(model)
        params = [p for p in model.parameters() if p.requires_grad]
        ref_opt = torch.optim.AdamW(params, lr=cfg.lr, fused=device.type == "cuda")

        def fn(_):
            loss = loss_fn(*fixed)[0]
            loss.backward()
            ref_opt.step()
            ref_opt.zero_grad(set_to_none=True)
    else:
        step = TrainStep(model, opt, loss_of(model), grad_clip=cfg.grad_clip, device=device,
                         graph=None if "graph" in kind else False)

        def fn(batch):
            step(1e-4, *batch)
    t0 = time.perf_counter()
    fn(batches[0])
    sync(device)
    first_s = time.perf_counter() - t0
    if "compiled" in kind:
        compile_s = first_s
    ms, host_ms = time_steps(fn, batches, device, steps, warm=5)
    return {"model": name, "kind": kind, "step_ms": ms, "host_ms": host_ms, "tokens_per_s": tokens / ms * 1000,
            "first_step_s": first_s, "compile_s": compile_s}


def graph_matches_eager(name, setup, profile, device, steps=8):
    """Same init, same batches: the graphed step must train exactly as the eager one."""
    make_model, loss_of, batch_fn, _ = setup
    cfg = {"policy": profile.policy_train, "planner": profile.planner_train, "talker": profile.talker_train}[name]
    batches = [batch_fn(i) for i in range(steps)]
    finals, losses = [], []
    for graph in (False, None):
        torch.manual_seed(0)
        model = make_model().to(device).train()
        opt = make_optimizer(model, cfg, device)
        step = TrainStep(model, opt, loss_of(model), grad_clip=cfg.grad_clip, device=device, graph=graph)
        for i, b in enumerate(batches):
            step(cfg.lr * (i + 1) / steps, *b)
        losses.append(step.take()[0])
        finals.append(torch.cat([p.detach().float().flatten() for p in model.parameters()]))
    diff = ((finals[0] - finals[1]).norm() / finals[0].norm()).item()
    return {"model": name, "param_rel_diff": diff, "loss_sum_eager": losses[0], "loss_sum_graph": losses[1]}


def profile_policy(setup, profile, device, path):
    make_model, loss_of, batch_fn, _ = setup
    model = make_model().to(device).train()
    opt = make_optimizer(model, profile.policy_train, device)
    step = TrainStep(model, opt, loss_of(model), grad_clip=1.0, device=device, graph=False)
    batch = batch_fn(0)
    for _ in range(5):
        step(1e-4, *batch)
    sync(device)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(10):
            step(1e-4, *batch)
        sync(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=40)
    Path(path).write_text(table)
    return table


def matmul_micro(device, rows=32768, d=512, widths=(1368, 1408, 1536)):
    """bf16 forward of (rows, d) x (d, n): does a SwiGLU width that is not a multiple of 128 cost?"""
    res = {}
    x = torch.randn(rows, d, device=device, dtype=torch.bfloat16)
    for n in widths:
        w = torch.randn(d, n, device=device, dtype=torch.bfloat16)
        ms, _ = time_steps(lambda _: x @ w, [None], device, 50, 5)
        res[n] = {"ms": ms, "tflops": 2 * rows * d * n / ms / 1e9}
    return res


def profile_compiled_policy(setup, profile, device, path):
    """Kernel table of the compiled policy step (eager launches of compiled blocks: a graph's
    replay hides its kernels from the profiler)."""
    make_model, loss_of, batch_fn, _ = setup
    model = make_model().to(device).train()
    compile_blocks(model)
    opt = make_optimizer(model, profile.policy_train, device)
    step = TrainStep(model, opt, loss_of(model), grad_clip=1.0, device=device, graph=False)
    batch = batch_fn(0)
    for _ in range(5):
        step(1e-4, *batch)
    sync(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step(1e-4, *batch)
        sync(device)
    Path(path).write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))


def rmsnorm_micro(device, n=32768, c=512):
    from navi_model.model import RMSNorm
    x = torch.randn(n, c, device=device, requires_grad=True)
    norm = RMSNorm(c).to(device)
    res = {}
    for name, f in {"manual": lambda: norm(x), "F.rms_norm": lambda: F.rms_norm(x, (c,), norm.weight, norm.eps)}.items():
        def one():
            y = f()
            y.sum().backward()
        ms, _ = time_steps(lambda _: one(), [None], device, 50, 5)
        res[name] = ms
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="base")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--models", default="policy,planner,talker")
    ap.add_argument("--kinds", default="ref,eager,graph,compiled,compiled+graph")
    ap.add_argument("--out", type=Path, default=Path("variants.json"))
    ap.add_argument("--check", action="store_true", help="also check that the graphed step trains as the eager one")
    args = ap.parse_args()
    device = torch.device(args.device)
    profile = get_profile(args.profile)
    models = args.models.split(",")
    data = build_brain_data(load_corpus(corpus_dir()), profile)
    data.policy, data.plan, data.talk = (to_device(data.policy, device), to_device(data.plan, device),
                                         to_device(data.talk, device))
    all_setups = setups(profile, data, device, models)
    rows = []
    for name in models:
        for kind in args.kinds.split(","):
            if "graph" in kind and device.type != "cuda":
                continue
            try:
                r = run_variant(name, kind, all_setups[name], profile, device, args.steps)
            except Exception as e:  # one failing variant must not hide the others
                r = {"model": name, "kind": kind, "error": f"{type(e).__name__}: {e}"[:400]}
            rows.append(r)
            print(json.dumps(r), flush=True)
            torch._dynamo.reset()
    extra = {"graph_vs_eager": []}
    if device.type == "cuda" and args.check:
        for name in models:
            extra["graph_vs_eager"].append(graph_matches_eager(name, all_setups[name], profile, device))
            print(json.dumps(extra["graph_vs_eager"][-1]), flush=True)
    if "policy" in models and device.type == "cuda":
        profile_policy(all_setups["policy"], profile, device, args.out.with_suffix(".profile.txt"))
    extra["rmsnorm_ms"] = rmsnorm_micro(device)
    if device.type == "cuda":
        extra["matmul"] = matmul_micro(device)
        print("matmul", extra["matmul"], flush=True)
        if "policy" in models:
            profile_compiled_policy(all_setups["policy"], profile, device, args.out.with_suffix(".compiled.txt"))
    args.out.write_text(json.dumps({"rows": rows, **extra,
                                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                                    "torch": torch.__version__}, indent=2))
    print(f"{'model':<8} {'kind':<16} {'step ms':>8} {'host ms':>8} {'tok/s':>10} {'compile s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<8} {r['kind']:<16} ERROR {r['error'][:120]}")
            continue
        print(f"{r['model']:<8} {r['kind']:<16} {r['step_ms']:8.2f} {r['host_ms']:8.2f} {r['tokens_per_s']:10.0f} "
              f"{(r['compile_s'] or 0):9.1f}")
    print("rmsnorm", extra["rmsnorm_ms"])
    for r in extra["graph_vs_eager"]:
        print("graph vs eager", r)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
