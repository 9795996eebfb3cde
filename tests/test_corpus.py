"""The bundled corpus and its loader.

    python -m pytest tests/test_corpus.py -q
"""

import json
import shutil
from pathlib import Path

import pytest

from navi_model.corpus import catalog, generate, holdout
from navi_model.corpus.generate import GENERATED, write_corpus
from navi_model.corpus.load import (BUNDLED_BENCHES, OPTIONAL_BENCHES, REQUIRED_BENCHES, WILD_BENCHES, CorpusError,
                                    load_bench, load_corpus)

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "holdout_corpus"  # this checkout's files, whatever is installed
WILD_FILES = sorted(BUNDLED_BENCHES[k][0] for k in WILD_BENCHES)


def corpus_dir():
    return CORPUS

REQUIRED_INTENTS = {
    "build", "test", "check", "lint", "format", "docs_lint", "git_status", "git_diff", "git_log",
    "file_read", "file_search", "memory_add", "memory_search", "gpu_status", "disk_usage", "greet", "help",
    "train", "eval",
}


AGAIN_AND_RECALL = set(catalog.AGAIN_PROMPTS) | set(catalog.RECALL_PROMPTS)  # follow-ups, not cores


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(corpus_dir())


def test_regeneration_is_byte_identical(tmp_path):
    written = write_corpus(tmp_path)
    assert sorted(p.name for p in written) == sorted(GENERATED)
    # the folder holds the generated files and the hand-written wild benches, nothing else
    assert sorted(p.name for p in corpus_dir().glob("*.jsonl")) == sorted([*GENERATED, *WILD_FILES])
    for path in written:
        assert path.read_bytes() == (corpus_dir() / path.name).read_bytes(), f"{path.name} differs"


def test_regeneration_leaves_the_wild_benches_alone(copy):
    before = {name: (copy / name).read_bytes() for name in WILD_FILES}
    written = write_corpus(copy)
    assert not {p.name for p in written} & set(WILD_FILES)
    assert {name: (copy / name).read_bytes() for name in WILD_FILES} == before


def test_catalog_has_the_required_intents(corpus):
    names = set(corpus.intent_names)
    assert len(names) >= 20
    assert REQUIRED_INTENTS <= names
    meta = {i.name for i in corpus.intents if i.meta}
    assert meta == {"train", "eval"}
    assert not any(i.action for i in corpus.intents if i.meta)


def test_bench_sizes(corpus):
    assert set(corpus.benches) == set(BUNDLED_BENCHES)
    assert len(corpus.benches["policy"].items) == 64
    assert len(corpus.benches["plan"].items) == 80
    assert all(len(it["plan"]) >= 2 for it in corpus.benches["plan"].items)  # composite goals
    assert len(corpus.benches["plan_seen"].items) == 80
    assert 45 <= len(corpus.benches["gallery"].items) <= 55
    assert len(corpus.benches["policy_unseen"].items) >= 100
    for name in corpus.intent_names:  # the unseen bench spreads over every intent
        assert sum(it["intent"] == name for it in corpus.benches["policy_unseen"].items) >= 4, name


def test_training_file_sizes(corpus):
    # the tiny profile's steps scale with the unique lines: GOALS_PER_INTENT per intent, or one line per
    # training core (and the must-pass repeats) where an intent has more training cores than that
    train, _ = holdout.split_cores()
    want = {s.name: max(generate.GOALS_PER_INTENT,
                        len(train[s.name]) + (generate.MUST_PASS_LINES - 1) * len(s.must_pass)) for s in catalog.INTENTS}
    assert len(corpus.goals) == len({g["goal"] for g in corpus.goals}) == sum(want.values())
    actions = sum(want[s.name] for s in catalog.action_intents())
    assert len(corpus.plans) == len({p["goal"] for p in corpus.plans}) == actions + generate.TRAIN_COMPOSITES
    assert 750 <= len(corpus.dialogues) <= 850
    # drawn from more goals than the 2640 of before, and (2026-12-03) follow-ups in about 90 phrasings,
    # wrapped: the talker's steps scale with these unique prompts
    assert len({d["prompt"] for d in corpus.dialogues}) <= 800


def test_check_the_build_is_a_must_pass_paraphrase_of_check(corpus):
    para = {it["goal"]: it["intent"] for it in corpus.benches["paraphrase"].items}
    assert para["check the build"] == "check"
    assert para["remember that the build is flaky"] == "memory_add"


