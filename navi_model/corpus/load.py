"""Load and validate a corpus folder: every line parsed as JSON and checked against its schema.

Every error is a CorpusError naming the file, the line, the field and the value, so bad input
ends in one clear message (exit 2 from the CLI) and never in a traceback or a half-written
store. Lines are parsed by their grammar (JSON), never split on a delimiter (M-006).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 64 * 1024  # a corpus line is one goal or dialogue; more is a broken file

BENCH_KINDS = ("policy", "paraphrase", "plan", "gallery")


class CorpusError(ValueError):
    def __init__(self, path: Path | str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{_printable(field)}': " if field is not None else ""
        super().__init__(f"{where}: {what}{message}")


def _printable(name: str) -> str:
    # a field name comes from the file: a newline or a control character in it would break the
    # one-line message, a lone surrogate would break printing it
    return name if name.isprintable() else name.encode("unicode_escape").decode("ascii")


# schema: field -> (python type, required); lists carry their item type after the colon
Schema = dict[str, tuple[str, bool]]

SCHEMAS: dict[str, Schema] = {
    "intents.jsonl": {"intent": ("str", True), "description": ("str", True), "meta": ("bool", True),
                      "action": ("bool", True)},
    "goals.jsonl": {"goal": ("str", True), "intent": ("str", True)},
    "plans.jsonl": {"goal": ("str", True), "plan": ("list:str", True)},
    "dialogues.jsonl": {"conversation": ("str", True), "turn": ("int", True), "prompt": ("str", True),
                        "response": ("str", True)},
}
BENCH_SCHEMAS: dict[str, Schema] = {
    "policy": {"kind": ("str", True), "goal": ("str", True), "intent": ("str", True)},
    "paraphrase": {"kind": ("str", True), "goal": ("str", True), "intent": ("str", True)},
    "plan": {"kind": ("str", True), "goal": ("str", True), "plan": ("list:str", True)},
    "gallery": {"kind": ("str", True), "prompt": ("str", True), "reference": ("str", True),
                "memory": ("list:dialogue", False)},
}
# the benches of a corpus folder: name -> (file, kind). The first four are required in every
# corpus; the others are optional in a --data folder (absent: not in Corpus.benches)
BUNDLED_BENCHES: dict[str, tuple[str, str]] = {
    "policy": ("bench_policy.jsonl", "policy"),  # seen: training cores, wrappers never trained
    "paraphrase": ("bench_paraphrase.jsonl", "paraphrase"),  # must-pass lines
    "plan": ("bench_plan.jsonl", "plan"),  # unseen: composites of held-out cores
    "gallery": ("gallery.jsonl", "gallery"),  # unseen: talker prompts from held-out cores
    "policy_unseen": ("bench_policy_unseen.jsonl", "policy"),  # held-out cores
    "plan_seen": ("bench_plan_seen.jsonl", "plan"),  # training cores, combinations never trained
    "policy_wild": ("bench_policy_wild.jsonl", "policy"),  # hand-written (holdout.py)
    "plan_wild": ("bench_plan_wild.jsonl", "plan"),
    "gallery_wild": ("gallery_wild.jsonl", "gallery"),
}
REQUIRED_BENCHES = ("policy", "paraphrase", "plan", "gallery")
OPTIONAL_BENCHES = tuple(k for k in BUNDLED_BENCHES if k not in REQUIRED_BENCHES)
WILD_BENCHES = ("policy_wild", "plan_wild", "gallery_wild")  # hand-written: the generator never writes them


@dataclass(frozen=True)
class Intent:
    name: str
    description: str
    meta: bool
    action: bool


@dataclass(frozen=True)
class Bench:
    kind: str
    path: Path
    items: list[dict]  # validated JSON objects, each with its "line" number added


@dataclass
class Corpus:
    root: Path
    intents: list[Intent]
    goals: list[dict]  # {"goal", "intent", "line"}
    plans: list[dict]
    dialogues: list[dict]
    benches: dict[str, Bench] = field(default_factory=dict)

    @property
    def intent_names(self) -> list[str]:
        return [i.name for i in self.intents]


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":  # bool is an int in python; a JSON true is not a turn number
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind.startswith("list:"):
        return isinstance(value, list)
    raise AssertionError(kind)


def _check_value(path: Path, line: int, name: str, value: Any, kind: str) -> None:
    if not _type_ok(value, kind):
        raise CorpusError(path, line, name, f"expected {kind.replace('list:', 'list of ')}, got {type(value).__name__} {_show(value)}")
    if kind == "str" and not value.strip():
        raise CorpusError(path, line, name, "must not be empty")
    if kind == "int" and value < 0:
        raise CorpusError(path, line, name, f"must be >= 0, got {value}")
    if kind == "list:str":
        if not value:
            raise CorpusError(path, line, name, "must not be an empty list")
        for j, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise CorpusError(path, line, f"{name}[{j}]", f"expected a non-empty string, got {_show(item)}")
    if kind == "list:dialogue":
        for j, item in enumerate(value):
            if not isinstance(item, dict):
                raise CorpusError(path, line, f"{name}[{j}]", f"expected an object with prompt and response, got {_show(item)}")
            for key in ("prompt", "response"):
                if not isinstance(item.get(key), str) or not item[key].strip():
                    raise CorpusError(path, line, f"{name}[{j}].{key}", f"expected a non-empty string, got {_show(item.get(key))}")
            extra = sorted(set(item) - {"prompt", "response"})
            if extra:
                raise CorpusError(path, line, f"{name}[{j}].{extra[0]}", "unknown field")


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def _unencodable(value: Any, where: str = "") -> str | None:
    """The field (a path like memory[0].prompt) of the first string that UTF-8 cannot encode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "(value)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{where}.{k}" if where else k
            bad = _unencodable(k, here) or _unencodable(v, here)
            if bad is not None:
                return bad
    if isinstance(value, list):
        for j, v in enumerate(value):
            bad = _unencodable(v, f"{where}[{j}]")
            if bad is not None:
                return bad
    return None


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """Parse a JSONL file into (line number, object) pairs; blank lines are skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(path, None, None, "file not found") from None
    except OSError as e:
        raise CorpusError(path, None, None, f"cannot read: {e.strerror}") from None
    rows = []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if len(line) > MAX_LINE_BYTES:
            raise CorpusError(path, n, None, f"line of {len(line)} bytes is longer than the limit of {MAX_LINE_BYTES}")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(path, n, None, f"not valid UTF-8 (byte {e.start}: 0x{line[e.start]:02x})") from None
        if not text.strip():
            continue
        if text.startswith("\ufeff"):
            raise CorpusError(path, n, None, "starts with a byte order mark (U+FEFF): save the file as UTF-8 "
                                             "without a BOM")
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise CorpusError(path, n, None, f"not valid JSON: {e.msg} at column {e.colno}") from None
        except _DuplicateKey as e:
            raise CorpusError(path, n, e.key, "appears twice in one object (JSON would keep the last silently)") from None
        except RecursionError:
            raise CorpusError(path, n, None, "not valid JSON here: nested too deeply") from None
        except ValueError:  # the only other ValueError: an integer of more digits than python converts
            raise CorpusError(path, n, None, f"not valid JSON here: a number of more than "
                                             f"{sys.get_int_max_str_digits()} digits") from None
        if not isinstance(obj, dict):
            raise CorpusError(path, n, None, f"expected a JSON object, got {type(obj).__name__}")
        bad = _unencodable(obj)
        if bad is not None:
            # JSON's \ud800 escapes decode to lone surrogates, which no text in UTF-8 can hold
            raise CorpusError(path, n, bad, "holds a lone surrogate escape (\\ud800-\\udfff), which is not text")
        rows.append((n, obj))
    if not rows:
        raise CorpusError(path, None, None, "file has no records")
    return rows


def _validate(path: Path, rows: list[tuple[int, dict]], schema: Schema) -> list[dict]:
    out = []
    for n, obj in rows:
        for name in obj:
            if name not in schema:
                raise CorpusError(path, n, name, f"unknown field (expected {', '.join(schema)})")
        for name, (kind, required) in schema.items():
            if name not in obj:
                if required:
                    raise CorpusError(path, n, name, "missing")
                continue
            _check_value(path, n, name, obj[name], kind)
        out.append({**obj, "line": n})
    return out


def _check_intent(path: Path, item: dict, field_name: str, value: str, known: dict[str, Intent]) -> None:
    if value not in known:
        names = ", ".join(sorted(known))
        raise CorpusError(path, item["line"], field_name, f"unknown intent {value!r} (known: {names})")


def _check_plan(path: Path, item: dict, known: dict[str, Intent]) -> None:
    for j, step in enumerate(item["plan"]):
        _check_intent(path, item, f"plan[{j}]", step, known)
        if not known[step].action:
            # a plan is executed step by step; meta and chat intents are labels only (M-017)
            raise CorpusError(path, item["line"], f"plan[{j}]",
                              f"intent {step!r} cannot be a plan step (meta and chat intents are never executed)")


def load_intents(root: Path) -> list[Intent]:
    path = root / "intents.jsonl"
    items = _validate(path, read_jsonl(path), SCHEMAS["intents.jsonl"])
    seen: set[str] = set()
    out = []
    for it in items:
        if it["intent"] in seen:
            raise CorpusError(path, it["line"], "intent", f"duplicate intent {it['intent']!r}")
        if it["action"] and it["meta"]:
            raise CorpusError(path, it["line"], "action", f"meta intent {it['intent']!r} cannot be an action (M-017)")
        seen.add(it["intent"])
        out.append(Intent(it["intent"], it["description"], it["meta"], it["action"]))
    return out


def load_bench(path: Path, intents: list[Intent], expected_kind: str | None = None) -> Bench:
    """Load one bench file of any of the four kinds; the kind comes from each line's "kind"."""
    path = Path(path)
    rows = read_jsonl(path)
    known = {i.name: i for i in intents}
    kind = None
    for n, obj in rows:
        k = obj.get("kind")
        if k not in BENCH_KINDS:
            raise CorpusError(path, n, "kind", f"expected one of {', '.join(BENCH_KINDS)}, got {_show(k)}")
        if expected_kind is not None and k != expected_kind:
            raise CorpusError(path, n, "kind", f"expected {expected_kind!r} in this file, got {k!r}")
        if kind is not None and k != kind:
            raise CorpusError(path, n, "kind", f"one bench file holds one kind: {kind!r} above, {k!r} here")
        kind = k
    items = _validate(path, rows, BENCH_SCHEMAS[kind])
    first: dict[str, int] = {}
    for it in items:
        key = it["goal"] if kind != "gallery" else json.dumps([it["prompt"], it.get("memory", [])], sort_keys=True)
        line = first.setdefault(key, it["line"])
        if line != it["line"]:
            field_name = "goal" if kind != "gallery" else "prompt"
            raise CorpusError(path, it["line"], field_name, _duplicate(it[field_name], line))
        if kind in ("policy", "paraphrase"):
            _check_intent(path, it, "intent", it["intent"], known)
        elif kind == "plan":
            _check_plan(path, it, known)
        elif kind == "gallery":
            it.setdefault("memory", [])
    return Bench(kind, path, items)


