"""Composite plans made at training time from the single-step goals, seeded.

The planner must read any request as a sequence of steps, whatever phrases each step. The corpus's
composites join a few thousand draws of the catalog's cores; the single-step goals hold every core in
every style (terse, question, shell command, typos, case). Joining those goals with the catalog's
connectors gives the planner each step in all the phrasings the policy learns from, in any order.
"""

from __future__ import annotations

import random

from navi_model.corpus.catalog import PAIR_JOINS, TRIPLE_JOINS  # the catalog's connectors
from navi_model.vocab import text_bytes


def _step(text: str, rng: random.Random) -> str:
    # a goal ends a sentence; inside a composite its closing marks would end it early
    text = text.rstrip(" .!?")
    return text[0].lower() + text[1:] if text and rng.random() < 0.7 else text


def composed_plans(goals: list[dict], actions: set[str], n: int, seed: int, max_bytes: int) -> list[dict]:
    """n composites of 2 or 3 single-step goals of distinct action intents -> [{"goal", "plan", "composed"}].

    goals: [{"goal", "intent"}] (any intent; only actions become steps). Every composite fits
    max_bytes (the planner's context) and is marked "composed": made here, not read from the corpus.
    """
    by_intent: dict[str, list[str]] = {}
    for g in goals:
        if g["intent"] in actions:
            by_intent.setdefault(g["intent"], []).append(g["goal"])
    names = sorted(by_intent)
    if len(names) < 3 or n <= 0:
        return []
    rng = random.Random(seed)
    rows: list[dict] = []
    tries = 0
    while len(rows) < n and tries < 20 * n:
        tries += 1
        size = 2 if rng.random() < 0.55 else 3
        intents = rng.sample(names, size)
        steps = [_step(rng.choice(by_intent[i]), rng) for i in intents]
        template = rng.choice(PAIR_JOINS if size == 2 else TRIPLE_JOINS)
        goal = template.format(**dict(zip("abc", steps)))
        if len(text_bytes(goal)) <= max_bytes:
            rows.append({"goal": goal, "plan": intents, "composed": True})
    return rows