def test_bench_lines_are_not_training_lines(corpus):
    # not even in another case or punctuation: compared after holdout.normalise
    trained = holdout.training_texts(corpus_dir())
    for name, bench in corpus.benches.items():
        if name == "paraphrase":  # the bare must-pass cores: checked below
            continue
        texts = [t for it in bench.items for t in holdout.bench_texts(it) if t not in AGAIN_AND_RECALL]
        leaked = [t for t in texts if holdout.normalise(t) in trained]
        assert leaked == [], name
    leaked = [it["goal"] for it in corpus.benches["paraphrase"].items if holdout.normalise(it["goal"]) in trained]
    assert leaked == []


def test_every_must_pass_core_is_trained_under_other_wrappers(corpus):
    # M-019: the paraphrase itself is held out, but its core is trained
    train_goals = [g["goal"] for g in corpus.goals]
    for it in corpus.benches["paraphrase"].items:
        assert it["goal"] not in train_goals
        assert sum(holdout.contains(g, it["goal"]) for g in train_goals) >= 3, it["goal"]


def test_some_dialogues_carry_memory(corpus):
    assert sum(d["turn"] > 0 for d in corpus.dialogues) > 100


def test_plans_never_contain_meta_intents(corpus):
    meta = {i.name for i in corpus.intents if i.meta}
    assert not any(set(p["plan"]) & meta for p in corpus.plans)


# --- the loader's errors: file, line and field, for every kind of bad line

@pytest.fixture
def copy(tmp_path):
    dest = tmp_path / "corpus"
    shutil.copytree(corpus_dir(), dest)
    return dest


def replace_line(path, line_no, text: bytes):
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = text
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("file,line,text,field,message", [
    ("goals.jsonl", 3, b'{"goal": "build it", "intent": ', None, "not valid JSON"),
    ("goals.jsonl", 5, b'{"goal": "build it"}', "intent", "missing"),
    ("goals.jsonl", 7, b'{"goal": 42, "intent": "build"}', "goal", "expected str, got int 42"),
    ("goals.jsonl", 9, b'{"goal": "   ", "intent": "build"}', "goal", "must not be empty"),
    ("goals.jsonl", 11, b'{"goal": "deploy now", "intent": "deploy"}', "intent", "unknown intent 'deploy'"),
    ("goals.jsonl", 2, b'{"goal": "x", "intent": "build", "weight": 2}', "weight", "unknown field"),
    ("goals.jsonl", 4, b'["build it", "build"]', None, "expected a JSON object, got list"),
    ("goals.jsonl", 6, b'{"goal": "caf\xe9", "intent": "build"}', None, "not valid UTF-8"),
    ("plans.jsonl", 8, b'{"goal": "train and then test", "plan": ["train", "test"]}', "plan[0]", "cannot be a plan step"),
    ("plans.jsonl", 8, b'{"goal": "x", "plan": []}', "plan", "must not be an empty list"),
    ("dialogues.jsonl", 1, b'{"conversation": "c0000", "turn": 1, "prompt": "a", "response": "b"}', "turn", "expects turn 0"),
    ("dialogues.jsonl", 1, b'{"conversation": "c0000", "turn": true, "prompt": "a", "response": "b"}', "turn", "expected int"),
    ("bench_policy.jsonl", 10, b'{"kind": "policy", "goal": "hi", "intent": "teleport"}', "intent", "unknown intent"),
    ("bench_policy.jsonl", 12, b'{"kind": "plan", "goal": "hi", "plan": ["build"]}', "kind", "expected 'policy'"),
    ("gallery.jsonl", 3, b'{"kind": "gallery", "prompt": "hi", "reference": "Hello.", "memory": [{"prompt": "x"}]}',
     "memory[0].response", "expected a non-empty string"),
    ("intents.jsonl", 2, b'{"intent": "build", "description": "again", "meta": false, "action": true}', "intent",
     "duplicate intent"),
])
def test_loader_error_names_file_line_and_field(copy, file, line, text, field, message):
    replace_line(copy / file, line, text)
    with pytest.raises(CorpusError) as err:
        load_corpus(copy)
    e = err.value
    assert (e.path, e.line, e.field) == (str(copy / file), line, field)
    assert f"{copy / file}:{line}: " in str(e)
    assert message in str(e)


