"""Deterministic generator of the bundled corpus (assets/corpus/*.jsonl).

    python -m navi_model.corpus.generate [--out DIR]

Same code, same bytes: every choice comes from one seeded random.Random over sorted lists,
and a test regenerates the corpus and compares it byte for byte with the committed files.

Bench lines are held out: a goal or prompt in a bench file never appears in a training file.
Every must-pass paraphrase's core is trained under other wrappers (failure log M-019), but the
bare paraphrase itself is never a training line.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from navi_model.corpus import catalog
from navi_model.corpus.catalog import INTENTS, IntentSpec

SEED = 20261124
GOALS_PER_INTENT = 120  # training phrasings per intent: enough for every core to meet many wrappers
POLICY_BENCH_SIZE = 64
PLAN_BENCH_SINGLE = 7
PLAN_BENCH_COMPOSITE = 14
TRAIN_COMPOSITES = 3000  # composites must be many: 480 were memorised (11/21 on held-out plans)
CONVERSATIONS = 400
GALLERY_SIZE = 50


def _phrasings(spec: IntentSpec) -> list[str]:
    """Every wrapped phrasing of every core of an intent, in a fixed order."""
    out = []
    for core in spec.cores:
        prefixes, suffixes = catalog.wrappers_for(spec, core)
        for p in prefixes:
            for s in suffixes:
                out.append(f"{p}{core}{s}")
    return out


def _split_goals(rng: random.Random) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per intent: (training phrasings, held-out phrasings), disjoint; bare must-pass lines held out."""
    train, held = {}, {}
    for spec in INTENTS:
        pool = [g for g in _phrasings(spec) if g not in spec.must_pass]
        rng.shuffle(pool)
        # every core must be trained: take one phrasing of each core first, then fill up
        chosen: list[str] = []
        for core in spec.cores:
            chosen.append(next(g for g in pool if core in g and g not in chosen))
        for g in pool:
            if len(chosen) >= GOALS_PER_INTENT:
                break
            if g not in chosen:
                chosen.append(g)
        train[spec.name] = sorted(chosen)
        held[spec.name] = [g for g in pool if g not in chosen]
    return train, held


def _check_unique(goals_by_intent: dict[str, list[str]]) -> None:
    seen: dict[str, str] = {}
    for intent, goals in goals_by_intent.items():
        for g in goals:
            if seen.setdefault(g, intent) != intent:
                raise AssertionError(f"phrasing {g!r} belongs to both {seen[g]} and {intent}")


def _composite(rng: random.Random, n_actions: int, cores_by_intent: dict[str, tuple[str, ...]]) -> tuple[str, list[str]]:
    names = sorted(cores_by_intent)
    intents = rng.sample(names, n_actions)
    cores = [rng.choice(cores_by_intent[i]) for i in intents]
    joins = catalog.PAIR_JOINS if n_actions == 2 else catalog.TRIPLE_JOINS
    template = rng.choice(joins)
    goal = template.format(**dict(zip("abc", cores)))
    if rng.random() < 0.3:
        goal = rng.choice(("please ", "navi, ", "can you ")) + goal
    return goal, intents


def _plans(rng: random.Random, train_goals: dict[str, list[str]], held_goals: dict[str, list[str]]):
    actions = catalog.action_intents()
    cores = {s.name: tuple(c for c in s.cores if not c.startswith(catalog.QUESTION_WORDS)) for s in actions}
    train_plans: list[dict] = []
    for spec in actions:  # single-step plans reuse the policy's training phrasings
        for g in train_goals[spec.name]:
            train_plans.append({"goal": g, "plan": [spec.name]})
    seen = {p["goal"] for p in train_plans}
    n_single = len(train_plans)
    while len(train_plans) < n_single + TRAIN_COMPOSITES:
        goal, plan = _composite(rng, 2 if rng.random() < 0.65 else 3, cores)  # triples are the hard case: 35%
        if goal not in seen:
            seen.add(goal)
            train_plans.append({"goal": goal, "plan": plan})
    bench: list[dict] = []
    for spec in rng.sample(list(actions), PLAN_BENCH_SINGLE):
        bench.append({"kind": "plan", "goal": held_goals[spec.name][0], "plan": [spec.name]})
    composites = 0
    while composites < PLAN_BENCH_COMPOSITE:
        goal, plan = _composite(rng, 3 if composites % 4 == 3 else 2, cores)
        if goal not in seen:
            seen.add(goal)
            bench.append({"kind": "plan", "goal": goal, "plan": plan})
            composites += 1
    return train_plans, bench


