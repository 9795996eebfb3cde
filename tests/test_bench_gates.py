"""The unseen, wild and gap gates (navi_model/bench_gates.py), the noise_share gate, and the
encoder's reading of case and n-grams: each gate fails on its planted fault and passes a healthy run.

    python -m pytest -q tests/test_bench_gates.py
"""

from dataclasses import replace

import pytest
import torch

from navi_model import bench_gates
from navi_model.brain import preflight
from navi_model.config import GateThresholds, get_profile
from navi_model.corpus.load import load_corpus
from navi_model.gates import noise_share_gate
from navi_model.model import EncoderConfig, PolicyModel, hashed_ngrams, hashed_words
from navi_model.vocab import encode_encoder_batch

TINY = get_profile("tiny").gates
BASE = get_profile("base").gates
HELD_OUT = {"policy", "paraphrase", "policy_unseen", "policy_wild", "plan_seen", "plan", "plan_wild", "gallery"}


def rows(right: int, wrong: int) -> list[dict]:
    """Per-item bench results: `right` correct, then `wrong` misses."""
    return ([{"goal": f"g{i}", "expected": "build", "predicted": "build", "correct": True} for i in range(right)]
            + [{"goal": f"m{i}", "expected": "build", "predicted": "lint", "correct": False} for i in range(wrong)])


def by_name(gates) -> dict:
    return {g.name: g for g in gates}


def test_a_policy_that_generalises_passes_every_policy_gate():
    results = {"policy": rows(64, 0), "paraphrase": rows(24, 0), "policy_unseen": rows(200, 20),
               "policy_wild": rows(190, 15)}
    gates = by_name(bench_gates.judge(results, HELD_OUT, TINY))
    assert set(gates) == {"policy_bench", "paraphrase_bench", "policy_unseen_bench", "policy_wild_bench", "policy_gap"}
    assert all(g.passed for g in gates.values()), [g for g in gates.values() if not g.passed]
    assert gates["policy_gap"].value == pytest.approx(1 - 200 / 220)


def test_a_policy_that_memorised_fails_unseen_wild_and_gap():
    # M-007 in the form issue 16 found: every seen line right, a little over half the unseen ones
    results = {"policy": rows(64, 0), "paraphrase": rows(24, 0), "policy_unseen": rows(125, 95),
               "policy_wild": rows(108, 97)}
    gates = by_name(bench_gates.judge(results, HELD_OUT, TINY))
    assert gates["policy_bench"].passed and gates["paraphrase_bench"].passed
    assert not gates["policy_unseen_bench"].passed and not gates["policy_wild_bench"].passed
    assert not gates["policy_gap"].passed and gates["policy_gap"].value == pytest.approx(1 - 125 / 220)


def test_the_thresholds_come_from_the_profile():
    results = {"policy_unseen": rows(92, 8)}  # 0.92: tiny's bar is 0.9, base's 0.95
    assert by_name(bench_gates.judge(results, HELD_OUT, TINY))["policy_unseen_bench"].passed
    assert not by_name(bench_gates.judge(results, HELD_OUT, BASE))["policy_unseen_bench"].passed
    assert not by_name(bench_gates.judge(results, HELD_OUT, replace(TINY, unseen_intents=0.95)))[
        "policy_unseen_bench"].passed


def test_the_plan_bench_of_a_held_out_corpus_is_judged_as_unseen():
    results = {"plan_seen": rows(30, 0), "plan": rows(35, 5), "plan_wild": rows(48, 6)}  # 0.875 and 0.889
    held = by_name(bench_gates.judge(results, HELD_OUT, TINY))
    assert held["plan_bench"].threshold == TINY.unseen_plans == 0.85 and held["plan_bench"].passed
    assert held["plan_wild_bench"].passed and held["plan_gap"].value == pytest.approx(0.125)
    assert not held["plan_gap"].passed  # 0.125 over the 0.1 allowed
    # a corpus without the split (the bundled one, most --data folders): the plan bench keeps its own bar
    plain = by_name(bench_gates.judge({"plan": rows(35, 5)}, {"policy", "paraphrase", "plan", "gallery"}, TINY))
    assert set(plain) == {"plan_bench"} and plain["plan_bench"].threshold == TINY.plan_bench
    assert not plain["plan_bench"].passed


def test_an_empty_unseen_bench_fails_its_gate_and_its_gap():
    gates = by_name(bench_gates.judge({"policy": rows(10, 0), "policy_unseen": []}, HELD_OUT, TINY))
    assert not gates["policy_unseen_bench"].passed and not gates["policy_gap"].passed


