"""The planner: plan vocabulary, class weights, the prefix-LM mask, and a trained toy whose
teacher-forced and greedy decodings agree.

    cd /work/main && PYTHONPATH=/work/main python -m pytest tests/test_planner.py -q
"""

import contextlib
import io

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.config import TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import Bench, CorpusError, load_corpus
from navi_model.events import CheckpointReady, LogLine, MetricsLogged
from navi_model.model import EncoderConfig
from navi_model.planner import (
    BOS, ENDTHINK, EOS, PAD, STEP, THINK, PlannerConfig, PlannerModel, PlanVocab, build_plan_data,
    class_weights, greedy_plans, plan_loss, planner_from_payload, run_plan_bench,
    teacher_forced_accuracy, train_planner,
)
from navi_model.vocab import TruncationError, VocabRangeError, encode_encoder_batch

CPU = torch.device("cpu")
ACTIONS = ["build", "test", "lint"]  # ids 6, 7, 8


@contextlib.contextmanager
def one_thread():
    # a model this small is fastest on one thread, and two threads crawl when another process
    # shares the 2 cores; restore the setting for the rest of the session
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def small_planner(vocab_size=len(ACTIONS) + 6, seq_len=24, plan_len=8, d_model=32):
    torch.manual_seed(0)
    cfg = PlannerConfig(EncoderConfig(seq_len=seq_len, d_model=d_model, n_layers=1, n_heads=4),
                        dec_layers=2, plan_len=plan_len)
    return PlannerModel(cfg, vocab_size)


# --- the plan vocabulary ---------------------------------------------------------------------

def test_encode_layout():
    vocab = PlanVocab(ACTIONS)
    assert vocab.size == 9 and vocab.names[6:] == ACTIONS and vocab.id("lint") == 8
    assert vocab.names[:6] == ["PAD", "BOS", "EOS", "STEP", "THINK", "ENDTHINK"]
    assert vocab.encode(["build", "lint"]) == [BOS, STEP, 6, STEP, 8, EOS]


def test_encode_batch_right_pads_with_bos_first_and_shifts_targets():
    vocab = PlanVocab(ACTIONS)
    inputs, targets = vocab.encode_batch([["build"], ["test", "lint"]], 6)
    assert inputs.tolist() == [[BOS, STEP, 6, EOS, PAD, PAD], [BOS, STEP, 7, STEP, 8, EOS]]
    assert targets.tolist() == [[STEP, 6, EOS, PAD, PAD, PAD], [STEP, 7, STEP, 8, EOS, PAD]]


def test_unknown_action_is_an_error_naming_it():
    vocab = PlanVocab(ACTIONS)
    with pytest.raises(ValueError, match="'deploy'"):
        vocab.encode(["build", "deploy"])
    with pytest.raises(ValueError, match="'STEP'"):
        vocab.encode(["STEP"])  # a special token is not an action
    with pytest.raises(ValueError, match="STEP"):
        PlanVocab(["build", "STEP"])


def test_a_plan_that_does_not_fit_is_a_truncation_error():
    vocab = PlanVocab(ACTIONS)
    plan = ["build", "test", "lint"]  # BOS + 6 + EOS: 7 inputs
    assert vocab.encode_batch([plan], 7)[0].shape == (1, 7)
    with pytest.raises(TruncationError, match="plan_len=6"):
        vocab.encode_batch([plan], 6)


def test_strip_cot_drops_thinking():
    s = PlanVocab.strip_cot
    assert s([BOS, THINK, 7, 8, ENDTHINK, STEP, 6, EOS]) == [BOS, STEP, 6, EOS]
    assert s([BOS, STEP, 6, THINK, STEP, 7, EOS]) == [BOS, STEP, 6]  # unmatched: drop to the end
    assert s([THINK, THINK, 7, ENDTHINK, 8, ENDTHINK, STEP, 6]) == [STEP, 6]  # nested pairs
    assert s([STEP, ENDTHINK, 6]) == [STEP, ENDTHINK, 6]  # a stray ENDTHINK stays, to fail a comparison