# found by tests/test_input_fuzz.py: each of these escaped as an exception, was accepted, or
# printed a message that was not one line naming the field
@pytest.mark.parametrize("file,line,text,field,message", [
    ("goals.jsonl", 3, b"[" * 60_000, None, "not valid JSON here: nested too deeply"),  # was RecursionError
    ("dialogues.jsonl", 1, b'{"conversation": "c0000", "turn": ' + b"1" * 5000 + b', "prompt": "a", "response": "b"}',
     None, "a number of more than 4300 digits"),  # was ValueError
    ("goals.jsonl", 5, b'{"goal": "build \\ud800 it", "intent": "build"}', "goal", "lone surrogate"),  # UnicodeEncodeError
    ("gallery.jsonl", 2, b'{"kind": "gallery", "prompt": "hi", "reference": "Hello.", '
                         b'"memory": [{"prompt": "\\udfff", "response": "b"}]}', "memory[0].prompt", "lone surrogate"),
    ("goals.jsonl", 7, b'{"goal": "build it", "goal": 3, "intent": "build"}', "goal", "appears twice in one object"),
    ("goals.jsonl", 1, b'\xef\xbb\xbf{"goal": "build it", "intent": "build"}', None, "byte order mark"),
    ("goals.jsonl", 2, b'{"goal": "x", "intent": "build", "": 2}', "", "unknown field"),  # was no field at all
])
def test_loader_error_for_what_fuzzing_found(copy, file, line, text, field, message):
    replace_line(copy / file, line, text)
    with pytest.raises(CorpusError) as err:
        load_corpus(copy)
    e = err.value
    assert (e.path, e.line, e.field) == (str(copy / file), line, field)
    assert message in str(e) and "\n" not in str(e)
    assert field is None or f"field '{field}': " in str(e)


def test_a_field_name_with_a_newline_stays_on_one_line(copy):
    replace_line(copy / "goals.jsonl", 2, b'{"goal": "x", "intent": "build", "in\\ntent": "build"}')
    with pytest.raises(CorpusError) as err:
        load_corpus(copy)
    assert err.value.field == "in\ntent"
    assert f"{copy / 'goals.jsonl'}:2: field 'in\\ntent': unknown field" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("file,field", [("intents.jsonl", "intent"), ("goals.jsonl", "goal"), ("plans.jsonl", "goal"),
                                        ("bench_policy.jsonl", "goal"), ("bench_plan.jsonl", "goal"),
                                        ("gallery.jsonl", "prompt"), ("bench_policy_unseen.jsonl", "goal"),
                                        ("bench_plan_seen.jsonl", "goal"), ("bench_plan_wild.jsonl", "goal")])
def test_a_duplicated_line_is_refused(copy, file, field):
    # a record listed twice is trained or scored twice as often; the bundled corpus has none
    lines = (copy / file).read_bytes().split(b"\n")
    lines.insert(5, lines[2])
    (copy / file).write_bytes(b"\n".join(lines))
    with pytest.raises(CorpusError) as err:
        load_corpus(copy)
    assert (err.value.line, err.value.field) == (6, field)
    assert "is already on line 3" in str(err.value) or "duplicate intent" in str(err.value)


@pytest.mark.parametrize("bench,train,field", [("bench_policy.jsonl", "goals.jsonl", "goal"),
                                               ("bench_paraphrase.jsonl", "goals.jsonl", "goal"),
                                               ("bench_plan.jsonl", "plans.jsonl", "goal"),
                                               ("gallery.jsonl", "dialogues.jsonl", "prompt"),
                                               ("bench_policy_unseen.jsonl", "goals.jsonl", "goal"),
                                               ("bench_plan_seen.jsonl", "plans.jsonl", "goal"),
                                               ("bench_policy_wild.jsonl", "goals.jsonl", "goal"),
                                               ("bench_plan_wild.jsonl", "plans.jsonl", "goal"),
                                               ("gallery_wild.jsonl", "dialogues.jsonl", "prompt")])
def test_a_bench_line_in_a_training_file_is_refused(copy, bench, train, field):
    # README: bench lines never appear in a training file; a bench the model trained on measures nothing
    item = json.loads((copy / bench).read_text().splitlines()[3])
    added = {"goals.jsonl": lambda: {"goal": item["goal"], "intent": item["intent"]},
             "plans.jsonl": lambda: {"goal": item["goal"], "plan": item["plan"]},
             "dialogues.jsonl": lambda: {"conversation": "new", "turn": 0, "prompt": item["prompt"], "response": "ok"}}
    with open(copy / train, "a") as f:
        f.write(json.dumps(added[train]()) + "\n")
    n = len((copy / train).read_text().splitlines())
    with pytest.raises(CorpusError) as err:
        load_corpus(copy)
    assert (err.value.path, err.value.line, err.value.field) == (str(copy / bench), 4, field)
    assert f"also a training {field} ({train} line {n}): bench lines are held out" in str(err.value)