def test_noise_share_gate_catches_noise_that_never_happened():
    rates = {"policy": 0.3, "planner": 0.3, "talker": 0.0}
    healthy = {"policy": 0.3 / 1.3, "planner": 0.22, "talker": 0.0}
    assert noise_share_gate(healthy, rates, 0.8).passed
    # every noisy variant too long for the context: the copies the profile asked for are not there
    starved = {"policy": 0.3 / 1.3, "planner": 0.05, "talker": 0.0}
    g = noise_share_gate(starved, rates, 0.8)
    assert not g.passed and "lowest planner" in g.summary
    assert not noise_share_gate(healthy, {"policy": 0.0}, 0.8).passed  # nothing asked: n/a, never a pass


def test_preflight_measures_the_noise_the_profile_asks_for(small_corpus_dir):
    corpus = load_corpus(small_corpus_dir)
    tiny = get_profile("tiny")
    gates, data = preflight(corpus, tiny)
    noise = by_name(gates)["noise_share"]
    assert noise.passed and set(data.noisy_share) == {"policy", "planner", "talker"}
    quiet = replace(tiny, **{m: replace(getattr(tiny, m), noise_rate=0.0)
                             for m in ("policy_train", "planner_train", "talker_train")})
    assert "noise_share" not in by_name(preflight(corpus, quiet)[0])  # a profile without noise has none to check


def test_a_folded_encoder_reads_upper_and_lower_case_alike():
    torch.manual_seed(0)
    folded = PolicyModel(EncoderConfig(seq_len=32, d_model=32, n_heads=2, fold_case=True, ngram_buckets=97), 3).eval()
    plain = PolicyModel(EncoderConfig(seq_len=32, d_model=32, n_heads=2), 3).eval()
    ids, valid = encode_encoder_batch(["build it pls", "BUILD IT PLS", "BuIlD iT pLs"], 32)
    with torch.no_grad():
        out = folded(ids, valid)
        assert torch.allclose(out[0], out[1], atol=1e-6) and torch.allclose(out[0], out[2], atol=1e-6)
        assert not torch.allclose(plain(ids, valid)[0], plain(ids, valid)[1], atol=1e-6)


def test_hashed_ngrams_see_the_bytes_before_each_position():
    ids, _ = encode_encoder_batch(["xab", "yab", "ab"], 8)
    two, three, four = hashed_ngrams(ids, 4093)
    # the last position ends "ab" in every row: one bigram, but three different trigrams
    # ("xab", "yab", and "ab" after the left pad)
    assert len({int(r) for r in two[:, -1]}) == 1
    assert len({int(r) for r in three[:, -1]}) == 3
    assert all(int(t.max()) < 4093 and int(t.min()) >= 0 for t in (two, three, four))


def test_hashed_words_give_every_byte_of_a_word_its_whole_word():
    ids, _ = encode_encoder_batch(["lint?!", "pls lint it", "lints", "trailing train"], 16)
    rows = hashed_words(ids, 4093)
    word_of = lambda r, w: rows[r][_span(ids[r], w)]  # noqa: E731 - the rows under word w of text r
    lint = set(word_of(0, "lint").tolist()) | set(word_of(1, "lint").tolist())
    assert len(lint) == 1 and 0 not in lint  # one row for "lint", wherever it stands, whatever follows
    assert int(word_of(2, "lints")[0]) not in lint  # another word is another row
    trailing, train = word_of(3, "trailing"), word_of(3, "train")
    assert len(set(trailing.tolist())) == 1 and int(trailing[0]) != int(train[0])  # not half "train"
    # spaces, punctuation and pads read no word (row 0, which stays zero)
    assert all(int(r) == 0 for r, b in zip(rows[0], ids[0]) if not chr(int(b)).isalnum())
    assert int(rows.max()) <= 4093


def _span(row: torch.Tensor, word: str) -> slice:
    text = bytes(int(b) for b in row).decode("latin-1")
    start = text.index(word)
    return slice(start, start + len(word))


def test_the_no_word_row_adds_nothing_and_learns_nothing():
    model = PolicyModel(EncoderConfig(seq_len=16, d_model=8, n_heads=2, n_layers=1, word_buckets=31), 3)
    assert float(model.encoder.word.weight.detach()[0].abs().sum()) == 0.0
    ids, valid = encode_encoder_batch(["lint it!", "  ok  "], 16)
    model(ids, valid).sum().backward()
    assert float(model.encoder.word.weight.grad[0].abs().sum()) == 0.0
    assert float(model.encoder.word.weight.grad[1:].abs().sum()) > 0.0
