"""The whole brain's preflight and `check`.

    python -m pytest tests/test_brain.py -q
"""

import json
from dataclasses import replace

import pytest

from navi_model.assets import corpus_dir
from navi_model.brain import planned_gates, planned_steps, preflight
from navi_model.config import get_profile
from navi_model.corpus.load import load_corpus
from navi_model.gates import class_share_gate
from navi_model.planner import PlanVocab, action_shares
from navi_tui.cli import main


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(corpus_dir())


def test_preflight_passes_on_the_bundled_corpus(corpus):
    gates, data = preflight(corpus, get_profile("tiny"))
    assert [g.name for g in gates] == ["truncation_policy", "truncation_planner", "truncation_talker", "grad_check",
                                       "grad_flow", "padding", "vocab", "noise_share"]
    assert all(g.passed for g in gates) and data is not None
    assert gates[3].value < 1e-5  # float64 reaches ~1e-6


def test_seq_len_one_short_is_refused_before_step_0(corpus):
    longest = max(len(g["goal"].encode()) for g in corpus.goals)
    tiny = get_profile("tiny")
    short = replace(tiny, policy=replace(tiny.policy, seq_len=longest - 1))
    gates, data = preflight(corpus, short)
    trunc = next(g for g in gates if g.name == "truncation_policy")
    assert not trunc.passed and trunc.value >= 1
    assert data is None  # nothing is built, so nothing can train


def test_an_action_at_27_percent_of_the_planners_targets_fails_class_share(corpus):
    # M-002: plans where one action (build) is 27% of the steps the CTC loss is trained on
    vocab = PlanVocab([i.name for i in corpus.intents if i.action])
    others = [a for a in vocab.actions if a != "build"]
    plans = [["build", others[i % len(others)]] for i in range(27)] + [[others[i % len(others)]] for i in range(46)]
    _, targets = vocab.encode_batch(plans, 8)
    stats = action_shares(targets, vocab)
    assert stats["share/build"] == pytest.approx(27 / 100) and stats["share_max"] == stats["share/build"]
    assert not class_share_gate(stats, 0.2).passed
    # the bundled corpus's plans: no action near it
    _, data = preflight(corpus, get_profile("tiny"))
    fair = action_shares(data.plan.plan_targets, data.vocab)
    assert class_share_gate(fair, 0.2).passed and fair["share_max"] < 0.1


def test_planned_gates(corpus):
    profile = get_profile("tiny")
    _, data = preflight(corpus, profile)
    gates = {g.name: g for g in planned_gates(corpus, profile, data, planned_steps(corpus, profile))}
    assert set(gates) == {"coverage_policy", "coverage_planner", "coverage_talker", "class_share", "memory_prefix"}
    assert all(g.passed for g in gates.values())
    few = {m: 1 for m in ("policy", "planner", "talker")}  # one step cannot show every goal 3 times (M-011)
    assert not {g.name: g for g in planned_gates(corpus, profile, data, few)}["coverage_policy"].passed


def test_check_json_lists_every_preflight_gate(capsys):
    assert main(["--no-ui", "check", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [g["name"] for g in doc["gates"]]
    for name in ("grad_check", "grad_flow", "padding", "vocab", "truncation_policy", "coverage_talker",
                 "class_share", "memory_prefix"):
        assert name in names
    assert doc["ok"] is True and set(doc["gates"][0]) == {"name", "value", "threshold", "passed", "summary"}
