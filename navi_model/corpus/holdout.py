"""What a bench may share with training: the wild rule and the held-out-core rule.

1. The hand-written wild benches (assets/corpus/*_wild.jsonl) and training.

The bundled benches wrap catalog cores in prefixes and suffixes the generator also uses, so they
measure recall of the cores. A wild bench line measures understanding only if it shares nothing
with what the brain trained on. A wild text "shares a core" when, after normalise():

- any core phrasing of ANY intent of the catalog occurs in it as whole words
  ("git log --oneline" holds the core "git log"; "catalog" does not hold the core "git log"), or
- it equals a normalised training goal (goals.jsonl), plan goal (plans.jsonl) or dialogue prompt
  (dialogues.jsonl) of the bundled corpus.

Both apply to every text of a wild line: policy and plan goals, gallery prompts and the prompts of
gallery memory turns.

2. Held-out cores (issue 16). Each intent's cores are split, seeded, into training cores and
held-out cores (split_cores). A held-out core never occurs, as whole words after normalise(), in
any training line: goals, plan goals and dialogue prompts, typo'd lines included. The unseen
benches (bench_policy_unseen, bench_plan, gallery) are built from held-out cores only, so they
measure whether the brain understands phrasings it never trained on; the seen benches
(bench_policy, bench_plan_seen) from training cores under combinations never trained. A core
that holds another as whole words stays on the same side of the split as it, so neither side
leaks into the other; the catalog has no such pair across intents.

Pure python: no torch, so the checks run anywhere.
"""

from __future__ import annotations

import random
from pathlib import Path

from navi_model.corpus import catalog
from navi_model.corpus.catalog import INTENTS, IntentSpec
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


# --- held-out cores

SPLIT_SEED = "navi-held-out-cores-1"
HELD_OUT_PER_INTENT = 10  # of 40 or more cores; the must-pass cores are always trained
MAX_HELD_GROUP = 3
MAX_CORE_WORDS = 12


def contains(outer: str, inner: str) -> bool:
    """Whether inner occurs in outer as whole words, both normalised."""
    n = normalise(inner)
    return bool(n) and f" {n} " in f" {normalise(outer)} "


def _components(spec: IntentSpec) -> list[tuple[str, ...]]:
    """The intent's cores grouped so that a core holding another as whole words is with it."""
    cores = list(spec.cores)
    parent = list(range(len(cores)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(cores):
        for j, b in enumerate(cores):
            if i != j and contains(a, b):
                parent[root(i)] = root(j)
    groups: dict[int, list[str]] = {}
    for i, c in enumerate(cores):
        groups.setdefault(root(i), []).append(c)
    return sorted((tuple(g) for g in groups.values()), key=lambda g: cores.index(g[0]))


def split_cores() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Per intent: (training cores, held-out cores), disjoint, each in catalog order.

    Seeded per intent, so editing one intent's cores moves no other intent's split. Held-out
    cores are drawn as whole groups (see _components), terse ones in proportion, until
    HELD_OUT_PER_INTENT are drawn; a group holding a must-pass core, or more than MAX_HELD_GROUP
    cores, is always trained.
    """
    train, held = {}, {}
    for spec in INTENTS:
        rng = random.Random(f"{SPLIT_SEED}:{spec.name}")
        # a large group (git diff, git diff --stat, git diff main, ...) would fill the held-out side alone
        groups = [g for g in _components(spec) if not set(g) & set(spec.must_pass) and len(g) <= MAX_HELD_GROUP]
        rng.shuffle(groups)
        terse_quota = round(HELD_OUT_PER_INTENT * len(spec.terse) / len(spec.cores))
        chosen: list[str] = []
        for want_terse in (True, False):  # the terse quota first, then anything
            for g in groups:
                is_terse = all(c in spec.terse for c in g)
                room = HELD_OUT_PER_INTENT - len(chosen)
                if (want_terse and (not is_terse or sum(c in spec.terse for c in chosen) >= terse_quota)) \
                        or set(g) & set(chosen) or len(g) > room:
                    continue
                chosen.extend(g)
        held[spec.name] = tuple(c for c in spec.cores if c in chosen)
        train[spec.name] = tuple(c for c in spec.cores if c not in chosen)
    return train, held


FOLLOW_UPS_HELD = 10  # per kind of follow-up (again, recall), of about 50


def split_follow_ups() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Per kind of follow-up ("again", "recall"): (trained phrasings, held-out phrasings), seeded.

    The held-out ones ask the gallery's memory rows, so that those rows, too, ask in words no
    training prompt uses. A phrasing that holds another follow-up as whole words, or is held by one
    (of either kind: "again" in "once again please"), stays trained, as do the first phrasings
    (catalog.AGAIN_PROMPTS, RECALL_PROMPTS).
    """
    every = catalog.AGAIN_FOLLOW_UPS + catalog.RECALL_FOLLOW_UPS
    out = {}
    for kind, phrases, first in (("again", catalog.AGAIN_FOLLOW_UPS, catalog.AGAIN_PROMPTS),
                                 ("recall", catalog.RECALL_FOLLOW_UPS, catalog.RECALL_PROMPTS)):
        free = [p for p in phrases if p not in first and normalise(p)  # "!!" is no words at all
                and not any(q != p and (contains(p, q) or contains(q, p)) for q in every)]
        random.Random(f"{SPLIT_SEED}:follow-ups:{kind}").shuffle(free)
        held = set(free[:FOLLOW_UPS_HELD])
        out[kind] = (tuple(p for p in phrases if p not in held), tuple(p for p in phrases if p in held))
    return out


class CoreIndex:
    """Find catalog cores in a text as whole words, fast: by the text's word n-grams."""

    def __init__(self, cores_by_intent: dict[str, tuple[str, ...]]):
        self.owner: dict[str, tuple[str, str]] = {}  # normalised core -> (intent, core)
        for intent, cores in cores_by_intent.items():
            for c in cores:
                self.owner.setdefault(normalise(c), (intent, c))
        self.longest = max((len(n.split()) for n in self.owner), default=0)

    def find(self, text: str) -> list[tuple[str, str]]:
        """(intent, core) of the cores in the text, left to right, each the longest one starting
        there ("is the disk full" is found, not the "disk full" inside it), none overlapping."""
        words = normalise(text).split()
        out = []
        i = 0
        while i < len(words):
            for k in range(min(self.longest, len(words) - i), 0, -1):
                hit = self.owner.get(" ".join(words[i:i + k]))
                if hit is not None:
                    out.append(hit)
                    i += k
                    break
            else:
                i += 1
        return out


def held_out_leaks(corpus_root: Path) -> list[str]:
    """One message per training line that holds a held-out core or a held-out follow-up: goals, plan
    goals, dialogue prompts."""
    _, held = split_cores()
    index = CoreIndex(held)
    follow_ups = CoreIndex({kind: pair[1] for kind, pair in split_follow_ups().items()})
    out = []
    for name, key in (("goals.jsonl", "goal"), ("plans.jsonl", "goal"), ("dialogues.jsonl", "prompt")):
        for n, obj in read_jsonl(Path(corpus_root) / name):
            for intent, core in index.find(obj[key]):
                out.append(f"{name}:{n}: {obj[key]!r} holds the held-out core {core!r} of {intent}")
            for kind, phrase in follow_ups.find(obj[key]):
                out.append(f"{name}:{n}: {obj[key]!r} holds the held-out {kind} follow-up {phrase!r}")
    return out