def load_corpus(root: Path) -> Corpus:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, None, None, "corpus folder not found")
    intents = load_intents(root)
    known = {i.name: i for i in intents}

    path = root / "goals.jsonl"
    goals = _validate(path, read_jsonl(path), SCHEMAS["goals.jsonl"])
    first_intent: dict[str, tuple[str, int]] = {}
    for g in goals:
        _check_intent(path, g, "intent", g["intent"], known)
        prev = first_intent.setdefault(g["goal"], (g["intent"], g["line"]))
        if prev[0] != g["intent"]:
            raise CorpusError(path, g["line"], "goal",
                              f"{g['goal']!r} is labelled {g['intent']!r} here and {prev[0]!r} on line {prev[1]}")
        if prev[1] != g["line"]:
            raise CorpusError(path, g["line"], "goal", _duplicate(g["goal"], prev[1]))

    path = root / "plans.jsonl"
    plans = _validate(path, read_jsonl(path), SCHEMAS["plans.jsonl"])
    first_plan: dict[str, int] = {}
    for p in plans:
        _check_plan(path, p, known)
        line = first_plan.setdefault(p["goal"], p["line"])
        if line != p["line"]:
            raise CorpusError(path, p["line"], "goal", _duplicate(p["goal"], line))

    path = root / "dialogues.jsonl"
    dialogues = _validate(path, read_jsonl(path), SCHEMAS["dialogues.jsonl"])
    next_turn: dict[str, int] = {}
    for d in dialogues:
        # memory is the earlier turns of the same conversation, so turns must arrive in order
        want = next_turn.get(d["conversation"], 0)
        if d["turn"] != want:
            raise CorpusError(path, d["line"], "turn",
                              f"conversation {d['conversation']!r} expects turn {want} next, got {d['turn']}")
        next_turn[d["conversation"]] = want + 1

    benches = {name: load_bench(root / file, intents, kind) for name, (file, kind) in BUNDLED_BENCHES.items()
               if name in REQUIRED_BENCHES or (root / file).exists()}
    _check_held_out(root, benches, goals, plans, dialogues)
    return Corpus(root, intents, goals, plans, dialogues, benches)


