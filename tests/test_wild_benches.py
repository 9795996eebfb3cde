"""The hand-written wild benches (assets/holdout_corpus/*_wild.jsonl): their shape, and their separation
from everything the brain trains on (navi_model/corpus/holdout.py). Fast: no model is trained.

    python -m pytest -q tests/test_wild_benches.py
"""

import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from navi_model.corpus import catalog, holdout
from navi_model.corpus.load import BUNDLED_BENCHES, WILD_BENCHES, load_bench, load_corpus, load_intents, read_jsonl

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "assets" / "holdout_corpus"  # this checkout's files, whichever navi_assets is installed
BENCHES = CORPUS  # beside the generated files, so that a run loads them with the rest

# file -> (kind, minimum number of lines, the bundled bench whose line format it copies)
WILD = {
    "bench_policy_wild.jsonl": ("policy", 150, "bench_policy.jsonl"),
    "bench_plan_wild.jsonl": ("plan", 40, "bench_plan.jsonl"),
    "gallery_wild.jsonl": ("gallery", 40, "gallery.jsonl"),
}
BY_NAME = {s.name: s for s in catalog.INTENTS}
ACTIONS = {s.name for s in catalog.action_intents()}

# every way of joining steps the plan bench must hold; each test is on the lowercased goal
CONNECTORS = {
    "and": lambda g: re.search(r" and (?!then\b|after that\b)", g) is not None,
    "and then": lambda g: " and then " in g,
    "then": lambda g: re.search(r"(?<!\band) then ", g) is not None and not g.startswith("first "),
    ",": lambda g: "," in g,
    ";": lambda g: ";" in g,
    "after that": lambda g: "after that" in g,
    "followed by": lambda g: "followed by" in g,
    "first X, then Y": lambda g: re.match(r"first .+, then ", g) is not None,
}


def raw(name: str) -> list[dict]:
    return [obj for _, obj in read_jsonl(BENCHES / name)]


def all_texts() -> list[tuple[str, str]]:
    """(file, text) for every text of every wild line: goals, prompts, memory prompts."""
    return [(name, t) for name in WILD for it in raw(name) for t in holdout.bench_texts(it)]


@pytest.fixture(scope="module")
def cores():
    return holdout.catalog_cores()


@pytest.fixture(scope="module")
def training():
    return holdout.training_texts(CORPUS)


@pytest.mark.parametrize("name", sorted(WILD))
def test_loads_with_the_eval_loader_and_meets_its_size(name):
    kind, minimum, _ = WILD[name]
    # the call `navi-tui --no-ui eval --bench FILE.jsonl` makes: the kind comes from the lines
    bench = load_bench(BENCHES / name, load_intents(CORPUS))
    assert bench.kind == kind
    assert len(bench.items) >= minimum, f"{name}: {len(bench.items)} lines, want {minimum}"


@pytest.mark.parametrize("name", sorted(WILD))
def test_lines_have_the_bundled_format(name):
    _, _, bundled = WILD[name]
    keys = list(json.loads((CORPUS / bundled).read_text().splitlines()[0]))
    text = (BENCHES / name).read_text(encoding="utf-8")
    assert text.endswith("\n") and text.isascii()
    for n, line in enumerate(text.splitlines(), start=1):
        obj = json.loads(line)
        assert list(obj) == keys, f"{name}:{n}: keys {list(obj)}, the bundled files use {keys}"
        assert line == json.dumps(obj, ensure_ascii=False), f"{name}:{n}: not in json.dumps' default form"
        for turn in obj.get("memory", []):
            assert list(turn) == ["prompt", "response"], f"{name}:{n}"


def test_every_intent_is_covered_in_wild_policy():
    counts = Counter(it["intent"] for it in raw("bench_policy_wild.jsonl"))
    for spec in catalog.INTENTS:
        want = 8 if spec.name in ACTIONS else 5
        assert counts[spec.name] >= want, f"{spec.name}: {counts[spec.name]} lines, want {want}"


def test_plans_use_only_action_intents_and_hold_three_step_plans():
    plans = [it["plan"] for it in raw("bench_plan_wild.jsonl")]
    for plan in plans:
        assert set(plan) <= ACTIONS, f"{plan}: meta and chat intents are never plan steps (M-017)"
        assert len(set(plan)) == len(plan), f"{plan}: a step repeated"
    lengths = Counter(len(p) for p in plans)
    assert lengths[3] >= 12
    assert lengths[1] >= 3  # single-step wild goals too
    assert set(lengths) <= {1, 2, 3}


def test_every_connector_occurs_in_wild_plan():
    goals = [it["goal"].lower() for it in raw("bench_plan_wild.jsonl") if len(it["plan"]) > 1]
    missing = [c for c, found in CONNECTORS.items() if not any(found(g) for g in goals)]
    assert not missing, f"no composite joined by {missing}"