def test_plan_tokens_cut_after_the_first_eos():
    vocab = PlanVocab(ACTIONS)
    assert vocab.plan_tokens([BOS, STEP, 6, EOS, STEP, 7, EOS, PAD]) == ["STEP", "build", "EOS"]
    assert vocab.plan_tokens([BOS, STEP, 6, STEP, 7]) == ["STEP", "build", "STEP", "test"]  # no EOS: none added


def test_thinking_in_a_model_output_is_stripped_before_comparing():
    # M-018: the comparison run_plan_bench makes, on a hand-made output
    vocab = PlanVocab(ACTIONS)
    output = [BOS, THINK, STEP, 7, ENDTHINK, STEP, 6, STEP, 8, EOS, PAD]
    expected = vocab.plan_tokens(vocab.encode(["build", "lint"]))
    assert expected == ["STEP", "build", "STEP", "lint", "EOS"]
    assert vocab.plan_tokens(output) == expected


def test_plan_vocab_range_error_names_plan_vocab():
    vocab = PlanVocab(ACTIONS)
    with pytest.raises(VocabRangeError, match=r"id 257 at position \(0, 1\) is outside PLAN_VOCAB"):
        vocab.check(torch.tensor([[BOS, 257]]))  # a TALK_VOCAB id fed to the planner
    with pytest.raises(ValueError, match="PLAN_VOCAB of 9 tokens"):
        greedy_plans(small_planner(vocab_size=12), ["build it"], vocab, CPU)


# --- class weights and the loss ----------------------------------------------------------------

def test_class_weights_give_every_present_class_an_equal_share():
    vocab = PlanVocab(["a", "b", "c", "d", "e"])  # "e" never occurs
    _, targets = vocab.encode_batch([["a", "b"], ["c", "d", "a"], ["b", "c", "d"]], 8)
    weights, stats = class_weights(targets, vocab)
    assert stats["share/STEP"] == pytest.approx(8 / 19)  # STEP is ~40% of the raw targets
    actions = [vocab.id(n) for n in "abcd"]
    assert weights[STEP] < weights[actions].min()
    shares = [stats[f"weighted_share/{n}"] for n in ["STEP", "EOS", "a", "b", "c", "d"]]
    assert max(shares) <= 0.2 and stats["weighted_share_max"] <= 0.2
    assert max(shares) - min(shares) < 1e-6 and sum(shares) == pytest.approx(1.0)
    assert weights[vocab.id("e")] == 0 and weights[PAD] == 0 and weights[BOS] == 0
    assert stats["share/e"] == 0 and stats["weighted_share/e"] == 0
    assert "share/THINK" not in stats and "share/PAD" not in stats


def test_plan_loss_is_the_weighted_mean_over_non_pad_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 9)
    targets = torch.tensor([[STEP, 6, EOS, PAD], [STEP, 7, STEP, 8]])
    weights = torch.rand(9)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    w = weights[targets.flatten()] * (targets.flatten() != PAD)
    torch.testing.assert_close(plan_loss(logits, targets, weights), (w * ce).sum() / w.sum())


# --- the model ---------------------------------------------------------------------------------

def test_every_parameter_gets_a_finite_nonzero_gradient():
    vocab = PlanVocab(ACTIONS)
    model = small_planner()
    ids, valid = encode_encoder_batch(["build it", "run the tests please", "lint"], 24)
    inputs, targets = vocab.encode_batch([["build"], ["test", "lint"], ["lint", "build", "test"]], 8)
    logits = model(ids, valid, inputs)
    assert logits.shape == (3, 8, vocab.size)
    plan_loss(logits, targets, torch.ones(vocab.size)).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert dead == []


