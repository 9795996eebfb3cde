"""Held out by core (issue 16): the catalog, its seeded split into training and held-out cores,
and what the generated files hold of each side. Fast: no model is trained.

    python -m pytest -q tests/test_holdout.py

The rule: a held-out core never occurs, as whole words after holdout.normalise, in any training
line (goals, plan goals, dialogue prompts), whatever its wrapper, case, punctuation or typo. The
unseen benches (bench_policy_unseen, bench_plan, gallery) hold held-out cores only; the seen benches
(bench_policy, bench_plan_seen) training cores only, in lines no training file has.
"""

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from navi_model.corpus import catalog, generate, holdout
from navi_model.corpus.load import load_corpus, read_jsonl
from test_wild_benches import CONNECTORS as WILD_CONNECTORS

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "holdout_corpus"  # this checkout's files
TRAIN, HELD = holdout.split_cores()
BY_NAME = {s.name: s for s in catalog.INTENTS}
FOLLOW_UPS = holdout.split_follow_ups()  # kind -> (trained, held out)
# the wild plan bench's connectors; a generated "first X, then Y" may come after a wrapper ("navi, first ...")
CONNECTORS = {**WILD_CONNECTORS, "first X, then Y": lambda g: re.search(r"\bfirst .+, then ", g) is not None}
assert set(CONNECTORS) == set(catalog.CONNECTORS)
UNSEEN = ("policy_unseen", "plan", "gallery")
SEEN = ("policy", "plan_seen")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(CORPUS)


@pytest.fixture(scope="module")
def index():
    return holdout.CoreIndex(TRAIN), holdout.CoreIndex(HELD)


def core_texts(item) -> list[str]:
    """The texts of a bench item that hold cores: its goal, or its prompt and memory prompts, but not
    a prompt that follows a memory turn (it asks for a repeat or a recall: a follow-up, no core)."""
    texts = holdout.bench_texts(item)
    return texts[1:] if item.get("memory") else texts


def texts_of(bench):
    """(line, text) of every core-bearing text of a bench."""
    return [(it["line"], t) for it in bench.items for t in core_texts(it)]


# --- the catalog and its split

def test_every_intent_has_forty_distinct_cores_in_every_style():
    for spec in catalog.INTENTS:
        normalised = {holdout.normalise(c) for c in spec.cores}
        assert len(normalised) == len(spec.cores) >= 40, spec.name
        assert all(c == c.strip().lower() and c for c in spec.cores), spec.name
        styles = Counter(catalog.style_of(spec, c) for c in spec.cores)
        if not spec.chat:
            assert styles["terse"] >= 5 and styles["command"] + styles["question"] >= 20 and styles["polite"] >= 1, \
                (spec.name, styles)


def test_the_split_is_seeded_and_partitions_the_cores():
    assert holdout.split_cores() == (TRAIN, HELD)
    for spec in catalog.INTENTS:
        train, held = set(TRAIN[spec.name]), set(HELD[spec.name])
        assert train | held == set(spec.cores) and not train & held
        assert len(held) >= 8, spec.name
        assert set(spec.must_pass) <= train, spec.name


def test_no_core_holds_another_intents_core():
    # "check the build" may not hold a core of build: the phrase would be ambiguous
    every = [(s.name, c) for s in catalog.INTENTS for c in s.cores]
    bad = [(a, ca, b, cb) for a, ca in every for b, cb in every if a != b and holdout.contains(ca, cb)]
    assert not bad


def test_no_held_out_core_holds_a_training_core_or_is_held_by_one():
    train = [c for cores in TRAIN.values() for c in cores]
    held = [c for cores in HELD.values() for c in cores]
    bad = [(h, t) for h in held for t in train if holdout.contains(h, t) or holdout.contains(t, h)]
    assert not bad