def test_gallery_references_are_the_catalog_answers():
    responses = {s.response: s for s in catalog.INTENTS}
    assert len(responses) == len(catalog.INTENTS)  # each answer names one intent
    covered = set()
    for it in raw("gallery_wild.jsonl"):
        if not it["memory"]:
            assert it["reference"] in responses, it
            covered.add(responses[it["reference"]].name)
            continue
        # a follow-up: the earlier turn is answered as the catalog answers it, and the reference is
        # that intent's "again" text or the recall of its description, as gallery.jsonl has them
        assert len(it["memory"]) == 1, it
        spec = responses[it["memory"][0]["response"]]
        assert it["reference"] in (spec.again, f"You asked me to {spec.description}."), it
    assert covered == set(BY_NAME), f"no gallery line for {sorted(set(BY_NAME) - covered)}"


def test_texts_fit_the_smallest_profile():
    # eval refuses a text longer than the model's encoder (exit 2): every profile must take them all
    from navi_model.config import PROFILES
    from navi_model.talker import memory_text

    policy = min(p.policy.seq_len for p in PROFILES.values())
    planner = min(p.planner.encoder.seq_len for p in PROFILES.values())
    plan_len = min(p.planner.plan_len for p in PROFILES.values())
    talker = min(p.talker.encoder.seq_len for p in PROFILES.values())
    response_len = min(p.talker.response_len for p in PROFILES.values())
    for it in raw("bench_policy_wild.jsonl"):
        assert len(it["goal"].encode()) <= policy, it
    for it in raw("bench_plan_wild.jsonl"):
        assert len(it["goal"].encode()) <= planner and 2 * len(it["plan"]) + 1 <= plan_len, it
    for it in raw("gallery_wild.jsonl"):
        assert len(it["prompt"].encode()) <= talker and len(it["reference"].encode()) + 1 <= response_len, it
        for turn in it["memory"]:
            assert len(memory_text(turn["prompt"], turn["response"]).encode()) <= talker, it


def test_no_wild_line_shares_a_core_or_a_training_line(cores, training):
    assert len(training) > 1000  # goals, plan goals and dialogue prompts were all read
    bad = holdout.violations([t for _, t in all_texts()], cores, training)
    assert not bad, "\n".join(bad)


def test_no_duplicates_within_or_across_the_wild_files():
    seen: dict[str, str] = {}
    dups = []
    for name, text in all_texts():
        key = holdout.normalise(text)
        if key in seen:
            dups.append(f"{text!r} in {name} repeats {seen[key]}")
        seen.setdefault(key, f"{text!r} in {name}")
    assert not dups, "\n".join(dups)


def test_normalise():
    assert holdout.normalise("  Don't   CAT main.py,  ok?! ") == "dont cat main py ok"
    assert holdout.normalise("git diff --stat; du -sh .") == "git diff --stat du -sh"


def test_a_planted_core_is_found(cores, training):
    # whole words, any case, any of the stripped marks between them
    assert holdout.shared_cores("git log --oneline", cores) == ["git log"]
    assert holdout.shared_cores("um, RUN THE TESTS?? plz", cores) == ["run the tests"]
    assert holdout.shared_cores("gst, then Git Diff!", cores) == ["git diff"]
    assert holdout.shared_cores("yo navi, wipe the cache", cores) == ["wipe the cache"]
    # not a core: inside another word, or split by a word
    assert holdout.shared_cores("rerun the testsuite", cores) == []
    assert holdout.shared_cores("catalog", cores) == []
    assert holdout.shared_cores("git, really, log", cores) == []
    # planted into a real wild line, the separation check fails and names the core
    wild = [t for _, t in all_texts()]
    planted = wild[:5] + [wild[5] + " and check the gpu"] + wild[6:]
    bad = holdout.violations(planted, cores, training)
    assert len(bad) == 1 and "'check the gpu'" in bad[0]


def test_a_planted_training_line_fails_the_separation(training):
    goal = read_jsonl(CORPUS / "goals.jsonl")[0][1]["goal"]
    prompt = next(obj["prompt"] for _, obj in read_jsonl(CORPUS / "dialogues.jsonl")
                  if obj["response"].endswith(" again."))  # a follow-up: it holds no core
    wild = [t for _, t in all_texts()]
    # the equality check alone (no cores to match) catches a training line in another case or punctuation
    bad = holdout.violations(wild + [goal.upper() + "!", f"{prompt}."], [], training)
    assert len(bad) == 2
    assert "equals the training line goals.jsonl:1" in bad[0]
    assert "equals the training line dialogues.jsonl:" in bad[1]
    # and with the cores too, the planted training goal is caught
    assert holdout.violations([goal], holdout.catalog_cores(), training)


def test_package_data_installs_the_benches():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "holdout_corpus/*.jsonl" in data["navi_assets"]  # the wild files are in the held-out corpus folder
    assert sorted(p.name for p in BENCHES.glob("*_wild.jsonl")) == sorted(WILD)
    assert not (REPO / "assets" / "benches").exists()
    # a run loads them as optional benches of the corpus, under these names
    assert {BUNDLED_BENCHES[k] for k in WILD_BENCHES} == {(name, kind) for name, (kind, _, _) in WILD.items()}
    corpus = load_corpus(CORPUS)
    assert all(corpus.benches[k].items for k in WILD_BENCHES)
