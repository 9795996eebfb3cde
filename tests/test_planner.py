"""The planner: plan vocabulary, action shares, the CTC and step-count loss, greedy and counted
decoding, and a trained toy whose decoded plans are its plans.

    cd /work/main && PYTHONPATH=/work/main python -m pytest tests/test_planner.py -q
"""

import contextlib
import io
import itertools
import math
from dataclasses import asdict

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.config import TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import Bench, CorpusError, load_corpus
from navi_model.events import CheckpointReady, LogLine, MetricsLogged
from navi_model.model import EncoderConfig
from navi_model.planner import (
    BOS, COUNT_PATH_WEIGHT, ENDTHINK, EOS, PAD, SPECIALS, STEP, THINK, PlannerConfig, PlannerModel, PlanOutputs,
    PlanVocab, action_shares, bench_loss, build_plan_data, counted_actions, decode_actions, decode_plans,
    greedy_actions, joint_count_path, label_runs, plan_actions, plan_loss, planner_from_payload, reread_steps,
    run_plan_bench, segment_steps, step_texts, train_planner,
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
                        step_layers=1, plan_len=plan_len)
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
        decode_plans(small_planner(vocab_size=12), ["build it"], vocab, CPU)


# --- action shares and the loss ---------------------------------------------------------------

def test_action_shares_count_the_actions_alone():
    vocab = PlanVocab(["a", "b", "c", "d", "e"])  # "e" never occurs
    _, targets = vocab.encode_batch([["a", "b"], ["c", "d", "a"], ["b", "c", "d"]], 8)
    assert plan_actions(targets).tolist() == [[6, 7, PAD, PAD], [8, 9, 6, PAD], [7, 8, 9, PAD]]
    stats = action_shares(targets, vocab)
    assert stats["share/a"] == stats["share/b"] == pytest.approx(2 / 8) and stats["share/e"] == 0
    assert stats["share_max"] == pytest.approx(0.25) and stats["classes_present"] == 4
    assert "share/STEP" not in stats and "share/EOS" not in stats  # no targets of the CTC loss


def test_plan_loss_is_ctc_per_step_over_each_goals_own_bytes():
    torch.manual_seed(0)
    vocab = PlanVocab(ACTIONS)
    _, targets = vocab.encode_batch([["build"], ["test", "lint"]], 8)
    valid = torch.tensor([[False, False, True, True, True, True], [False, True, True, True, True, True]])
    logits = torch.randn(2, 6, vocab.size)
    # by hand: each row's real frames from the front, CTC per row over its steps, the mean over rows
    want = []
    for i, (row, steps) in enumerate(((slice(2, 6), [6]), (slice(1, 6), [7, 8]))):
        lp = logits[i, row].log_softmax(-1)[:, None]
        ctc = torch.nn.functional.ctc_loss(lp, torch.tensor([steps]), [lp.shape[0]], [len(steps)], blank=PAD)
        want.append(ctc)  # reduction "mean" already divides by the steps
    torch.testing.assert_close(plan_loss(logits, valid, targets), torch.stack(want).mean())
    # the pads' frames never count: other logits there change nothing
    moved = logits.clone()
    moved[0, :2] = 50.0
    moved[1, 0] = -50.0
    torch.testing.assert_close(plan_loss(moved, valid, targets), plan_loss(logits, valid, targets))
    # under DDP each rank divides by the global rows over world_size: two shards sum to the whole
    halves = plan_loss(logits[:1], valid[:1], targets[:1], denom=2.0) + plan_loss(logits[1:], valid[1:], targets[1:], denom=2.0)
    torch.testing.assert_close(halves, plan_loss(logits, valid, targets))