def test_conflicting_labels_for_one_goal(copy):
    first = json.loads((copy / "goals.jsonl").read_text().splitlines()[0])
    replace_line(copy / "goals.jsonl", 40, json.dumps({"goal": first["goal"], "intent": "greet"}).encode())
    with pytest.raises(CorpusError, match=r"goals.jsonl:40: field 'goal': .* labelled 'greet' here and '\w+' on line 1"):
        load_corpus(copy)


def test_huge_line(copy):
    replace_line(copy / "goals.jsonl", 2, b'{"goal": "' + b"a" * 70_000 + b'", "intent": "build"}')
    with pytest.raises(CorpusError, match=r"goals.jsonl:2: line of 70031 bytes is longer than the limit"):
        load_corpus(copy)


def test_empty_and_missing_files(copy):
    (copy / "plans.jsonl").write_bytes(b"\n\n")
    with pytest.raises(CorpusError, match=r"plans.jsonl: file has no records"):
        load_corpus(copy)
    (copy / "plans.jsonl").unlink()
    with pytest.raises(CorpusError, match=r"plans.jsonl: file not found"):
        load_corpus(copy)


def test_missing_folder(tmp_path):
    with pytest.raises(CorpusError, match="corpus folder not found"):
        load_corpus(tmp_path / "nope")


def test_a_bench_of_each_kind_loads_on_its_own(corpus):
    # `eval --bench FILE.jsonl`: the kind comes from the lines
    for name, (file, kind) in BUNDLED_BENCHES.items():
        bench = load_bench(corpus_dir() / file, corpus.intents)
        assert bench.kind == kind and bench.items, name


def test_the_optional_benches_may_be_absent(copy):
    for name in OPTIONAL_BENCHES:
        (copy / BUNDLED_BENCHES[name][0]).unlink()
    corpus = load_corpus(copy)
    assert set(corpus.benches) == set(REQUIRED_BENCHES)
    # one of them present: loaded and checked like the rest
    shutil.copy(corpus_dir() / "bench_plan_seen.jsonl", copy)
    assert set(load_corpus(copy).benches) == {*REQUIRED_BENCHES, "plan_seen"}


@pytest.mark.parametrize("name", REQUIRED_BENCHES)
def test_the_required_benches_may_not(copy, name):
    (copy / BUNDLED_BENCHES[name][0]).unlink()
    with pytest.raises(CorpusError, match=rf"{BUNDLED_BENCHES[name][0]}: file not found"):
        load_corpus(copy)


@pytest.mark.parametrize("file,line,text,field,message", [
    ("bench_policy_unseen.jsonl", 7, b'{"kind": "policy", "goal": "hi", "intent": "teleport"}', "intent", "unknown intent"),
    ("bench_plan_seen.jsonl", 2, b'{"kind": "policy", "goal": "hi", "intent": "greet"}', "kind", "expected 'plan'"),
    ("bench_plan_wild.jsonl", 5, b'{"kind": "plan", "goal": "x", "plan": ["train"]}', "plan[0]", "cannot be a plan step"),
    ("gallery_wild.jsonl", 3, b'{"kind": "gallery", "prompt": "hi", "reference": 7}', "reference", "expected str"),
    ("bench_policy_wild.jsonl", 9, b'{"kind": "policy", "goal": "hi"', None, "not valid JSON"),
])
def test_an_optional_bench_with_a_bad_line_is_refused(copy, file, line, text, field, message):
    replace_line(copy / file, line, text)
    with pytest.raises(CorpusError) as err:
        load_corpus(copy)
    assert (err.value.path, err.value.line, err.value.field) == (str(copy / file), line, field)
    assert message in str(err.value)


def test_a_bench_file_mixing_kinds_is_refused(tmp_path, corpus):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"kind": "policy", "goal": "hi", "intent": "greet"}\n'
                    '{"kind": "plan", "goal": "build it", "plan": ["build"]}\n')
    with pytest.raises(CorpusError, match=r"mixed.jsonl:2: field 'kind': one bench file holds one kind"):
        load_bench(path, corpus.intents)
