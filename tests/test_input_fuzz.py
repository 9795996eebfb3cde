"""Bad input through the command line, fuzzed: `check --data`, `train --data` and `eval --bench`.

Each example starts from a copy of the bundled corpus and plants one fault in one file: malformed
JSON, a wrong type, a missing or an extra field, a huge line, bytes that are not UTF-8, a BOM, an
empty or a missing file, an unknown intent, a label that cannot be a plan step, a duplicated line
or key, a bench line that is also a training line, and a few more. Whatever hypothesis draws, the
command must exit 2 with one line naming the file, the line and the field the fault is in (the
fault says where it is; the line and field are left out only where there is none), no exception
may escape main, and nothing may be written: `train` makes no store in a fresh home and adds no
row to an existing one.

    python -m pytest -q tests/test_input_fuzz.py                  # 30 fixed examples a property
    python benchmarks/reliability/input_fuzz.py --examples 500    # the long form

The long form runs these very properties with more examples, drawn at random instead of the
suite's fixed ones (NAVI_FUZZ_EXAMPLES, NAVI_FUZZ_RANDOM), and counts the cases it generated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from navi_model.assets import corpus_dir
from navi_tui.cli import main
from cli_harness import one_line_error, run_main, store_dump, tally

REPO = Path(__file__).resolve().parents[1]
CORPUS = corpus_dir()
EXAMPLES = int(os.environ.get("NAVI_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=not os.environ.get("NAVI_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# each file's fields, written down here rather than read from the loader: what the README says
FIELDS = {
    "intents.jsonl": {"intent": "str", "description": "str", "meta": "bool", "action": "bool"},
    "goals.jsonl": {"goal": "str", "intent": "str"},
    "plans.jsonl": {"goal": "str", "plan": "plan"},
    "dialogues.jsonl": {"conversation": "str", "turn": "int", "prompt": "str", "response": "str"},
    "bench_policy.jsonl": {"kind": "str", "goal": "str", "intent": "str"},
    "bench_paraphrase.jsonl": {"kind": "str", "goal": "str", "intent": "str"},
    "bench_plan.jsonl": {"kind": "str", "goal": "str", "plan": "plan"},
    "gallery.jsonl": {"kind": "str", "prompt": "str", "reference": "str", "memory": "memory"},
}
OPTIONAL = {("gallery.jsonl", "memory")}
BENCHES = ("bench_policy.jsonl", "bench_paraphrase.jsonl", "bench_plan.jsonl", "gallery.jsonl")
KIND_OF = {"bench_policy.jsonl": "policy", "bench_paraphrase.jsonl": "paraphrase", "bench_plan.jsonl": "plan",
           "gallery.jsonl": "gallery"}
LINES = {name: (CORPUS / name).read_bytes().splitlines() for name in FIELDS}
RECORDS = {name: [json.loads(line) for line in lines] for name, lines in LINES.items()}
INTENTS = {r["intent"]: r for r in RECORDS["intents.jsonl"]}
NOT_ACTIONS = sorted(n for n, r in INTENTS.items() if not r["action"])
# which field names a duplicated line of each file
DUPLICATE_FIELD = {"intents.jsonl": "intent", "goals.jsonl": "goal", "plans.jsonl": "goal",
                   "dialogues.jsonl": "turn", "gallery.jsonl": "prompt", "bench_policy.jsonl": "goal",
                   "bench_paraphrase.jsonl": "goal", "bench_plan.jsonl": "goal"}


@dataclass
class Fault:
    """One planted fault: what it does to the corpus folder, and where the error must point."""
    kind: str
    file: str  # the file whose bytes change
    apply: Callable[[Path], None]  # gets the folder
    line: int | None  # where the error must point; None: the file as a whole
    field: str | None
    reported_in: str | None = None  # the file the error names, when it is not the one changed

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Fault({self.kind}, {self.file}, line={self.line}, field={self.field!r})"


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def replace_record(name: str, index: int, record: dict | bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        lines = list(LINES[name])
        lines[index] = record if isinstance(record, bytes) else json.dumps(record).encode()
        write_lines(folder / name, lines)
    return apply


def printable(field: str) -> str:
    # how the message shows a field name that came from the file (newlines and the like escaped)
    return field if field.isprintable() else field.encode("unicode_escape").decode("ascii")


# --- values of the wrong type, per declared type ---------------------------------------------------

scalars = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                    st.none())
containers = st.one_of(st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                  st.integers(), max_size=2))
WRONG = {
    "str": st.one_of(scalars, containers, st.sampled_from(["", " ", "\t\n"])),  # empty counts as wrong
    "int": st.one_of(st.text(max_size=8), st.floats(allow_nan=False), st.booleans(), st.none(), containers,
                     st.integers(max_value=-1)),
    "bool": st.one_of(st.integers(0, 1), st.text(max_size=5), st.none(), st.floats(allow_nan=False), containers),
    "plan": st.one_of(st.text(max_size=8), scalars, st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                      st.just([])),
    "memory": st.one_of(st.text(max_size=8), st.integers(), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2), st.none()),
}
bad_item = {"plan": st.one_of(st.integers(), st.none(), st.booleans(), st.sampled_from(["", "  "]),
                              st.lists(st.text(max_size=3), max_size=2)),
            "memory": st.one_of(st.integers(), st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2))}


@st.composite
def line_of(draw, name: str) -> int:
    return draw(st.integers(0, len(LINES[name]) - 1))


@st.composite
def wrong_type(draw, files):
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    field = draw(st.sampled_from(sorted(FIELDS[name])))
    kind = FIELDS[name][field]
    record = dict(RECORDS[name][i])
    where = field
    if kind in bad_item and draw(st.booleans()):
        # a list of the right type with one item of the wrong one
        items = list(record.get(field) or []) or ([{"prompt": "a", "response": "b"}] if kind == "memory" else ["build"])
        j = draw(st.integers(0, len(items) - 1))
        items[j] = draw(bad_item[kind])
        record[field], where = items, f"{field}[{j}]"
    else:
        record[field] = draw(WRONG[kind])
    return Fault("wrong type", name, replace_record(name, i, record), i + 1, where)


@st.composite
def missing_field(draw, files):
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    field = draw(st.sampled_from(sorted(f for f in FIELDS[name] if (name, f) not in OPTIONAL)))
    record = {k: v for k, v in RECORDS[name][i].items() if k != field}
    return Fault("missing field", name, replace_record(name, i, record), i + 1, field)


@st.composite
def extra_field(draw, files):
    # decided: an unknown field is refused (a misspelt "intnet" would otherwise be dropped silently)
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    key = draw(st.text(max_size=12).filter(lambda k: k not in FIELDS[name]))
    # a key with a lone surrogate in it is refused as such, under the same field
    record = {**RECORDS[name][i], key: draw(st.one_of(scalars, st.text(max_size=10)))}
    return Fault("extra field", name, replace_record(name, i, record), i + 1, printable(key))


@st.composite
def malformed_json(draw, files):
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    line = LINES[name][i]
    how = draw(st.sampled_from(["cut", "not an object", "garbage"]))
    if how == "cut":  # a proper prefix of an object is never a whole JSON value
        text = line[:draw(st.integers(1, len(line) - 1))]
    elif how == "not an object":
        text = json.dumps(draw(st.one_of(scalars, st.lists(st.integers(), max_size=3)))).encode()
    else:
        text = draw(st.sampled_from([b"{goal: build}", b"{'goal': 'x'}", b"{\"a\": 1,}", b"[", b"}{", b"nul",
                                     b"{\"goal\": \"x\" \"intent\": \"build\"}", b"NaN garbage"]))
    return Fault("malformed JSON", name, replace_record(name, i, text), i + 1, None)


@st.composite
def huge_line(draw, files):
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    size = draw(st.sampled_from([64 * 1024 + 1, 1_000_000, 10_000_000]) | st.integers(64 * 1024, 3_000_000))
    record = dict(RECORDS[name][i])
    field = draw(st.sampled_from(sorted(f for f, k in FIELDS[name].items() if k == "str")))
    record[field] = "a" * size
    return Fault("huge line", name, replace_record(name, i, record), i + 1, None)


INVALID_UTF8 = list(range(0x80, 0xC0)) + [0xC0, 0xC1] + list(range(0xF5, 0x100))


@st.composite
def not_utf8(draw, files):
    # one byte no UTF-8 text can hold in that place, inserted anywhere in a line
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    line = LINES[name][i]
    at = draw(st.integers(0, len(line)))
    text = line[:at] + bytes([draw(st.sampled_from(INVALID_UTF8))]) + line[at:]
    return Fault("not UTF-8", name, replace_record(name, i, text), i + 1, None)


@st.composite
def bom(draw, files):
    # decided: refused, on whatever line it starts (the bundled format has none; json refuses it too)
    name = draw(st.sampled_from(files))
    i = draw(st.sampled_from([0, draw(line_of(name))]))
    return Fault("BOM", name, replace_record(name, i, b"\xef\xbb\xbf" + LINES[name][i]), i + 1, None)


@st.composite
def empty_file(draw, files):
    name = draw(st.sampled_from(files))
    content = draw(st.sampled_from([b"", b"\n", b"\n\n   \n", b"\r\n", b" "]))
    return Fault("empty file", name, lambda folder: (folder / name).write_bytes(content), None, None)


@st.composite
def missing_file(draw, files):
    name = draw(st.sampled_from(files))
    return Fault("missing file", name, lambda folder: (folder / name).unlink(), None, None)


def not_an_intent(name: str) -> bool:
    return name not in INTENTS


@st.composite
def unknown_intent(draw, files):
    name = draw(st.sampled_from([f for f in files if f in ("goals.jsonl", "plans.jsonl", "bench_policy.jsonl",
                                                           "bench_paraphrase.jsonl", "bench_plan.jsonl")]))
    i = draw(line_of(name))
    record = dict(RECORDS[name][i])
    label = draw(st.one_of(st.sampled_from(["deploy", "Build", "build ", "teleport", "git status"]),
                           st.text(min_size=1, max_size=12)).filter(not_an_intent))
    if "plan" in record:
        j = draw(st.integers(0, len(record["plan"]) - 1))
        record["plan"] = [*record["plan"][:j], label, *record["plan"][j + 1:]]
        where = f"plan[{j}]"
    else:
        record["intent"], where = label, "intent"
    return Fault("unknown intent", name, replace_record(name, i, record), i + 1, where)


@st.composite
def not_a_plan_step(draw, files):
    # meta and chat intents are labels, never steps (M-017)
    name = draw(st.sampled_from([f for f in files if f in ("plans.jsonl", "bench_plan.jsonl")]))
    i = draw(line_of(name))
    record = dict(RECORDS[name][i])
    j = draw(st.integers(0, len(record["plan"]) - 1))
    record["plan"] = [*record["plan"][:j], draw(st.sampled_from(NOT_ACTIONS)), *record["plan"][j + 1:]]
    return Fault("not a plan step", name, replace_record(name, i, record), i + 1, f"plan[{j}]")


@st.composite
def duplicate_line(draw, files):
    # decided: refused (a record listed twice is trained or scored twice as often, silently)
    name = draw(st.sampled_from(files))
    n = len(LINES[name])
    i = draw(st.integers(0, n - 1))
    at = draw(st.integers(i + 1, n))  # the copy goes after the original; the error points at the copy

    def apply(folder: Path) -> None:
        lines = list(LINES[name])
        lines.insert(at, lines[i])
        write_lines(folder / name, lines)
    return Fault("duplicate line", name, apply, at + 1, DUPLICATE_FIELD[name])


@st.composite
def duplicate_key(draw, files):
    # {"goal": "x", "goal": 3}: JSON keeps the last one silently; refused
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    field = draw(st.sampled_from(sorted(RECORDS[name][i])))
    value = json.dumps(draw(st.one_of(st.just(RECORDS[name][i][field]), scalars, st.text(max_size=5))))
    text = b"{" + json.dumps(field).encode() + b": " + value.encode() + b", " + LINES[name][i][1:]
    return Fault("duplicate key", name, replace_record(name, i, text), i + 1, field)


@st.composite
def lone_surrogate(draw, files):
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    field = draw(st.sampled_from(sorted(f for f, k in FIELDS[name].items() if k == "str")))
    record = dict(RECORDS[name][i])
    surrogate = chr(draw(st.integers(0xD800, 0xDFFF)))
    at = draw(st.integers(0, len(record[field])))
    record[field] = record[field][:at] + surrogate + record[field][at:]
    return Fault("lone surrogate", name, replace_record(name, i, record), i + 1, field)  # json.dumps escapes it


@st.composite
def unreadable_number_or_depth(draw, files):
    name = draw(st.sampled_from(files))
    i = draw(line_of(name))
    field = draw(st.sampled_from(sorted(RECORDS[name][i])))
    # under the 64 KiB line limit, so what refuses them is the parser, not the length
    value = draw(st.sampled_from([b"[" * 60_000, b"1" * 5000, b"{\"a\": " * 10_000, b"-" + b"9" * 4301]))
    text = b"{" + json.dumps(field).encode() + b": " + value + b"}"
    return Fault("depth or digits", name, replace_record(name, i, text), i + 1, None)


@st.composite
def wrong_bench_kind(draw, files):
    name = draw(st.sampled_from([f for f in files if f in BENCHES]))
    i = draw(line_of(name))
    other = draw(st.sampled_from(sorted({"policy", "paraphrase", "plan", "gallery", "Policy", "bench"}
                                        - {KIND_OF[name]})))
    valid = "another kind" if other in KIND_OF.values() else "no kind"
    return Fault(f"wrong bench kind ({valid})", name, replace_record(name, i, {**RECORDS[name][i], "kind": other}),
                 i + 1, "kind")


@st.composite
def held_out_line_in_training(draw, files):
    # a bench line copied into a training file: the bench would measure what was trained
    bench = draw(st.sampled_from(BENCHES))
    if bench == "gallery.jsonl":
        free = [k for k, r in enumerate(RECORDS[bench]) if not r["memory"]]
        i = draw(st.sampled_from(free))
        added = {"conversation": "fuzz-held-out", "turn": 0, "prompt": RECORDS[bench][i]["prompt"], "response": "ok"}
        target, field = "dialogues.jsonl", "prompt"
    else:
        i = draw(line_of(bench))
        item = RECORDS[bench][i]
        if bench == "bench_plan.jsonl":
            added, target = {"goal": item["goal"], "plan": item["plan"]}, "plans.jsonl"
        else:
            added, target = {"goal": item["goal"], "intent": item["intent"]}, "goals.jsonl"
        field = "goal"
    at = draw(st.integers(0, len(LINES[target])))

    def apply(folder: Path) -> None:
        lines = list(LINES[target])
        lines.insert(at, json.dumps(added).encode())
        write_lines(folder / target, lines)
    return Fault("held-out line in training", target, apply, i + 1, field, reported_in=bench)


@st.composite
def turn_out_of_order(draw, files):
    i = draw(line_of("dialogues.jsonl"))
    record = dict(RECORDS["dialogues.jsonl"][i])
    turn = draw(st.integers(0, 50))
    turn += turn == record["turn"]  # any turn but the right one
    return Fault("turn out of order", "dialogues.jsonl", replace_record("dialogues.jsonl", i, {**record, "turn": turn}),
                 i + 1, "turn")


COMMON = [wrong_type, missing_field, extra_field, malformed_json, huge_line, not_utf8, bom, empty_file,
          missing_file, unknown_intent, not_a_plan_step, duplicate_line, duplicate_key, lone_surrogate,
          unreadable_number_or_depth, wrong_bench_kind]
CORPUS_ONLY = [held_out_line_in_training, turn_out_of_order]


def faults(files, kinds):
    return st.one_of([k(files) for k in kinds])


corpus_faults = faults(list(FIELDS), COMMON + CORPUS_ONLY)
bench_faults = faults(list(BENCHES), COMMON)


# --- the harness -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_home(trained_home_template):
    """A real store with one real run (conftest.py's session run: 3 steps on the small corpus; it fails
    its gates, which is fine here). Never changed: each test works on a copy."""
    return trained_home_template


def expect_refusal(code, err: str, path: Path, fault: Fault) -> str:
    """Exit 2 and one line naming the file, and the line and the field where the fault has them."""
    assert not (isinstance(code, str) and code.startswith("escaped")), f"{fault}: {code}"
    assert code == 2, f"{fault}: exit {code}, stderr {err!r}"
    line = one_line_error(err)
    where = f"{path}:{fault.line}: " if fault.line is not None else f"{path}: "
    assert line.startswith(f"navi-tui: error: {where}"), f"{fault}: {line!r}"
    if fault.field is not None:
        assert f"field '{fault.field}': " in line, f"{fault}: {line!r}"
    else:
        assert "field '" not in line.split(where, 1)[1], f"{fault}: {line!r}"
    return line


def planted(fault: Fault, root: Path) -> Path:
    data = root / "corpus"
    shutil.copytree(CORPUS, data)
    fault.apply(data)
    return data


@FUZZ
@given(fault=corpus_faults)
def test_check_refuses_every_corpus_fault(fault):
    tally("check --data", fault.kind, fault.file)
    with tempfile.TemporaryDirectory() as tmp:
        data = planted(fault, Path(tmp))
        code, _, err = run_main(main, ["--home", Path(tmp) / "home", "--no-ui", "check", "--data", data])
        expect_refusal(code, err, data / (fault.reported_in or fault.file), fault)
        assert not (Path(tmp) / "home").exists()


@FUZZ
@given(fault=corpus_faults)
def test_train_refuses_every_corpus_fault_and_writes_nothing(trained_home, tmp_path, fault):
    tally("train --data", fault.kind, fault.file)
    existing = tmp_path / "existing"
    if not existing.exists():
        shutil.copytree(trained_home, existing)
    with tempfile.TemporaryDirectory() as tmp:
        data = planted(fault, Path(tmp))
        fresh = Path(tmp) / "fresh"
        # --steps 1: a fault the loader let through would train for seconds, not minutes, and fail here
        code, _, err = run_main(main, ["--home", fresh, "--no-ui", "train", "--steps", 1, "--data", data])
        expect_refusal(code, err, data / (fault.reported_in or fault.file), fault)
        assert not fresh.exists()  # no store created
        before = store_dump(existing)
        code, _, err = run_main(main, ["--home", existing, "--no-ui", "train", "--steps", 1, "--data", data])
        expect_refusal(code, err, data / (fault.reported_in or fault.file), fault)
        assert store_dump(existing) == before  # no new row, no new file


def bench_expectation(fault: Fault) -> Fault:
    """Where eval --bench points: a file holds one kind, and without a corpus around it its first
    line decides which, so another valid kind there shows at the second line; else as planted."""
    if fault.kind == "wrong bench kind (another kind)" and fault.line == 1:
        return Fault(fault.kind, fault.file, fault.apply, 2, "kind")
    return fault


@FUZZ
@given(fault=bench_faults)
def test_eval_refuses_every_bench_fault_and_writes_nothing(trained_home, tmp_path, fault):
    tally("eval --bench", fault.kind, fault.file)
    home = tmp_path / "home"
    if not home.exists():
        shutil.copytree(trained_home, home)
    with tempfile.TemporaryDirectory() as tmp:
        data = planted(fault, Path(tmp))
        bench = data / fault.file
        before = store_dump(home)
        code, _, err = run_main(main, ["--home", home, "--no-ui", "eval", "--bench", bench])
        expect_refusal(code, err, bench, bench_expectation(fault))
        assert store_dump(home) == before  # no eval row, no gallery row


# texts a model cannot take whole: a gate when training (truncation, exit 1), bad input for eval
TOO_LONG = [("bench_policy.jsonl", "goal"), ("bench_paraphrase.jsonl", "goal"), ("bench_plan.jsonl", "goal"),
            ("gallery.jsonl", "prompt"), ("gallery.jsonl", "reference")]


@pytest.mark.parametrize("file,field", TOO_LONG)
def test_eval_refuses_a_bench_text_its_model_cannot_take_whole(trained_home, tmp_path, file, field):
    # found by this harness for the gallery: a TruncationError with neither file nor line
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    bench = tmp_path / file
    records = [dict(r) for r in RECORDS[file][:3]]
    records[1][field] = "build the whole thing " * 12
    bench.write_text("".join(json.dumps(r) + "\n" for r in records))
    before = store_dump(home)
    code, _, err = run_main(main, ["--home", home, "--no-ui", "eval", "--bench", bench])
    assert code == 2, (code, err)
    line = one_line_error(err)
    assert line.startswith(f"navi-tui: error: {bench}:2: field '{field}': ")
    assert store_dump(home) == before


# --- the real binary -------------------------------------------------------------------------------

def test_the_real_binary_refuses_a_bad_corpus_line(trained_home, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    data = tmp_path / "corpus"
    shutil.copytree(CORPUS, data)
    lines = list(LINES["plans.jsonl"])
    lines[99] = b'{"goal": "run the tests", "plan": ["test", "train"]}'
    write_lines(data / "plans.jsonl", lines)
    before = store_dump(home)
    r = subprocess.run([sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", "train", "--data", str(data)],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr
    line = one_line_error(r.stderr)
    assert line == (f"navi-tui: error: {data / 'plans.jsonl'}:100: field 'plan[1]': intent 'train' cannot be a plan "
                    f"step (meta and chat intents are never executed)")
    assert store_dump(home) == before