def test_wrappers_connectors_and_follow_ups_hold_no_core():
    cores = holdout.catalog_cores()
    parts = (catalog.COMMAND_PREFIXES + catalog.COMMAND_SUFFIXES + catalog.QUESTION_PREFIXES
             + catalog.QUESTION_SUFFIXES + catalog.TERSE_PREFIXES + catalog.TERSE_SUFFIXES + catalog.POLITE_PREFIXES
             + catalog.POLITE_SUFFIXES + catalog.CHAT_PREFIXES + catalog.CHAT_SUFFIXES + catalog.FILLERS
             + generate.PLAN_PREFIXES + generate.PLAN_SOFT_PREFIXES + generate.PLAN_SUFFIXES
             + tuple(j.format(a="", b="", c="") for j in catalog.PAIR_JOINS + catalog.TRIPLE_JOINS)
             + catalog.AGAIN_FOLLOW_UPS + catalog.RECALL_FOLLOW_UPS + catalog.FOLLOW_UP_PREFIXES
             + catalog.FOLLOW_UP_SUFFIXES)
    assert [(p, holdout.shared_cores(p, cores)) for p in parts if holdout.shared_cores(p, cores)] == []
    # and no core holds a connector: a composite's steps are found where the joins are
    assert [c for c in cores if re.search(r"\b(and|then|first|after that|followed by)\b|[,;]", c)] == []


# --- the training files hold no held-out core

def test_no_training_line_holds_a_held_out_core(corpus):
    assert holdout.held_out_leaks(CORPUS) == []


def test_the_leak_check_covers_the_typod_lines(corpus, index):
    # about one training line in twelve has a typing slip; many no longer hold their core, and
    # they are checked like the rest (the test above reads every line)
    train, _ = index
    no_core = [g["goal"] for g in corpus.goals if not train.find(g["goal"])]
    assert len(no_core) >= 50
    slips = [holdout.normalise(t) for t in no_core]
    assert not [t for t in slips if any(f" {holdout.normalise(h)} " in f" {t} " for hs in HELD.values() for h in hs)]


@pytest.mark.parametrize("file,key", [("goals.jsonl", "goal"), ("plans.jsonl", "goal"),
                                      ("dialogues.jsonl", "prompt")])
def test_a_planted_held_out_core_is_named(tmp_path, file, key):
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS, folder)
    lines = (folder / file).read_text().splitlines()
    row = json.loads(lines[99])
    core = HELD["lint"][0]
    row[key] = f"{row[key]}, and then {core.upper()}!"  # any case, any punctuation
    lines[99] = json.dumps(row)
    (folder / file).write_text("\n".join(lines) + "\n")
    leaks = holdout.held_out_leaks(folder)
    assert len(leaks) == 1
    assert leaks[0].startswith(f"{file}:100: ") and f"the held-out core {core!r} of lint" in leaks[0]


def test_a_typo_that_makes_a_held_out_core_is_named(tmp_path):
    # a slip in a training line can spell a held-out core ("lint the code" -> "lint teh code")
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS, folder)
    misspelt = next(c for cs in HELD.values() for c in cs
                    if c in ("lint teh code", "buidl the project", "run teh test suite", "git sttaus", "show the dif",
                             "chekc the types", "waht is staged", "commti the changes", "trian the brain"))
    with open(folder / "goals.jsonl", "a") as f:
        f.write(json.dumps({"goal": f"Please {misspelt} now", "intent": "lint"}) + "\n")
    n = len((folder / "goals.jsonl").read_text().splitlines())
    leaks = holdout.held_out_leaks(folder)
    assert leaks == [f"goals.jsonl:{n}: 'Please {misspelt} now' holds the held-out core {misspelt!r} of "
                     f"{next(i for i, cs in HELD.items() if misspelt in cs)}"]


# --- follow-ups: asked in many words, the gallery's in held-out ones

def test_the_follow_up_split_is_seeded_and_keeps_the_first_phrasings_trained():
    assert holdout.split_follow_ups() == FOLLOW_UPS
    for kind, first in (("again", catalog.AGAIN_PROMPTS), ("recall", catalog.RECALL_PROMPTS)):
        trained, held = FOLLOW_UPS[kind]
        assert len(held) >= 5 and len(trained) >= 35 and not set(trained) & set(held)
        assert set(first) <= set(trained)
        # no held-out phrasing holds a trained one of either kind, or is held by one
        every = FOLLOW_UPS["again"][0] + FOLLOW_UPS["recall"][0]
        assert [(h, t) for h in held for t in every if holdout.contains(h, t) or holdout.contains(t, h)] == []


def test_training_dialogues_ask_follow_ups_in_many_words():
    rows = [obj for _, obj in read_jsonl(CORPUS / "dialogues.jsonl")]
    trained = holdout.CoreIndex({k: pair[0] for k, pair in FOLLOW_UPS.items()})
    asks = [r["prompt"] for r in rows if r["response"].endswith(" again.") or r["response"].startswith("You asked me")]
    assert len(set(asks)) >= 100  # until 2026-12-03: 7 phrasings, bare
    assert [a for a in asks if not trained.find(a)] == []