def test_greedy_actions_collapse_repeats_and_drop_blanks_and_pads():
    V = 9
    best = torch.tensor([[3, 6, 6, PAD, 6, 7, 7, PAD], [6, 6, 8, 8, PAD, PAD, 8, PAD]])
    valid = torch.tensor([[False, True, True, True, True, True, True, True], [True] * 8])
    logits = torch.nn.functional.one_hot(best, V).float()
    got = greedy_actions(logits, valid)
    # row 0: its pad (label 3) is ignored; 6 6 -> 6, blank, 6 again is a new step, 7 7 -> 7
    assert got[0].tolist() == [6, 6, 7, PAD, PAD, PAD, PAD, PAD]
    assert got[1].tolist() == [6, 8, 8, PAD, PAD, PAD, PAD, PAD]


def test_plan_loss_adds_the_step_counts_cross_entropy():
    torch.manual_seed(0)
    vocab = PlanVocab(ACTIONS)
    _, targets = vocab.encode_batch([["build"], ["test", "lint"]], 8)
    valid = torch.ones(2, 6, dtype=torch.bool)
    frames, counts = torch.randn(2, 6, vocab.size), torch.randn(2, 3)
    ce = torch.nn.functional.cross_entropy(counts, torch.tensor([0, 1]))  # 1 step, 2 steps
    with_count = plan_loss(PlanOutputs(frames, counts), valid, targets)
    torch.testing.assert_close(with_count, plan_loss(frames, valid, targets) + ce)


def _best_paths_by_brute_force(lp: torch.Tensor) -> dict[int, tuple[float, list[int]]]:
    """Every path over blank and the actions -> per run count, the log-prob and runs of the best."""
    labels = [PAD, *range(len(SPECIALS), lp.shape[1])]
    best: dict[int, tuple[float, list[int]]] = {}
    for path in itertools.product(labels, repeat=lp.shape[0]):
        found = [v for t, v in enumerate(path) if v != PAD and (t == 0 or path[t - 1] != v)]
        score = sum(lp[t, v].item() for t, v in enumerate(path))
        if score > best.get(len(found), (-math.inf,))[0]:
            best[len(found)] = (score, found)
    return best


def _best_path_by_brute_force(lp: torch.Tensor, steps: int) -> list[int]:
    """The runs of the most probable path with `steps` runs."""
    return _best_paths_by_brute_force(lp)[steps][1]


def test_counted_actions_is_the_best_path_with_that_many_steps():
    torch.manual_seed(0)
    V, G, real = len(SPECIALS) + 3, 7, 5
    valid = torch.zeros(40, G, dtype=torch.bool)
    valid[:, G - real:] = True
    logits = 2 * torch.randn(40, G, V)
    steps = torch.randint(1, 4, (40,))
    got = counted_actions(logits, valid, steps)  # one batch: each row its own count
    for i in range(40):
        want = _best_path_by_brute_force(logits[i, G - real:].log_softmax(-1), int(steps[i]))
        assert [v for v in got[i].tolist() if v != PAD] == want, i


def test_joint_count_path_is_the_best_count_and_path_together():
    torch.manual_seed(1)
    V, G, real, M = len(SPECIALS) + 3, 7, 5, 3
    valid = torch.zeros(30, G, dtype=torch.bool)
    valid[:, G - real:] = True
    logits, counts = 2 * torch.randn(30, G, V), 2 * torch.randn(30, M)
    got = joint_count_path(logits, valid, counts)
    for i in range(30):
        paths = _best_paths_by_brute_force(logits[i, G - real:].log_softmax(-1))
        clp = counts[i].log_softmax(-1)
        k = max(range(1, M + 1), key=lambda k: clp[k - 1].item() + COUNT_PATH_WEIGHT * paths[k][0])
        assert [v for v, _, _ in label_runs(got[i].tolist())] == paths[k][1], i


