"""Typing noise for training inputs: the models read bytes, so they learn to shrug off what people
type by seeing it in training.

One noisy variant of a text changes it in one way people do: a case change, a one-character typo
(a drop, a swap, a repeat, a neighbouring key), a doubled space or a stray punctuation mark. The
noise is seeded and decided once, when the data is built: a noisy row is an extra training row
beside its clean source, and it counts as that source for coverage (M-011), so the step budget does
not grow with the rate. Only what a model reads is noised (goals, prompts), never what it must
answer (intents, plans, responses).
"""

from __future__ import annotations

import random
from typing import Callable

# each letter's neighbours on a qwerty keyboard: the typo a finger makes
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS: dict[str, str] = {}
for r, row in enumerate(_ROWS):
    for c, ch in enumerate(row):
        near = [row[c - 1] if c > 0 else "", row[c + 1] if c + 1 < len(row) else ""]
        for other in (r - 1, r + 1):
            if 0 <= other < len(_ROWS):
                near += [_ROWS[other][k] for k in (c - 1, c, c + 1) if 0 <= k < len(_ROWS[other])]
        NEIGHBOURS[ch] = "".join(n for n in near if n)

STRAY = "?!.,;"


def _letters(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch.isalpha()]


def case_change(text: str, rng: random.Random) -> str:
    how = rng.randrange(4)
    if how == 0:
        return text.upper()
    if how == 1:
        return text[:1].upper() + text[1:]
    if how == 2:
        return text.lower()
    letters = _letters(text)
    flip = set(rng.sample(letters, min(len(letters), rng.randint(1, 3))))
    return "".join(ch.swapcase() if i in flip else ch for i, ch in enumerate(text))


def drop(text: str, rng: random.Random) -> str:
    letters = _letters(text)
    if len(letters) < 4:
        return text
    i = rng.choice(letters)
    return text[:i] + text[i + 1:]


def swap(text: str, rng: random.Random) -> str:
    pairs = [i for i in range(len(text) - 1) if text[i].isalpha() and text[i + 1].isalpha() and text[i] != text[i + 1]]
    if not pairs:
        return text
    i = rng.choice(pairs)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def repeat(text: str, rng: random.Random) -> str:
    letters = _letters(text)
    if not letters:
        return text
    i = rng.choice(letters)
    return text[:i + 1] + text[i] + text[i + 1:]


def neighbour_key(text: str, rng: random.Random) -> str:
    keys = [i for i in _letters(text) if text[i].lower() in NEIGHBOURS]
    if not keys:
        return text
    i = rng.choice(keys)
    near = rng.choice(NEIGHBOURS[text[i].lower()])
    return text[:i] + (near.upper() if text[i].isupper() else near) + text[i + 1:]


def double_space(text: str, rng: random.Random) -> str:
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text + " "
    i = rng.choice(spaces)
    return text[:i] + " " + text[i:]


def stray_punctuation(text: str, rng: random.Random) -> str:
    mark = rng.choice(STRAY)
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if spaces and rng.random() < 0.5:
        i = rng.choice(spaces)  # after a word: "run, the tests"
        return text[:i] + mark + text[i:]
    return text + mark


KINDS: dict[str, Callable[[str, random.Random], str]] = {
    "case": case_change, "drop": drop, "swap": swap, "repeat": repeat, "neighbour": neighbour_key,
    "double_space": double_space, "punctuation": stray_punctuation,
}


def noisy_variant(text: str, rng: random.Random, max_bytes: int | None = None) -> str | None:
    """One changed copy of text, or None when no kind of noise changed it within max_bytes."""
    kinds = list(KINDS)
    rng.shuffle(kinds)
    for kind in kinds:
        out = KINDS[kind](text, rng)
        if out != text and (max_bytes is None or len(out.encode("utf-8")) <= max_bytes):
            return out
    return None


def augment(rows: list[dict], key: str, rate: float, seed: int, max_bytes: int | None = None) -> list[dict]:
    """rows plus a noisy copy of `rate` of them (row[key] noised), each copy after the clean rows.

    A copy keeps every other field and names its clean text under "source", which coverage counts
    it as. rate 0 returns rows unchanged."""
    if rate <= 0:
        return rows
    rng = random.Random(seed)
    extra = []
    for i in _chosen(len(rows), rate, rng):
        row = rows[i]
        text = noisy_variant(row[key], rng, max_bytes)
        if text is not None:
            extra.append({**row, key: text, "source": row.get("source", row[key])})
    return rows + extra


def _chosen(n: int, rate: float, rng: random.Random) -> list[int]:
    """Exactly round(rate * n) of n indices, seeded, in order: the share is the rate on any corpus
    size, so the noise_share gate measures lost copies, not the luck of a coin per row."""
    return sorted(rng.sample(range(n), min(n, round(rate * n))))


def noisy_share(rows: list[dict], key: str) -> float:
    """The share of rows that are noisy copies (row[key] changed from its source): the run's metric."""
    return sum("source" in r and r[key] != r["source"] for r in rows) / len(rows) if rows else 0.0


def augment_conversations(rows: list[dict], rate: float, seed: int,
                          fits: Callable[[dict], bool] | None = None) -> list[dict]:
    """Dialogue rows plus a noisy copy of `rate` of the conversations, appended whole (a turn's
    memory is found by position, so a conversation's turns stay together and in order)."""
    if rate <= 0:
        return rows
    rng = random.Random(seed)
    by_conversation: dict[str, list[dict]] = {}
    for row in rows:
        by_conversation.setdefault(row["conversation"], []).append(row)
    extra = []
    names = list(by_conversation)
    for conversation in (names[i] for i in _chosen(len(names), rate, rng)):
        for turn in by_conversation[conversation]:
            text = noisy_variant(turn["prompt"], rng) or turn["prompt"]
            noisy = {**turn, "conversation": f"{conversation}~noisy", "prompt": text,
                     "source": turn.get("source", turn["prompt"])}
            extra.append(noisy if fits is None or fits(noisy) else {**noisy, "prompt": turn["prompt"]})
    return rows + extra