def test_the_gallery_asks_its_follow_ups_in_held_out_words(corpus):
    held = holdout.CoreIndex({k: pair[1] for k, pair in FOLLOW_UPS.items()})
    trained = holdout.CoreIndex({k: pair[0] for k, pair in FOLLOW_UPS.items()})
    asks = [it["prompt"] for it in corpus.benches["gallery"].items if it["memory"]]
    assert len(asks) == generate.GALLERY_MEMORY
    assert [a for a in asks if not held.find(a) or trained.find(a)] == []


def test_a_planted_held_out_follow_up_is_named(tmp_path):
    folder = tmp_path / "corpus"
    shutil.copytree(CORPUS, folder)
    lines = (folder / "dialogues.jsonl").read_text().splitlines()
    row = json.loads(lines[9])
    phrase = FOLLOW_UPS["recall"][1][0]
    row["prompt"] = f"Navi, {phrase.upper()}?"
    lines[9] = json.dumps(row)
    (folder / "dialogues.jsonl").write_text("\n".join(lines) + "\n")
    assert holdout.held_out_leaks(folder) == [f"dialogues.jsonl:10: {row['prompt']!r} holds the held-out recall "
                                              f"follow-up {phrase!r}"]


# --- the benches

@pytest.mark.parametrize("name", UNSEEN + SEEN)
def test_each_bench_text_holds_its_intents_cores_from_one_side_only(corpus, index, name):
    train, held = index
    own, other = (held, train) if name in UNSEEN else (train, held)
    responses = {s.response: s.name for s in catalog.INTENTS}
    bench = corpus.benches[name]
    assert texts_of(bench)
    for it in bench.items:
        for text in core_texts(it):
            assert other.find(text) == [], (name, it["line"], text)
            found = [intent for intent, _ in own.find(text)]
            if "plan" in it:
                assert found == it["plan"], (name, it["line"], text)  # one core a step, in order
            elif "intent" in it:
                assert found == [it["intent"]], (name, it["line"], text)
            else:  # gallery: the prompt's, or the memory turn's, intent answers
                want = responses[it["reference"]] if text == it["prompt"] else responses[it["memory"][0]["response"]]
                assert found == [want], (name, it["line"], text)


@pytest.mark.parametrize("name", UNSEEN + SEEN)
def test_no_bench_text_is_a_training_text(corpus, name):
    trained = holdout.training_texts(CORPUS)
    assert [t for _, t in texts_of(corpus.benches[name]) if holdout.normalise(t) in trained] == []


def test_bench_texts_are_not_shared_between_benches(corpus):
    seen: dict[str, str] = {}
    for name in UNSEEN + SEEN + ("paraphrase",):
        for line, t in texts_of(corpus.benches[name]):
            key = holdout.normalise(t)
            assert key not in seen, f"{name}:{line} {t!r} repeats {seen[key]}"
            seen[key] = f"{name}:{line}"


def test_the_unseen_policy_bench_holds_every_held_out_core(corpus, index):
    _, held = index
    found = Counter(core for it in corpus.benches["policy_unseen"].items for _, core in held.find(it["goal"]))
    assert set(found) == {c for cs in HELD.values() for c in cs}


def test_the_held_out_plan_bench_holds_every_held_out_action_core(corpus, index):
    # a bench of a sample of the cores measured which cores it drew: 40 plans drew 94 of the 180,
    # and 8 of the 11 that tiny seed 1's policy misreads (docs/benchmarks.md, 2026-12-03)
    _, held = index
    found = Counter(core for it in corpus.benches["plan"].items for _, core in held.find(it["goal"]))
    assert set(found) == {c for a in generate.ACTIONS for c in HELD[a]}


def test_the_seen_plan_bench_joins_cores_no_training_plan_joins(corpus, index):
    train, _ = index
    trained = {tuple(c for _, c in train.find(p["goal"])) for p in corpus.plans if len(p["plan"]) > 1}
    for it in corpus.benches["plan_seen"].items:
        assert tuple(c for _, c in train.find(it["goal"])) not in trained, it