def _duplicate(key: str, line: int) -> str:
    # a record listed twice is trained (or scored) twice as often, silently: the bundled corpus has none
    return f"{_show(key)} is already on line {line} (a record listed twice counts twice)"


def _check_held_out(root: Path, benches: dict[str, Bench], goals: list[dict], plans: list[dict],
                    dialogues: list[dict]) -> None:
    """Bench lines never appear in a training file: a bench the model trained on measures nothing.

    Every bench loaded is checked, in the order of BUNDLED_BENCHES."""
    trained = {g["goal"]: ("goals.jsonl", g["line"]) for g in reversed(goals)}
    trained.update({p["goal"]: ("plans.jsonl", p["line"]) for p in reversed(plans) if p["goal"] not in trained})
    # a gallery line is its prompt with its memory: a memory-free prompt must be one no dialogue trains
    prompts = {d["prompt"]: d["line"] for d in reversed(dialogues)}
    for bench in benches.values():
        for it in bench.items:
            if bench.kind != "gallery" and it["goal"] in trained:
                name, line = trained[it["goal"]]
                raise CorpusError(bench.path, it["line"], "goal",
                                  f"{_show(it['goal'])} is also a training goal ({name} line {line}): bench lines "
                                  f"are held out")
            if bench.kind == "gallery" and not it["memory"] and it["prompt"] in prompts:
                raise CorpusError(bench.path, it["line"], "prompt",
                                  f"{_show(it['prompt'])} is also a training prompt (dialogues.jsonl line "
                                  f"{prompts[it['prompt']]}): bench lines are held out")