def test_told_the_count_a_step_greedy_reads_as_blanks_is_found():
    # "lint and rg -l main": the second step's bytes lean to blank everywhere, so greedy drops it
    V, first = len(SPECIALS) + 3, len(SPECIALS)
    lp = torch.full((1, 6, V), -4.0)
    lp[0, :, PAD] = 0.0
    lp[0, 1, first] = 2.0  # step one, sure
    lp[0, 4, first + 2] = -0.5  # step two: its best byte, still under the blank
    valid = torch.ones(1, 6, dtype=torch.bool)
    assert greedy_actions(lp, valid)[0, :2].tolist() == [first, PAD]
    assert counted_actions(lp, valid, torch.tensor([2]))[0, :2].tolist() == [first, first + 2]
    # a count over the goal's bytes is cut to them: 9 steps cannot fit 6 bytes
    assert (counted_actions(lp, valid, torch.tensor([9]))[0] != PAD).sum() == 6


def test_the_joint_count_drops_a_step_that_would_split_a_word_and_keeps_one_the_frames_hold():
    V, first = len(SPECIALS) + 3, len(SPECIALS)
    # "yarn install": one step whose frames are sure; a count head that says 2 (0.6 against 0.4)
    lp = torch.full((1, 6, V), -6.0)
    lp[0, :, PAD] = 0.0
    lp[0, 2, first] = 3.0
    valid = torch.ones(1, 6, dtype=torch.bool)
    says_two = torch.tensor([[0.4, 0.6, 1e-6]]).log()
    assert (counted_actions(lp, valid, says_two.argmax(-1) + 1)[0] != PAD).sum() == 2  # the head alone: 2
    one = joint_count_path(lp, valid, says_two)
    assert [v for v, _, _ in label_runs(one[0].tolist())] == [first]
    # a second step the frames do hold (under the blank, as an unseen phrasing's is) stays
    lp[0, 4, first + 2] = -0.2  # costs the path 0.2 nats (weighted: less), less than the head's log(0.6 / 0.4)
    two = joint_count_path(lp, valid, says_two)
    assert [v for v, _, _ in label_runs(two[0].tolist())] == [first, first + 2]
    # a count over the goal's bytes is never chosen: 3 steps cannot fit 2 bytes
    short = joint_count_path(lp[:, :2], valid[:, :2], torch.tensor([[1e-6, 1e-6, 1.0]]).log())
    assert len(label_runs(short[0].tolist())) <= 2


def test_a_planner_saved_before_the_count_head_loads_and_decodes_greedily():
    model = small_planner()
    args = asdict(model.cfg)
    del args["count_head"]  # what a checkpoint of the first CTC planner holds
    old = PlannerModel(PlannerConfig(**{**args, "count_head": False, "encoder": model.cfg.encoder}), model.vocab_size)
    payload = {"model": old.state_dict(), "model_args": args, "vocab_size": old.vocab_size, "actions": ACTIONS}
    loaded, _ = planner_from_payload(payload, CPU)
    ids, valid = encode_encoder_batch(["build it"], 24)
    out = loaded(ids, valid)
    assert loaded.count_head is None and out.counts is None
    assert torch.equal(decode_actions(out, valid), greedy_actions(out.frames, valid))


# --- re-reading each step with a reader (the policy) ------------------------------------------

def test_label_runs_collapse_repeats_and_split_at_blanks():
    a, b = len(SPECIALS), len(SPECIALS) + 1
    assert label_runs([PAD, a, a, PAD, a, b, b, PAD]) == [(a, 1, 2), (a, 4, 4), (b, 5, 6)]
    assert label_runs([PAD, PAD]) == []


def test_step_texts_cut_at_the_connector_nearest_the_middle_and_drop_connectors():
    goal = "fmt the code and then run lint"  # 30 bytes, left-padded in a grid of 40: byte j at column 10 + j
    runs = [(6, 10, 11), (8, 36, 39)]  # "fm" and "lint"
    # connectors begin at "and" (13) and "then" (17) in bytes 2..26; 13 is nearest the middle, 14
    assert step_texts(goal, runs, 40) == ["fmt the code", "run lint"]
    g = "review the diff, then build with sbt, then tst thanks"  # 53 bytes in 60: byte j at 7 + j
    assert step_texts(g, [(6, 17, 20), (7, 29, 33), (8, 50, 52)], 60) == ["review the diff", "build with sbt",
                                                                         "tst thanks"]
    assert step_texts("lint", [(8, 36, 39)], 40) == ["lint"]
    # no connector between the runs: the space nearest the middle, else the middle itself
    assert step_texts("cargo clean cargo build", [(6, 17, 21), (7, 35, 39)], 40) == ["cargo clean", "cargo build"]
    assert step_texts("abcd", [(6, 36, 36), (7, 39, 39)], 40) == ["ab", "cd"]
    # a connector word inside a word is no connector ("android", "thence"), and case is no matter
    assert step_texts("build android THEN test", [(6, 17, 21), (7, 36, 39)], 40) == ["build android", "test"]


