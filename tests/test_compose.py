"""Composites made from single-step goals for the planner (navi_model/compose.py, composed_share).

    python -m pytest -q tests/test_compose.py
"""

from dataclasses import replace

from navi_model.brain import planned_steps, planner_rows
from navi_model.compose import composed_plans
from navi_model.config import get_profile
from navi_model.corpus.load import load_corpus
from navi_model.vocab import text_bytes

GOALS = [{"goal": g, "intent": i} for g, i in (
    ("Build it please!", "build"), ("cargo b", "build"), ("run the tests?", "test"), ("pytest -q", "test"),
    ("LINT THE CODE", "lint"), ("ruff check .", "lint"), ("hello there", "greet"), ("git status", "git_status"))]
ACTIONS = {"build", "test", "lint", "git_status"}


def test_composites_are_seeded_fit_and_name_their_steps_in_order():
    rows = composed_plans(GOALS, ACTIONS, 200, seed=3, max_bytes=40)
    assert rows == composed_plans(GOALS, ACTIONS, 200, seed=3, max_bytes=40)
    assert rows != composed_plans(GOALS, ACTIONS, 200, seed=4, max_bytes=40)
    assert len(rows) == 200
    by_text = {g["goal"].rstrip(" .!?").lower(): g["intent"] for g in GOALS}
    for row in rows:
        assert len(text_bytes(row["goal"])) <= 40 and row["composed"]
        assert 2 <= len(row["plan"]) <= 3 and len(set(row["plan"])) == len(row["plan"])
        assert "greet" not in row["plan"]  # a chat intent is never a step (M-017)
        # every step's text is in the goal, in the plan's order
        at = [row["goal"].lower().find(next(t for t, i in by_text.items() if i == step and t in row["goal"].lower()))
              for step in row["plan"]]
        assert at == sorted(at) and min(at) >= 0, row
    assert {len(r["plan"]) for r in rows} == {2, 3}


def test_a_profile_with_composites_trains_the_planner_on_them_and_scales_its_steps(small_corpus_dir):
    corpus = load_corpus(small_corpus_dir)
    tiny = get_profile("tiny")
    plain = replace(tiny, planner_train=replace(tiny.planner_train, composed_share=0.0))
    composed = replace(tiny, planner_train=replace(tiny.planner_train, composed_share=1.0))
    assert planner_rows(corpus, plain) == corpus.plans
    rows = planner_rows(corpus, composed)
    assert rows[:len(corpus.plans)] == corpus.plans and len(rows) == 2 * len(corpus.plans)
    # steps come from the data (M-011): the made composites count as the planner's unique goals
    assert planned_steps(corpus, composed)["planner"] > planned_steps(corpus, plain)["planner"]
