"""Typing noise for training inputs (navi_model/noise.py): seeded, one change per copy, within the
model's context, and counted as its clean source for coverage.

    python -m pytest -q tests/test_noise.py
"""

import random
from dataclasses import replace

import pytest
import torch

from navi_model.config import get_profile
from navi_model.corpus.load import load_corpus
from navi_model.assets import corpus_dir
from navi_model.brain import build_brain_data, noisy_rows
from navi_model.data import build_policy_data
from navi_model.noise import KINDS, augment, augment_conversations, noisy_share, noisy_variant
from navi_model.talker import build_talk_data

CPU = torch.device("cpu")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_noise_changes_the_text_the_way_people_type(kind):
    rng = random.Random(7)
    text = "run the unit tests"
    outs = {KINDS[kind](text, rng) for _ in range(30)}
    assert text not in outs or kind == "case"  # a case change may land on the same text; the others never
    assert outs - {text}
    for out in outs:
        if kind == "case":
            assert out.lower() == text
        elif kind in ("drop",):
            assert len(out) == len(text) - 1
        elif kind in ("swap", "neighbour"):
            assert len(out) == len(text) and sum(a != b for a, b in zip(out, text)) in (1, 2)
        elif kind in ("repeat", "double_space", "punctuation"):
            assert len(out) == len(text) + 1


def test_the_noise_is_seeded_and_fits_the_context():
    rows = [{"goal": f"show the git log {i}", "intent": "git_log"} for i in range(200)]
    a = augment(rows, "goal", 0.3, seed=5, max_bytes=20)
    assert a == augment(rows, "goal", 0.3, seed=5, max_bytes=20)
    assert a != augment(rows, "goal", 0.3, seed=6, max_bytes=20)
    copies = a[len(rows):]
    assert 0.2 < len(copies) / len(rows) < 0.4  # about the rate
    assert all(len(c["goal"].encode()) <= 20 and c["goal"] != c["source"] for c in copies)
    assert all(c["intent"] == "git_log" for c in copies)  # what the model must answer is never noised
    assert noisy_share(a, "goal") == len(copies) / len(a)
    assert augment(rows, "goal", 0.0, seed=5) is rows and noisy_share(rows, "goal") == 0.0
    assert noisy_variant("ab", random.Random(0), max_bytes=1) is None  # nothing fits: no copy


def test_a_noisy_copy_counts_as_its_source_for_coverage():
    goals = [{"goal": "build it", "intent": "build"}, {"goal": "run the tests", "intent": "test"}]
    noisy = augment(goals, "goal", 1.0, seed=1)
    data = build_policy_data(noisy, ["build", "test"], 32, CPU)
    assert data.n == 4 and data.n_unique == 2
    assert data.goal_index.tolist() == [0, 1, 0, 1]


def test_noisy_conversations_keep_their_turns_together_and_in_order():
    rows = [{"conversation": f"c{c}", "turn": t, "prompt": f"build the project {c}", "response": "Starting the build."}
            for c in range(20) for t in range(3)]
    out = augment_conversations(rows, 0.5, seed=3)
    copies = out[len(rows):]
    assert copies and len(copies) % 3 == 0
    assert [r["turn"] for r in copies] == [0, 1, 2] * (len(copies) // 3)
    talk = build_talk_data(out, get_profile("tiny").talker, CPU)  # refuses turns out of order
    assert talk.n_unique == 20


def test_the_profiles_noise_reaches_every_model_and_its_share_is_measured():
    corpus = load_corpus(corpus_dir())
    tiny = get_profile("tiny")
    profile = replace(tiny, **{name: replace(getattr(tiny, name), noise_rate=0.25)
                               for name in ("policy_train", "planner_train", "talker_train")})
    rows = noisy_rows(corpus, profile)
    data = build_brain_data(corpus, profile)
    for model, key in (("policy", "goal"), ("planner", "goal"), ("talker", "prompt")):
        assert 0.1 < data.noisy_share[model] < 0.3, model
        assert data.noisy_share[model] == noisy_share(rows[model], key)
    assert data.policy.n_unique == len({g["goal"] for g in corpus.goals})