def _dialogues(rng: random.Random, train_goals: dict[str, list[str]]):
    by_name = {s.name: s for s in INTENTS}
    names = sorted(by_name)
    rows = []
    for c in range(CONVERSATIONS):
        conv = f"c{c:04d}"
        n_turns = rng.choice((1, 2, 2, 3))
        last: IntentSpec | None = None
        for turn in range(n_turns):
            followup = last is not None and rng.random() < 0.5
            if followup and rng.random() < 0.5:
                prompt = rng.choice(catalog.AGAIN_PROMPTS)
                response = last.again
            elif followup:
                prompt = rng.choice(catalog.RECALL_PROMPTS)
                response = f"You asked me to {last.description}."
            else:
                last = by_name[rng.choice(names)]
                prompt = rng.choice(train_goals[last.name])
                response = last.response
            rows.append({"conversation": conv, "turn": turn, "prompt": prompt, "response": response})
    return rows


def _gallery(rng: random.Random, held_goals: dict[str, list[str]], used: set[str]):
    by_name = {s.name: s for s in INTENTS}
    names = sorted(by_name)
    rows = []
    for i in range(GALLERY_SIZE - 8):
        spec = by_name[names[i % len(names)]]
        prompt = next(g for g in held_goals[spec.name] if g not in used)
        used.add(prompt)
        rows.append({"kind": "gallery", "prompt": prompt, "reference": spec.response, "memory": []})
    for i in range(8):  # memory cases: the answer depends on the earlier dialogue
        spec = by_name[names[(3 * i + 1) % len(names)]]
        earlier = {"prompt": next(g for g in held_goals[spec.name] if g not in used), "response": spec.response}
        used.add(earlier["prompt"])
        if i % 2 == 0:
            rows.append({"kind": "gallery", "prompt": catalog.AGAIN_PROMPTS[i % 4],
                         "reference": spec.again, "memory": [earlier]})
        else:
            rows.append({"kind": "gallery", "prompt": catalog.RECALL_PROMPTS[i % 3],
                         "reference": f"You asked me to {spec.description}.", "memory": [earlier]})
    return rows


def build_corpus() -> dict[str, list[dict]]:
    """Every file of the corpus as a list of JSON objects, keyed by file name."""
    rng = random.Random(SEED)
    train_goals, held_goals = _split_goals(rng)
    _check_unique(train_goals)
    _check_unique(held_goals)

    files: dict[str, list[dict]] = {}
    files["intents.jsonl"] = [
        {"intent": s.name, "description": s.description, "meta": s.meta, "action": not (s.meta or s.chat)}
        for s in INTENTS
    ]
    files["goals.jsonl"] = [{"goal": g, "intent": i} for i in sorted(train_goals) for g in train_goals[i]]

    # policy bench: held-out phrasings spread over every intent, three per intent where possible
    bench_policy, k = [], 0
    while len(bench_policy) < POLICY_BENCH_SIZE:
        for spec in INTENTS:
            if len(bench_policy) < POLICY_BENCH_SIZE and k < len(held_goals[spec.name]):
                bench_policy.append({"kind": "policy", "goal": held_goals[spec.name][k], "intent": spec.name})
        k += 1
    files["bench_policy.jsonl"] = bench_policy
    used = {r["goal"] for r in bench_policy}
    for spec in INTENTS:  # later users of held-out lines must not reuse bench lines
        held_goals[spec.name] = [g for g in held_goals[spec.name] if g not in used]

    files["bench_paraphrase.jsonl"] = [
        {"kind": "paraphrase", "goal": p, "intent": s.name} for s in INTENTS for p in s.must_pass
    ]
    train_plans, bench_plan = _plans(rng, train_goals, held_goals)
    files["plans.jsonl"] = train_plans
    files["bench_plan.jsonl"] = bench_plan
    files["dialogues.jsonl"] = _dialogues(rng, train_goals)
    files["gallery.jsonl"] = _gallery(rng, held_goals, used | {r["goal"] for r in bench_plan})
    return files


def render(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, sort_keys=False).encode("utf-8") + b"\n" for r in rows)


def write_corpus(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in build_corpus().items():
        path = out / name
        path.write_bytes(render(rows))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    from navi_model.assets import corpus_dir

    ap = argparse.ArgumentParser(description="regenerate navi's bundled corpus")
    ap.add_argument("--out", type=Path, default=None, help="folder to write (default: the bundled assets/corpus)")
    args = ap.parse_args(argv)
    for path in write_corpus(args.out or corpus_dir()):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
