"""The separation rule between the hand-written wild benches (assets/benches/) and training.

The bundled benches wrap catalog cores in prefixes and suffixes the generator also uses, so they
measure recall of the cores. A wild bench line measures understanding only if it shares nothing
with what the brain trained on. A wild text "shares a core" when, after normalise():

- any core phrasing of ANY intent of the catalog occurs in it as whole words
  ("git log --oneline" holds the core "git log"; "catalog" does not hold the core "git log"), or
- it equals a normalised training goal (goals.jsonl), plan goal (plans.jsonl) or dialogue prompt
  (dialogues.jsonl) of the bundled corpus.

Both apply to every text of a wild line: policy and plan goals, gallery prompts and the prompts of
gallery memory turns. Pure python: no torch, so the check runs anywhere.
"""

from __future__ import annotations

from pathlib import Path

from navi_model.corpus.catalog import INTENTS
from navi_model.corpus.load import read_jsonl

# quotes are dropped (don't -> dont, as people type it); the other marks separate words, so
# "lint,test" stays two words and "main.py" becomes "main py" on both sides of a comparison.
# Everything else ("-", "/", "=", "*") is kept: shell flags such as "--stat" stay one word.
_DROP = str.maketrans({"'": None, '"': None})
_SEPARATE = str.maketrans({c: " " for c in ".,!?;:"})


def normalise(text: str) -> str:
    """Lowercase, quotes removed, . , ! ? ; : turned into spaces, whitespace collapsed and stripped."""
    return " ".join(text.lower().translate(_DROP).translate(_SEPARATE).split())


def shared_cores(text: str, cores) -> list[str]:
    """The cores (normalised, sorted, each once) that occur in the normalised text as whole words."""
    padded = f" {normalise(text)} "
    found = set()
    for core in cores:
        n = normalise(core)
        if n and f" {n} " in padded:
            found.add(n)
    return sorted(found)


def catalog_cores() -> list[str]:
    """Every core phrasing of every intent of the catalog, meta and chat intents included."""
    return [core for spec in INTENTS for core in spec.cores]


def training_texts(corpus_root: Path) -> dict[str, str]:
    """normalised text -> "file:line" for every training goal, plan goal and dialogue prompt."""
    out: dict[str, str] = {}
    for name, key in (("goals.jsonl", "goal"), ("plans.jsonl", "goal"), ("dialogues.jsonl", "prompt")):
        for n, obj in read_jsonl(Path(corpus_root) / name):
            out.setdefault(normalise(obj[key]), f"{name}:{n}")
    return out


def bench_texts(item: dict) -> list[str]:
    """The texts of one bench item that the rule applies to: its goal, or its prompt and memory prompts."""
    if "goal" in item:
        return [item["goal"]]
    return [item["prompt"], *(turn["prompt"] for turn in item.get("memory", []))]


def violations(texts, cores, training: dict[str, str]) -> list[str]:
    """One message per text that breaks the rule; an empty list when every text is held out."""
    out = []
    for text in texts:
        found = shared_cores(text, cores)
        if found:
            out.append(f"{text!r} holds catalog core(s) {', '.join(repr(c) for c in found)}")
        where = training.get(normalise(text))
        if where is not None:
            out.append(f"{text!r} equals the training line {where}")
    return out