def plan_goals(corpus, name):
    if name == "plans.jsonl":
        return [p for p in corpus.plans if len(p["plan"]) > 1]
    return corpus.benches[name].items


@pytest.mark.parametrize("name", ["plans.jsonl", "plan", "plan_seen"])
def test_every_connector_and_a_third_of_three_step_plans(corpus, name):
    plans = plan_goals(corpus, name)
    goals = [p["goal"].lower() for p in plans]
    missing = [c for c, found in CONNECTORS.items() if not any(found(g) for g in goals)]
    assert not missing, f"{name}: no composite joined by {missing}"
    lengths = Counter(len(p["plan"]) for p in plans)
    assert set(lengths) == {2, 3}
    assert lengths[3] >= 0.3 * len(plans), (name, lengths)
    if name == "plans.jsonl":  # of every line, single steps included (fewer since each core has a line)
        assert lengths[3] >= 0.2 * len(corpus.plans)


def test_training_lines_vary_in_case_punctuation_filler_and_typos(corpus, index):
    train, _ = index
    goals = [g["goal"] for g in corpus.goals]
    n = len(goals)
    assert sum(g.isupper() for g in goals) >= 0.04 * n
    assert sum(g[:1].isupper() and not g.isupper() for g in goals) >= 0.08 * n
    assert sum(g[-1] in "?!." for g in goals) >= 0.3 * n
    assert sum(g.lower().startswith(tuple(f.strip(", ") for f in catalog.FILLERS)) for g in goals) >= 0.1 * n
    assert sum(not train.find(g) for g in goals) >= 0.02 * n  # a slip hid the core
    # every style of core is trained: terse and shell commands too
    styles = Counter(catalog.style_of(BY_NAME[g["intent"]], core) for g in corpus.goals
                     for _, core in train.find(g["goal"])[:1])
    assert min(styles.values()) >= 100, styles


def test_texts_fit_the_smallest_profile(corpus):
    from navi_model.config import PROFILES
    from navi_model.talker import memory_text

    policy = min(p.policy.seq_len for p in PROFILES.values())
    planner = min(p.planner.encoder.seq_len for p in PROFILES.values())
    talker = min(p.talker.encoder.seq_len for p in PROFILES.values())
    responses = {s.response for s in catalog.INTENTS}
    for g in corpus.goals:
        assert len(g["goal"].encode()) <= policy
    for p in corpus.plans:
        assert len(p["goal"].encode()) <= planner
    for d in corpus.dialogues:
        assert len(memory_text(d["prompt"], d["response"]).encode()) <= talker
    for bench in corpus.benches.values():
        for it in bench.items:
            limit = planner if bench.kind == "plan" else policy if bench.kind in ("policy", "paraphrase") else talker
            for t in holdout.bench_texts(it):
                assert len(t.encode()) <= limit, (bench.path.name, t)
            for turn in it.get("memory", []):
                assert len(memory_text(turn["prompt"], turn["response"]).encode()) <= talker
    assert max(len(r.encode()) for r in responses) + 1 + generate.MAX_GOAL_BYTES <= talker


def test_the_generator_refuses_a_leak(monkeypatch):
    # the generator's own guard: a training phrasing that would hold a held-out core is never emitted
    rules = generate.Rules(TRAIN, HELD, set())
    core = HELD["clean"][0]
    assert not rules.ok(f"please {core}", ["clean"], False, 64)
    assert rules.ok(f"please {core}", ["clean"], True, 64)
    assert not rules.ok(f"please {TRAIN['clean'][0]}", ["clean"], True, 64)
    assert not rules.ok(f"{TRAIN['clean'][0]} and then {TRAIN['build'][0]}", ["clean"], False, 116)
    assert rules.ok(f"{TRAIN['clean'][0]} and then {TRAIN['build'][0]}", ["clean", "build"], False, 116)


def test_the_generators_wild_guard_holds_every_wild_bench():
    # by default the guard reads the folder the wild benches sit in: 150+ requests, 40+ plans and
    # 40+ gallery prompts, none of which a generated line may equal (it read an empty folder once)
    texts = generate.wild_texts()
    assert len(texts) >= 230
    assert texts == generate.wild_texts(CORPUS)


def test_read_jsonl_sees_the_generated_files():
    # the worktree's files, not an installed copy: every generated file is here and parses
    for name in generate.GENERATED:
        assert read_jsonl(CORPUS / name)