def test_a_reader_sure_of_a_step_outvotes_an_unsure_planner_and_no_opinion_keeps_its_label():
    first = len(SPECIALS)
    frames = torch.full((4, first + 3), -3.0)
    frames[0:2, first] = 0.5  # step one: the planner leans to "build", barely
    frames[0:2, first + 1] = 0.3
    frames[3, first + 2] = 4.0  # step two: "lint", sure
    runs = [(first, 0, 1), (first + 2, 3, 3)]
    sure_test = torch.tensor([[-5.0, -0.01, -5.0], [-1.1, -1.1, -1.1]])
    assert reread_steps(frames, runs, sure_test) == [first + 1, first + 2]
    assert reread_steps(frames, runs, torch.zeros(2, 3)) == [first, first + 2]
    # a special the head picked stays as it came: the plan it is in cannot match
    assert reread_steps(frames, [(EOS, 0, 1)], sure_test[:1]) == [EOS]


def test_decode_plans_with_a_reader_reads_pieces_cut_at_connectors_and_takes_the_readers_labels():
    model = small_planner()
    vocab = PlanVocab(ACTIONS)
    goals = ["build it", "test, then lint"]
    with one_thread():
        seen: list[str] = []

        def always_lint(texts):  # a reader sure that every step is "lint"
            seen.extend(texts)
            out = torch.full((len(texts), 3), -20.0)
            out[:, 2] = 0.0
            return out

        read = decode_plans(model, goals, vocab, CPU, reader=always_lint)
    # the whole goals are candidates (one step), and the pieces at the connectors, bare of them
    assert {"build it", "test, then lint", "test", "lint"} <= set(seen)
    assert not any(t.startswith(("then", ",")) or t.endswith(",") for t in seen)
    for plan in read:
        steps = [t for t in plan if t >= len(SPECIALS)]
        assert steps and all(t == vocab.id("lint") for t in steps)


def _planted(goal: str, spikes: dict[int, int], count_probs: list[float], G: int = 40):
    """Frames of a goal left-padded to G: the blank everywhere but the planted (byte -> action) spikes,
    and a count head of the given probabilities (1..len steps)."""
    V, first = len(SPECIALS) + 3, len(SPECIALS)
    off = G - len(goal)
    frames = torch.full((1, G, V), -8.0)
    frames[0, :, PAD] = 0.0
    for byte, action in spikes.items():
        frames[0, off + byte, first + action] = 4.0
    valid = torch.zeros(1, G, dtype=torch.bool)
    valid[0, off:] = True
    return PlanOutputs(frames, torch.tensor([count_probs]).log()), valid


def _reader(table: dict[str, int]):
    """A reader sure of the texts in table (text -> action index), with no opinion on the rest."""
    seen: list[str] = []

    def read(texts):
        seen.extend(texts)
        out = torch.zeros(len(texts), 3)
        for i, t in enumerate(texts):
            if t in table:
                out[i] = -20.0
                out[i, table[t]] = 0.0
        return out
    return read, seen


