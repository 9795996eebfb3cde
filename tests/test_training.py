"""A short real training run: the loss falls, accuracy beats chance, the loop keeps its promises.

    python -m pytest tests/test_training.py -q
"""

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.config import TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import load_corpus
from navi_model.data import build_policy_data
from navi_model.evaluate import policy_step_reader, run_intent_bench
from navi_model.events import CheckpointReady, MetricsLogged
from navi_model.model import EncoderConfig, PolicyModel
from navi_model.train import get_lr, policy_loss, steps_for_coverage, train_policy

INTENTS = ["build", "test", "greet", "disk_usage", "memory_add", "git_log"]


@pytest.fixture(scope="module")
def small():
    corpus = load_corpus(corpus_dir())
    goals = [g for g in corpus.goals if g["intent"] in INTENTS]
    data = build_policy_data(goals, INTENTS, 64, torch.device("cpu"))
    return corpus, data


def tiny_model():
    torch.manual_seed(0)
    return PolicyModel(EncoderConfig(seq_len=64, d_model=48, n_layers=1, n_heads=4), len(INTENTS))


def test_loss_falls_and_accuracy_beats_chance(small):
    corpus, data = small
    events = []
    model = tiny_model()
    cfg = TrainConfig(batch_size=32, lr=3e-3, warmup_steps=10, log_every=10)
    result = train_policy(model, data, cfg, steps=120, device=torch.device("cpu"), emit=events.append)
    losses = [e.values["loss"] for e in events if isinstance(e, MetricsLogged) and "loss" in e.values]
    assert losses[-1] < 0.5 * losses[0]
    assert result.steps == 120 and not result.stopped

    bench = corpus.benches["policy"]
    held_out = bench.__class__(bench.kind, bench.path, [it for it in bench.items if it["intent"] in INTENTS])
    items = run_intent_bench(model, held_out, INTENTS, torch.device("cpu"))
    accuracy = sum(it["correct"] for it in items) / len(items)
    assert accuracy > 2 / len(INTENTS)  # twice chance, on goals it never trained on


def test_the_policy_loss_takes_the_profiles_label_smoothing(small):
    _, data = small
    model = tiny_model()
    with torch.no_grad():  # a sure model: near uniform logits would cost the same either way
        model.head.bias.copy_(torch.arange(len(INTENTS)) * 4.0)
    idx = torch.arange(16)
    plain, _ = policy_loss(model, data, torch.device("cpu"))(idx)
    smooth, _ = policy_loss(model, data, torch.device("cpu"), label_smoothing=0.1)(idx)
    with torch.no_grad():
        logits = model(data.ids[idx], data.valid[idx]).float()
    want = torch.nn.functional.cross_entropy(logits, data.labels[idx], label_smoothing=0.1)
    assert torch.allclose(smooth, want, atol=1e-5) and not torch.allclose(plain, smooth, atol=1e-3)


def test_the_policy_reads_plan_steps_in_the_planners_action_order():
    model = tiny_model()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(len(INTENTS), dtype=torch.float))  # git_log likeliest, build least
    read = policy_step_reader(model, INTENTS, ["git_log", "build"], torch.device("cpu"))
    out = read(["show the log", "", "x" * 65])
    assert out.shape == (3, 2)
    full = torch.arange(len(INTENTS), dtype=torch.float).log_softmax(-1)
    assert torch.allclose(out[0], full[[5, 0]])  # the policy's log-probs of those two intents
    assert out[1:].eq(0).all()  # empty, and over the policy's 64 bytes: no opinion
    # an action the policy never routes to: no reader, the planner decodes alone
    assert policy_step_reader(model, INTENTS, ["build", "deploy"], torch.device("cpu")) is None


def test_loss_is_read_back_every_log_every_steps_not_every_step(small):
    _, data = small
    events = []
    cfg = TrainConfig(batch_size=16, log_every=7)
    train_policy(tiny_model(), data, cfg, steps=30, device=torch.device("cpu"), emit=events.append)
    steps = [e.step for e in events if isinstance(e, MetricsLogged) and "loss" in e.values]
    assert steps == [7, 14, 21, 28, 30]  # every 7th, and the last step always


def test_coverage_counts_every_sample_seen(small):
    _, data = small
    cfg = TrainConfig(batch_size=data.n // 4, log_every=100)
    # an epoch is exactly 4 steps: 8 steps show every goal exactly twice
    result = train_policy(tiny_model(), data, cfg, steps=8, device=torch.device("cpu"), emit=lambda e: None)
    assert (result.coverage_min, result.coverage_mean) == (2.0, 2.0)


def test_steps_scale_with_data():
    cfg = TrainConfig(batch_size=64, passes_per_goal=3.0)
    assert steps_for_coverage(1000, cfg) == 47
    assert steps_for_coverage(10_000, cfg) == 469


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert get_lr(0, 100, cfg) == pytest.approx(0.1)
    assert get_lr(9, 100, cfg) == pytest.approx(1.0)
    assert get_lr(99, 100, cfg) == pytest.approx(0.1, abs=1e-3)


def test_stop_ends_the_loop_and_still_hands_over_a_checkpoint(small):
    _, data = small
    control = TrainingControl()
    events = []

    def emit(e):
        events.append(e)
        if isinstance(e, MetricsLogged) and e.step == 5:
            control.stop()

    result = train_policy(tiny_model(), data, TrainConfig(batch_size=8, log_every=5), steps=50,
                          device=torch.device("cpu"), emit=emit, control=control, checkpoint_extra={"k": 1})
    assert result.stopped and result.steps == 5
    ckpt = [e for e in events if isinstance(e, CheckpointReady)]
    assert len(ckpt) == 1 and ckpt[0].step == 5 and ckpt[0].payload["k"] == 1


def test_denormals_flow_again_after_training(small):
    # the trainer flushes denormals while it runs on the CPU; the flag is process-wide
    _, data = small
    train_policy(tiny_model(), data, TrainConfig(batch_size=8, log_every=5), steps=2, device=torch.device("cpu"),
                 emit=lambda e: None)
    assert (torch.tensor([1e-40]) * 1.0).item() != 0.0
