"""The captured, compiled training step on CUDA trains as the eager one does.

    python -m pytest -q tests/test_cuda_step.py      (skips without a CUDA device)

CI has no GPU: these run on the device machine (docs/benchmarks.md names the session).
"""

import pytest
import torch

from navi_model.config import EncoderConfig, TrainConfig
from navi_model.data import PolicyData
from navi_model.model import PolicyModel, compile_blocks
from navi_model.step import TrainStep, load_optimizer_state, plain_optimizer_state
from navi_model.train import make_optimizer, policy_loss, train_policy

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def tiny_data(n=96, T=24, intents=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, T, (n,), generator=g)
    pos = torch.arange(T)[None, :]
    valid = pos >= (T - lengths[:, None])  # left-padded
    ids = torch.where(valid, torch.randint(1, 256, (n, T), generator=g), torch.zeros(n, T, dtype=torch.long))
    labels = ids[:, -1] % intents  # learnable from the last byte
    return PolicyData(ids=ids.to(CUDA), valid=valid.to(CUDA), labels=labels.to(CUDA),
                      goal_index=torch.arange(n, device=CUDA), intents=[f"i{k}" for k in range(intents)], n_unique=n)


def model_and_opt(cfg, seed=0):
    torch.manual_seed(seed)
    model = PolicyModel(EncoderConfig(seq_len=24, d_model=64, n_layers=2, n_heads=4), 5).to(CUDA).train()
    return model, make_optimizer(model, cfg, CUDA)


def params(model):
    return torch.cat([p.detach().float().flatten() for p in model.parameters()])


@pytest.mark.parametrize("compiled", [False, True])
def test_graphed_step_trains_like_the_eager_step(compiled):
    cfg = TrainConfig(batch_size=16, lr=3e-3)
    data = tiny_data()
    batches = [torch.randint(0, data.n, (16,), device=CUDA, generator=torch.Generator(CUDA).manual_seed(i))
               for i in range(12)]
    finals, sums = [], []
    for graph in (False, None):
        model, opt = model_and_opt(cfg)
        if compiled:
            compile_blocks(model)
        step = TrainStep(model, opt, policy_loss(model, data, CUDA), grad_clip=1.0, device=CUDA, graph=graph)
        for i, idx in enumerate(batches):
            step(cfg.lr * (i + 1) / len(batches), idx)
        assert step.graphed == (graph is None)
        sums.append(step.take())
        finals.append(params(model))
    # the same kernels in the same order: equal up to the nondeterminism of atomics in backward
    rel = ((finals[0] - finals[1]).norm() / finals[0].norm()).item()
    assert rel < 1e-2, rel
    assert sums[0][0] == pytest.approx(sums[1][0], rel=1e-2)
    assert sums[0][1] == pytest.approx(sums[1][1], abs=3)  # correct answers, out of 192


def test_graphed_step_follows_the_learning_rate_schedule():
    # a float lr would be baked into the graph; a zero lr must freeze the weights after capture
    cfg = TrainConfig(batch_size=16, lr=3e-3)
    data = tiny_data()
    model, opt = model_and_opt(cfg)
    step = TrainStep(model, opt, policy_loss(model, data, CUDA), grad_clip=1.0, device=CUDA)
    idx = torch.arange(16, device=CUDA)
    for _ in range(step.warmup + 2):  # past the capture
        step(1e-3, idx)
    before = params(model)
    # adam's weight decay and update are both proportional to lr: lr 0 changes nothing
    for _ in range(3):
        step(0.0, idx)
    assert torch.equal(before, params(model))
    step(1e-3, idx)
    assert not torch.equal(before, params(model))


def test_graphed_training_learns_and_its_checkpoint_resumes_on_the_cpu():
    cfg = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=5, log_every=10)
    data = tiny_data()
    model, _ = model_and_opt(cfg)
    events = []
    r = train_policy(model, data, cfg, steps=60, device=CUDA, emit=events.append)
    losses = [e.values["loss"] for e in events if getattr(e, "values", {}).get("loss") is not None]
    assert losses[-1] < losses[0] * 0.7, losses
    warm = [e for e in events if getattr(e, "kind", None) == "warm"]
    assert len(warm) == 1 and warm[0].data["graphed"]
    payload = [e for e in events if type(e).__name__ == "CheckpointReady"][-1].payload
    # a plain checkpoint: cpu tensors, float learning rates
    assert all(isinstance(g["lr"], float) for g in payload["optimizer"]["param_groups"])
    cpu = torch.device("cpu")
    cpu_data = PolicyData(**{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in data.__dict__.items()})
    resumed = PolicyModel(model.cfg, 5)
    r2 = train_policy(resumed, cpu_data, cfg, steps=70, device=cpu, emit=lambda e: None, resume=payload)
    assert r2.steps == 70 and r.steps == 60


def test_a_cpu_checkpoint_resumes_under_a_graph():
    cfg = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=5, log_every=10)
    data = tiny_data()
    cpu = torch.device("cpu")
    cpu_data = PolicyData(**{k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in data.__dict__.items()})
    torch.manual_seed(0)
    model = PolicyModel(EncoderConfig(seq_len=24, d_model=64, n_layers=2, n_heads=4), 5)
    events = []
    train_policy(model, cpu_data, cfg, steps=20, device=cpu, emit=events.append)
    payload = [e for e in events if type(e).__name__ == "CheckpointReady"][-1].payload
    resumed = PolicyModel(model.cfg, 5)
    out = []
    r = train_policy(resumed, data, cfg, steps=40, device=CUDA, emit=out.append, resume=payload)
    assert r.steps == 40 and any(getattr(e, "kind", None) == "warm" for e in out)
    # the optimizer kept this device's flags through the load
    opt = make_optimizer(resumed.to(CUDA), cfg, CUDA)
    load_optimizer_state(opt, plain_optimizer_state(opt))
    assert all(g["capturable"] and g["fused"] for g in opt.param_groups)


def test_restore_then_capture_uses_the_restored_state():
    cfg = TrainConfig(batch_size=16, lr=3e-3)
    data = tiny_data()
    model, opt = model_and_opt(cfg)
    step = TrainStep(model, opt, policy_loss(model, data, CUDA), grad_clip=1.0, device=CUDA)
    idx = torch.arange(16, device=CUDA)
    for _ in range(6):
        step(1e-3, idx)
    state = plain_optimizer_state(opt)
    steps_taken = [s["step"].item() for s in state["state"].values()]
    assert steps_taken and all(s == 6 for s in steps_taken)
    fresh, opt2 = model_and_opt(cfg, seed=1)
    fresh.load_state_dict(model.state_dict())
    load_optimizer_state(opt2, state)
    step2 = TrainStep(fresh, opt2, policy_loss(fresh, data, CUDA), grad_clip=1.0, device=CUDA)
    for _ in range(6):
        step2(1e-3, idx)
    assert all(s["step"].item() == 12 for s in opt2.state.values())