def test_steps_whose_spikes_fall_inside_one_step_are_cut_at_the_connector():
    # both runs spike inside "fmt the code" (as "which files did i t|ouch" did); the cut between them
    # would split that step mid-word, the connector makes the pieces a user meant
    goal = "fmt the code, then run lint"
    outputs, valid = _planted(goal, {1: 0, 9: 2}, [0.2, 0.7, 0.1])
    read, seen = _reader({"fmt the code": 0, "run lint": 2})
    first = len(SPECIALS)
    assert [v for v, _, _ in label_runs(joint_count_path(outputs.frames, valid, outputs.counts)[0].tolist())] == \
        [first, first + 2]
    assert step_texts(goal, label_runs(joint_count_path(outputs.frames, valid, outputs.counts)[0].tolist()), 40) \
        != ["fmt the code", "run lint"]  # the path's cut is the wrong one
    assert segment_steps(outputs, valid, [goal], read) == [[first, first + 2]]
    assert {"fmt the code", "run lint"} <= set(seen)


def test_a_goal_without_connectors_is_cut_between_its_paths_runs():
    goal = "cargo clean cargo build"
    outputs, valid = _planted(goal, {8: 1, 20: 0}, [0.1, 0.8, 0.1])
    read, seen = _reader({})
    first = len(SPECIALS)
    assert segment_steps(outputs, valid, [goal], read) == [[first + 1, first]]
    assert "cargo clean" in seen and "cargo build" in seen


def test_the_pieces_reading_settles_a_count_the_head_is_unsure_of():
    first = len(SPECIALS)
    goal = "build it, lint and test"
    # the head cannot tell 2 from 3; the frames spike once per step
    outputs, valid = _planted(goal, {2: 0, 12: 2, 20: 1}, [0.02, 0.49, 0.49])
    read, _ = _reader({"build it": 0, "lint": 2, "test": 1})
    assert segment_steps(outputs, valid, [goal], read) == [[first, first + 2, first + 1]]
    # a reader sure that "lint and test" is one step, and frames that spike once in it, make it 2
    outputs, valid = _planted(goal, {2: 0, 12: 2}, [0.02, 0.49, 0.49])
    read, _ = _reader({"build it": 0, "lint and test": 2})
    assert segment_steps(outputs, valid, [goal], read) == [[first, first + 2]]


def test_a_goal_of_many_connectors_tries_a_bounded_number_of_cuts(monkeypatch):
    import navi_model.planner as planner
    goal = ",".join("abcdefghijklmnopqrstuvwxyz0123456789")  # 35 commas: C(35, 6) is 1.6 million cuts
    outputs, valid = _planted(goal, {0: 0, 20: 1, 40: 2}, [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.5], G=80)
    tried = []
    pieces = planner._pieces
    monkeypatch.setattr(planner, "_pieces", lambda b, cut: tried.append(cut) or pieces(b, cut))
    read, _ = _reader({})
    labels = segment_steps(outputs, valid, [goal], read)[0]
    assert 1 <= len(labels) <= 7
    # k = 1 and 2 try their 1 and 35 connector cuts; from k = 3 (C(35, 2) = 595 > MAX_CUTS) each count
    # tries its path's cut alone
    assert len(tried) <= 1 + 35 + 5 and planner.MAX_CUTS < 595


def test_a_goal_of_nothing_but_connectors_keeps_its_paths_labels():
    outputs, valid = _planted(", ;", {1: 1}, [0.9, 0.05, 0.05])
    read, seen = _reader({})
    assert segment_steps(outputs, valid, [", ;"], read) == [[len(SPECIALS) + 1]]
    assert seen == []


# --- the model ---------------------------------------------------------------------------------

def test_every_parameter_gets_a_finite_nonzero_gradient():
    vocab = PlanVocab(ACTIONS)
    model = small_planner()
    ids, valid = encode_encoder_batch(["build it", "run the tests please", "lint"], 24)
    _, targets = vocab.encode_batch([["build"], ["test", "lint"], ["lint", "build", "test"]], 8)
    out = model(ids, valid)
    assert out.frames.shape == (3, 24, vocab.size) and out.counts.shape == (3, model.cfg.max_steps)
    plan_loss(out, valid, targets).backward()  # the count head's loss reaches it too
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or p.grad.abs().sum() == 0]
    assert dead == []


