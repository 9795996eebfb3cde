"""Load and validate a corpus folder: every line parsed as JSON and checked against its schema.

Every error is a CorpusError naming the file, the line, the field and the value, so bad input
ends in one clear message (exit 2 from the CLI) and never in a traceback or a half-written
store. Lines are parsed by their grammar (JSON), never split on a delimiter (M-006).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 64 * 1024  # a corpus line is one goal or dialogue; more is a broken file

BENCH_KINDS = ("policy", "paraphrase", "plan", "gallery")


class CorpusError(ValueError):
    def __init__(self, path: Path | str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field = str(path), line, field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")


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
BUNDLED_BENCHES = {"policy": "bench_policy.jsonl", "paraphrase": "bench_paraphrase.jsonl",
                   "plan": "bench_plan.jsonl", "gallery": "gallery.jsonl"}


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
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(path, n, None, f"not valid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise CorpusError(path, n, None, f"expected a JSON object, got {type(obj).__name__}")
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
    for it in items:
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

    path = root / "plans.jsonl"
    plans = _validate(path, read_jsonl(path), SCHEMAS["plans.jsonl"])
    for p in plans:
        _check_plan(path, p, known)

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

    benches = {kind: load_bench(root / name, intents, kind) for kind, name in BUNDLED_BENCHES.items()}
    return Corpus(root, intents, goals, plans, dialogues, benches)