def test_goal_pads_and_later_plan_tokens_do_not_reach_earlier_logits():
    vocab = PlanVocab(ACTIONS)
    model = small_planner().eval()
    ids, valid = encode_encoder_batch(["build it", "run the tests please"], 24)
    inputs, _ = vocab.encode_batch([["build", "test"], ["test", "lint"]], 8)
    with torch.no_grad():
        base = model(ids, valid, inputs)

        pad_changed = ids.clone()
        pad_changed[:, 0] = 200  # position 0 is a left pad in both rows
        torch.testing.assert_close(model(pad_changed, valid, inputs), base)

        later = inputs.clone()
        later[:, 3] = 8  # changes the plan token at position 3 only
        out = model(ids, valid, later)
        torch.testing.assert_close(out[:, :3], base[:, :3])
        assert (out[:, 3] - base[:, 3]).abs().max() > 1e-4  # the position itself does see it

        real_changed = ids.clone()
        real_changed[:, -1] = ord("?")  # the last goal byte is real: every plan position sees it
        assert (model(real_changed, valid, inputs)[:, 0] - base[:, 0]).abs().max() > 1e-4

    mask = PlannerModel.attn_mask(valid[:1, -4:], 3)[0, 0]  # 4 goal positions, all valid, then 3 plan
    assert mask.shape == (7, 7)
    assert mask[:, :4].all()  # every query sees every valid goal position
    assert not mask[:4, 4:].any()  # goal queries never see the plan
    assert mask[4:, 4:].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    pad_mask = PlannerModel.attn_mask(valid[:1, :3], 2)[0, 0]  # three pads
    assert not pad_mask[:, :3].any()


# --- a trained toy -----------------------------------------------------------------------------

TOY_SEQ = 96  # the toy takes composites that fit in 96 bytes
TOY_PLAN = 8


@pytest.fixture(scope="module")
def toy():
    corpus = load_corpus(corpus_dir())
    vocab = PlanVocab([i.name for i in corpus.intents if i.action])
    # 44 plans spread over the file: 1 to 3 actions, all 18 actions present
    # one single-step plan per action, then the first composites that fit: 44 plans, every action
    singles: dict[str, dict] = {}
    for p in corpus.plans:
        if len(p["plan"]) == 1:
            singles.setdefault(p["plan"][0], p)
    composites = [p for p in corpus.plans if len(p["plan"]) > 1 and len(p["goal"].encode()) <= TOY_SEQ]
    plans = list(singles.values()) + composites[: 44 - len(singles)]
    torch.manual_seed(0)
    cfg = PlannerConfig(EncoderConfig(seq_len=TOY_SEQ, d_model=48, n_layers=1, n_heads=4),
                        dec_layers=1, plan_len=TOY_PLAN)
    model = PlannerModel(cfg, vocab.size)
    data = build_plan_data(plans, vocab, TOY_SEQ, TOY_PLAN, CPU)
    events = []
    train_cfg = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=20, log_every=50)
    with one_thread():
        result = train_planner(model, data, train_cfg, steps=250, device=CPU, emit=events.append, vocab=vocab)
    bench = Bench("plan", corpus.benches["plan"].path, plans)
    return corpus, vocab, model, plans, bench, events, result


def test_teacher_forced_and_autoregressive_plan_decoding_agree_on_a_trained_toy(toy):
    _, vocab, model, plans, bench, events, result = toy
    losses = [e.values["loss"] for e in events if isinstance(e, MetricsLogged) and "loss" in e.values]
    assert len(plans) == 44 and {len(p["plan"]) for p in plans} == {1, 2, 3}
    assert losses[-1] < 0.01 * losses[0] and result.final_loss == losses[-1]
    assert result.coverage_min >= 80  # 250 steps * 16 / 44 goals
    with one_thread():
        assert teacher_forced_accuracy(model, bench, vocab, CPU) == 1.0
        greedy = greedy_plans(model, [p["goal"] for p in plans], vocab, CPU)
    assert greedy == [vocab.encode(p["plan"]) for p in plans]


def test_plan_bench_reports_items_and_marks_a_wrong_expectation(toy):
    _, vocab, model, plans, bench, _, _ = toy
    planted = {"line": 99, "goal": plans[0]["goal"], "plan": ["git_log", "install"]}  # the toy learned ["build"]
    items = [*plans[:5], planted]
    with one_thread():
        results = run_plan_bench(model, Bench("plan", bench.path, items), vocab, CPU)
    assert [r["correct"] for r in results] == [True] * 5 + [False]
    assert results[0] == {"line": plans[0]["line"], "goal": plans[0]["goal"], "expected": ["STEP", "build", "EOS"],
                          "predicted": ["STEP", "build", "EOS"], "correct": True}
    assert results[-1]["expected"] == ["STEP", "git_log", "STEP", "install", "EOS"]
    assert results[-1]["predicted"] == ["STEP", "build", "EOS"] and results[-1]["line"] == 99