def test_goal_pads_reach_no_byte_and_every_byte_reads_the_whole_goal():
    model = small_planner().eval()
    ids, valid = encode_encoder_batch(["build it", "run the tests please"], 24)
    with torch.no_grad():
        base = model(ids, valid)
        pad_changed = ids.clone()
        pad_changed[:, 0] = 200  # position 0 is a left pad in both rows
        moved = model(pad_changed, valid)
        torch.testing.assert_close(moved.frames[valid], base.frames[valid])
        torch.testing.assert_close(moved.counts, base.counts)
        real_changed = ids.clone()
        real_changed[:, -1] = ord("?")  # the last byte: the first byte's reading changes too
        first = valid.float().argmax(dim=1)
        out = model(real_changed, valid).frames
        assert all((out[i, first[i]] - base.frames[i, first[i]]).abs().max() > 1e-4 for i in range(2))


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
    # the profiles' readings (folded case, n-grams, words): without them, or warm from a policy, CTC
    # spends its first few hundred steps emitting blanks only
    cfg = PlannerConfig(EncoderConfig(seq_len=TOY_SEQ, d_model=48, n_layers=1, n_heads=4, fold_case=True,
                                      ngram_buckets=509, word_buckets=509), step_layers=1, plan_len=TOY_PLAN)
    model = PlannerModel(cfg, vocab.size)
    data = build_plan_data(plans, vocab, TOY_SEQ, TOY_PLAN, CPU)
    events = []
    train_cfg = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=20, log_every=50)
    with one_thread():
        result = train_planner(model, data, train_cfg, steps=450, device=CPU, emit=events.append, vocab=vocab)
    bench = Bench("plan", corpus.benches["plan"].path, plans)
    return corpus, vocab, model, plans, bench, events, result


def test_the_decode_plans_of_a_trained_toy_are_its_plans(toy):
    _, vocab, model, plans, bench, events, result = toy
    losses = [e.values["loss"] for e in events if isinstance(e, MetricsLogged) and "loss" in e.values]
    assert len(plans) == 44 and {len(p["plan"]) for p in plans} == {1, 2, 3}
    assert losses[-1] < 0.01 * losses[0] and result.final_loss == losses[-1]
    assert result.coverage_min >= 150  # 450 steps * 16 / 44 goals
    with one_thread():
        greedy = decode_plans(model, [p["goal"] for p in plans], vocab, CPU)
        assert bench_loss(model, bench, vocab, CPU) < 0.01 * losses[0]
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
        bench_loss(model, unknown, vocab, CPU)
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
    assert set(metrics[1].values) == {"loss", "plan_acc", "lr", "tokens_per_s", "step_ms"}
    shares = [e for e in metrics if "share/build" in e.values]
    assert len(shares) == 1 and shares[0] is events[0] and shares[0].step == 0
    assert shares[0].values["share/build"] == pytest.approx(4 / 8)  # of the 8 steps of the 5 plans
    assert not any(k.startswith("weight/") for k in shares[0].values)  # CTC weighs every action alike
    assert metrics[-1].values.keys() == {"coverage_min", "coverage_mean"}
    # 4 unique goals; "build it" appears twice and counts together
    assert metrics[-1].values["coverage_mean"] == pytest.approx(30 * 4 / 4)
    assert result.steps == 30 and not result.stopped and result.class_stats["classes_present"] == 3

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
        args = (data.goal_ids, data.goal_valid)
        assert all(torch.equal(a, b) for a, b in zip(loaded(*args), model(*args)))


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


def test_a_checkpoint_of_the_old_decoder_planner_is_refused_by_name():
    from navi_model.payload import PayloadError, check_payload

    vocab = PlanVocab(ACTIONS)
    payload = {"model": {}, "model_args": {"encoder": {"seq_len": 24}, "dec_layers": 2, "plan_len": 8},
               "step": 10, "vocab_size": vocab.size, "actions": ACTIONS}
    with pytest.raises(PayloadError, match="decoder planner .* train a new run"):
        check_payload("planner", payload)