def test_plan_bench_rejects_goals_that_do_not_fit_and_unknown_actions(toy):
    _, vocab, model, _, bench, _, _ = toy
    too_long = Bench("plan", bench.path, [{"line": 3, "goal": "x" * (TOY_SEQ + 1), "plan": ["build"]}])
    with pytest.raises(CorpusError) as err:
        run_plan_bench(model, too_long, vocab, CPU)
    assert (err.value.line, err.value.field) == (3, "goal") and "97 bytes" in str(err.value)
    unknown = Bench("plan", bench.path, [{"line": 4, "goal": "build then deploy", "plan": ["build", "deploy"]}])
    with pytest.raises(CorpusError) as err:
        teacher_forced_accuracy(model, unknown, vocab, CPU)
    assert (err.value.line, err.value.field) == (4, "plan[1]") and "'deploy'" in str(err.value)


# --- the training loop's promises --------------------------------------------------------------

@pytest.fixture(scope="module")
def small_data():
    vocab = PlanVocab(ACTIONS)
    plans = [{"goal": "build it", "plan": ["build"]}, {"goal": "run the tests", "plan": ["test"]},
             {"goal": "lint then build", "plan": ["lint", "build"]}, {"goal": "build it", "plan": ["build"]},
             {"goal": "test, lint, build", "plan": ["test", "lint", "build"]}]
    return vocab, build_plan_data(plans, vocab, 24, 8, CPU)


def test_train_planner_logs_every_log_every_steps_and_ends_with_a_loadable_checkpoint(small_data):
    vocab, data = small_data
    model = small_planner()
    events = []
    cfg = TrainConfig(batch_size=4, warmup_steps=5, log_every=7)
    with one_thread():
        result = train_planner(model, data, cfg, steps=30, device=CPU, emit=events.append, vocab=vocab,
                               checkpoint_extra={"profile": "test"})
    metrics = [e for e in events if isinstance(e, MetricsLogged)]
    assert [e.step for e in metrics if "loss" in e.values] == [7, 14, 21, 28, 30]
    assert set(metrics[1].values) == {"loss", "tf_acc", "lr", "tokens_per_s", "step_ms"}
    weighted = [e for e in metrics if "weight/STEP" in e.values]
    assert len(weighted) == 1 and weighted[0] is events[0] and weighted[0].step == 0
    assert weighted[0].values["weight/STEP"] < weighted[0].values["weight/build"]
    assert "weight/PAD" not in weighted[0].values
    assert metrics[-1].values.keys() == {"coverage_min", "coverage_mean"}
    # 4 unique goals; "build it" appears twice and counts together
    assert metrics[-1].values["coverage_mean"] == pytest.approx(30 * 4 / 4)
    assert result.steps == 30 and not result.stopped and result.class_stats["classes_present"] == 5

    ckpts = [e for e in events if isinstance(e, CheckpointReady)]
    assert len(ckpts) == 1 and ckpts[0] is events[-1]
    ckpt = ckpts[0]
    assert (ckpt.step, ckpt.phase, ckpt.model, ckpt.name) == (30, "planner", "planner", "planner_000030")
    buf = io.BytesIO()
    torch.save(ckpt.payload, buf)
    buf.seek(0)
    payload = torch.load(buf, weights_only=True)
    assert payload["actions"] == ACTIONS and payload["step"] == 30 and payload["profile"] == "test"
    loaded, loaded_vocab = planner_from_payload(payload, CPU)
    assert loaded_vocab.names == vocab.names and loaded.cfg == model.cfg
    model.eval()
    with torch.no_grad():
        args = (data.goal_ids, data.goal_valid, data.plan_inputs)
        assert torch.equal(loaded(*args), model(*args))


def test_a_stop_before_the_first_step_still_checkpoints(small_data):
    vocab, data = small_data
    control = TrainingControl()
    control.stop()
    events = []
    result = train_planner(small_planner(), data, TrainConfig(batch_size=4), steps=10, device=CPU,
                           emit=events.append, vocab=vocab, control=control)
    assert result.stopped and result.steps == 0
    assert [type(e) for e in events] == [MetricsLogged, LogLine, MetricsLogged, CheckpointReady]
    assert events[-1].name == "planner_000000"
