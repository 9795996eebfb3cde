"""Deterministic generator of the corpus held out by core (assets/holdout_corpus/*.jsonl).

    python -m navi_model.corpus.generate [--out DIR]

Same code, same bytes: every choice comes from seeded random.Random objects over lists in a fixed
order, and a test regenerates the corpus and compares it byte for byte with the committed files.
The hand-written wild benches (*_wild.jsonl, listed in load.WILD_BENCHES) sit in the same folder;
the generator neither writes nor deletes them, and never emits a training line equal to one of them.

Held out by core (issue 16, holdout.split_cores): training files are built from training cores
only, and no training line holds a held-out core as whole words, typo'd lines included. Benches:

- bench_policy (seen): training cores under wrapper, filler, case and punctuation combinations
  that no training line has (compared after holdout.normalise);
- bench_paraphrase: the bare must-pass cores; each is trained under other wrappers (M-019);
- bench_policy_unseen: every held-out core once, under wrappers;
- bench_plan (unseen): composites of held-out cores, every held-out action core at least once, every
  connector, a third of them 3 steps;
- bench_plan_seen: composites of training cores in combinations and wrappers never trained;
- gallery: talker prompts (and the memory turns' prompts) from held-out cores.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from navi_model.corpus import catalog, holdout
from navi_model.corpus.catalog import INTENTS, IntentSpec

SEED = 20261124
GOALS_PER_INTENT = 120  # the fewest training lines per intent; an intent with more training cores gets one
# line per training core plus the must-pass repeats (_goals), so no core is left without a line
POLICY_BENCH_SIZE = 64
TRAIN_COMPOSITES = 3000  # composites must be many: 480 were memorised (11/21 on held-out plans)
TRAIN_TRIPLES = 1560  # of them 3 steps: 52% of composites, 23% of every line of plans.jsonl
# 80 plans are 188 steps, so the held-out bench holds every one of the 180 held-out action cores
# (40 plans held 94 of them, and its score was which ones it drew); the seen bench is as large, so
# that the gap gate compares like with like
PLAN_BENCH_SIZE, PLAN_BENCH_TRIPLES = 80, 28
PLAN_SEEN_SIZE, PLAN_SEEN_TRIPLES = 80, 28
CONVERSATIONS = 400
GALLERY_SIZE, GALLERY_MEMORY = 50, 8
MUST_PASS_LINES = 4  # training lines, without a typo, that hold each must-pass core
TYPO_SHARE = 0.08  # training lines with one typing slip
# texts fit the smallest profile: a goal and a prompt with its answer as memory (prompt, newline,
# answer of up to 50 bytes) in the tiny encoders (80 and 120 bytes), a plan goal in 120
MAX_GOAL_BYTES = 64
MAX_PLAN_BYTES = 116

GENERATED = ("intents.jsonl", "goals.jsonl", "bench_policy.jsonl", "bench_paraphrase.jsonl",
             "bench_policy_unseen.jsonl", "plans.jsonl", "bench_plan.jsonl", "bench_plan_seen.jsonl",
             "dialogues.jsonl", "gallery.jsonl")

BY_NAME = {s.name: s for s in INTENTS}
ACTIONS = tuple(s.name for s in catalog.action_intents())

# wrappers around a whole composite goal
PLAN_PREFIXES = ("", "", "", "please ", "can you ", "could you ", "navi, ", "hey navi, ", "pls ", "i want you to ")
PLAN_SOFT_PREFIXES = ("", "", "", "navi, ", "hey navi, ", "ok ")
PLAN_SUFFIXES = ("", "", "", " please", " thanks", " pls", " for me", " when you can")

# one-character typing slips: a letter dropped, two swapped, one doubled, or its neighbour hit
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
NEIGHBOURS = {}
for _r, _row in enumerate(_ROWS):
    for _i, _ch in enumerate(_row):
        near = [_row[j] for j in (_i - 1, _i + 1) if 0 <= j < len(_row)]
        near += [_ROWS[r][_i] for r in (_r - 1, _r + 1) if 0 <= r < 3 and _i < len(_ROWS[r])]
        NEIGHBOURS[_ch] = "".join(near)


def typo(rng: random.Random, text: str) -> str:
    """The text with one typing slip in a word of three letters or more."""
    spots = [i for i, c in enumerate(text) if c.isalpha() and c.islower()
             and i > 0 and text[i - 1].isalpha() and i + 1 < len(text) and text[i + 1].isalpha()]
    if not spots:
        return text
    i = rng.choice(spots)
    kind = rng.choice(("drop", "swap", "repeat", "neighbour"))
    if kind == "drop":
        return text[:i] + text[i + 1:]
    if kind == "swap" and text[i] != text[i + 1]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind == "repeat":
        return text[:i] + text[i] + text[i:]
    return text[:i] + rng.choice(NEIGHBOURS[text[i]]) + text[i + 1:]


def recase(rng: random.Random, text: str) -> str:
    """lower mostly; Capitalised, UPPER and a few mIxEd."""
    r = rng.random()
    if r < 0.72:
        return text
    if r < 0.87:
        return text[:1].upper() + text[1:]
    if r < 0.96:
        return text.upper()
    flip = rng.random() < 0.5
    out = []
    for c in text:
        if c.isalpha():
            out.append(c.upper() if flip else c)
            flip = not flip
        else:
            out.append(c)
    return "".join(out)


def punctuate(rng: random.Random, text: str, style: str) -> str:
    if rng.random() < 0.55:
        return text
    marks = {"question": ("?", "?", "??", "...", "."), "chat": ("!", "!", ".", "!!", "...")}
    return text + rng.choice(marks.get(style, ("!", ".", "...", "?", ".")))


def dress(rng: random.Random, spec: IntentSpec, core: str, slip: bool) -> str:
    """One phrasing of a core: filler, prefix, suffix, a typo when slip (mostly in the core), case,
    punctuation."""
    style = catalog.style_of(spec, core)
    prefixes, suffixes = catalog.wrappers_for(spec, core)
    prefix, suffix = rng.choice(prefixes), rng.choice(suffixes)
    filler = rng.choice(catalog.FILLERS) if rng.random() < 0.2 and "navi" not in prefix else ""
    inner = typo(rng, core) if slip and rng.random() < 0.75 else core
    text = f"{filler}{prefix}{inner}{suffix}"
    if slip and inner == core:
        text = typo(rng, text)
    return punctuate(rng, recase(rng, text), style)


def dress_plan(rng: random.Random, steps: list[tuple[str, str]], template: str, slip: bool) -> str:
    """A composite goal: the steps' cores (intent, core) joined by the template, then wrapped."""
    goal = template.format(**dict(zip("abc", (core for _, core in steps))))
    filler = rng.choice(catalog.FILLERS) if rng.random() < 0.1 else ""
    first = catalog.style_of(BY_NAME[steps[0][0]], steps[0][1])
    # "can you", "please" before a command only: "can you could you ..." is no one's phrasing
    prefix = rng.choice(PLAN_PREFIXES if first == "command" or template.startswith("first") else PLAN_SOFT_PREFIXES)
    prefix = prefix if not filler else ""
    goal = f"{filler}{prefix}{goal}{rng.choice(PLAN_SUFFIXES)}"
    if slip:
        goal = typo(rng, goal)
    return punctuate(rng, recase(rng, goal), "command")


class Rules:
    """What a line may hold: the cores of its own intents from its own side of the split."""

    def __init__(self, train: dict[str, tuple[str, ...]], held: dict[str, tuple[str, ...]], wild: set[str]):
        self.train, self.held = train, held
        self.train_index, self.held_index = holdout.CoreIndex(train), holdout.CoreIndex(held)
        self.wild = wild
        # a bare must-pass core is its paraphrase bench line: never a training line in any case
        self.reserved = {holdout.normalise(p) for s in INTENTS for p in s.must_pass}

    def ok(self, text: str, intents: list[str], unseen: bool, limit: int, slipped: bool = False) -> bool:
        """Whether the text may be a line of these intents: it fits, it is no wild text, it holds
        no core of the other side of the split nor of another intent, and each of its intents'
        cores in order (a slipped line may have lost them to its typo)."""
        if len(text.encode()) > limit or holdout.normalise(text) in self.wild:
            return False
        own, other = (self.held_index, self.train_index) if unseen else (self.train_index, self.held_index)
        if other.find(text):  # nothing of the other side of the split
            return False
        found = [intent for intent, _ in own.find(text)]
        if slipped:
            return set(found) <= set(intents)
        return found == intents


def _goals(rng: random.Random, rules: Rules, seen: set[str]) -> dict[str, list[str]]:
    """Training lines per intent, every training core in turn: GOALS_PER_INTENT, or one round of the
    cores (each training core once, each must-pass core MUST_PASS_LINES times) when that is longer."""
    out = {}
    for spec in INTENTS:
        cores = list(rules.train[spec.name])
        want = max(GOALS_PER_INTENT, len(cores) + (MUST_PASS_LINES - 1) * len(spec.must_pass))
        rng.shuffle(cores)
        # the must-pass cores need MUST_PASS_LINES clean lines, and an intent's lines are about one round
        # of its cores: each comes MUST_PASS_LINES times in a round, spread over it
        step = len(cores) // MUST_PASS_LINES
        for n in range(MUST_PASS_LINES - 1, 0, -1):
            cores[n * step:n * step] = spec.must_pass
        lines: list[str] = []
        plain = {p: 0 for p in spec.must_pass}  # typo-free lines holding each must-pass core
        k = 0
        while len(lines) < want:
            core = cores[k % len(cores)]
            k += 1
            for _ in range(50):
                slip = (core not in plain or plain[core] >= MUST_PASS_LINES) and rng.random() < TYPO_SHARE
                line = dress(rng, spec, core, slip)
                key = holdout.normalise(line)
                if key in seen or key in rules.reserved:
                    continue
                if not rules.ok(line, [spec.name], False, MAX_GOAL_BYTES, slip):
                    continue
                if core in plain and holdout.contains(line, core):
                    plain[core] += 1
                seen.add(key)
                lines.append(line)
                break
            if k > 100 * want:
                raise AssertionError(f"{spec.name}: cannot phrase {want} training lines")
        short = [p for p, n in plain.items() if n < MUST_PASS_LINES]
        if short:
            raise AssertionError(f"{spec.name}: must-pass cores {short} are in too few training lines")
        out[spec.name] = sorted(lines)
    return out


def _one_per_core(rng: random.Random, rules: Rules, cores: dict[str, tuple[str, ...]], per_intent: dict[str, int],
                  unseen: bool, taken: set[str]) -> list[dict]:
    """Bench lines of the policy: per_intent[i] lines of intent i, its cores in turn, never taken."""
    rows = []
    for spec in INTENTS:
        pool = list(cores[spec.name])
        rng.shuffle(pool)
        for j in range(per_intent[spec.name]):
            core = pool[j % len(pool)]
            for _ in range(200):
                line = dress(rng, spec, core, False)
                key = holdout.normalise(line)
                index = rules.held_index if unseen else rules.train_index
                if key in taken or key in rules.reserved or not rules.ok(line, [spec.name], unseen, MAX_GOAL_BYTES):
                    continue
                if index.find(line) == [(spec.name, core)]:  # "navi, --help" reads as the core "navi --help"
                    break
            else:
                raise AssertionError(f"no new bench phrasing of {core!r}")
            taken.add(key)
            rows.append({"kind": "policy", "goal": line, "intent": spec.name})
    return rows


def _composites(rng: random.Random, rules: Rules, cores: dict[str, tuple[str, ...]], sizes: list[int],
                unseen: bool, taken: set[str], training: bool, avoid_combos: set[tuple[str, ...]] = frozenset(),
                combos: set[tuple[str, ...]] | None = None) -> list[dict]:
    """One composite goal per entry of sizes (2 or 3 steps), each step a core of another intent.

    Training draws intents, cores and joins at random and slips a typo into a few lines; a bench
    takes the least used intents and cores and every join in turn, so that it covers them all.
    """
    rows = []
    used = {i: 0 for i in cores}
    core_use: dict[str, int] = {}
    turn = {2: 0, 3: 0}
    for size in sizes:
        joins = catalog.PAIR_JOINS if size == 2 else catalog.TRIPLE_JOINS
        template = rng.choice(joins) if training else joins[turn[size] % len(joins)]
        turn[size] += 1
        for _ in range(500):
            if training:
                intents = rng.sample(ACTIONS, size)
                steps = [rng.choice(cores[i]) for i in intents]
            else:
                intents = sorted(ACTIONS, key=lambda i: (used[i], rng.random()))[:size]
                rng.shuffle(intents)
                steps = [min(cores[i], key=lambda c: (core_use.get(c, 0), rng.random())) for i in intents]
            if tuple(steps) in avoid_combos:
                continue
            slip = training and rng.random() < TYPO_SHARE
            goal = dress_plan(rng, list(zip(intents, steps)), template, slip)
            key = holdout.normalise(goal)
            if key not in taken and rules.ok(goal, intents, unseen, MAX_PLAN_BYTES, slip):
                break
        else:
            raise AssertionError(f"cannot join {size} steps with {template!r}")
        taken.add(key)
        for i, c in zip(intents, steps):
            used[i] += 1
            core_use[c] = core_use.get(c, 0) + 1
        if combos is not None:
            combos.add(tuple(steps))
        rows.append({"goal": goal, "plan": intents})
    return rows


def follow_up(rng: random.Random, phrases: tuple[str, ...], avoid: set[str]) -> str:
    """One wording of a follow-up: a phrasing in a wrapper, case and punctuation, whose normalised
    text is not in avoid (wild texts, bench texts)."""
    for _ in range(200):
        phrase = rng.choice(phrases)
        text = f"{rng.choice(catalog.FOLLOW_UP_PREFIXES)}{phrase}{rng.choice(catalog.FOLLOW_UP_SUFFIXES)}"
        text = punctuate(rng, recase(rng, text), "question" if phrase in catalog.RECALL_FOLLOW_UPS else "command")
        if holdout.normalise(text) not in avoid:
            return text
    raise AssertionError(f"no follow-up wording outside the texts to avoid among {len(phrases)} phrasings")


def _dialogues(rng: random.Random, train_goals: dict[str, list[str]], wild: set[str]):
    names = sorted(BY_NAME)
    trained = {kind: pair[0] for kind, pair in holdout.split_follow_ups().items()}
    # the wording of a follow-up is drawn from a stream of its own: the turns drawn here, and every
    # file drawn after them, stay as they were when follow-ups had their first phrasings alone
    words = random.Random(f"{SEED}:follow-ups")
    rows = []
    for c in range(CONVERSATIONS):
        conv = f"c{c:04d}"
        n_turns = rng.choice((1, 2, 2, 3))
        last: IntentSpec | None = None
        for turn in range(n_turns):
            followup = last is not None and rng.random() < 0.5
            if followup and rng.random() < 0.5:
                rng.choice(catalog.AGAIN_PROMPTS)  # the draw that chose the wording until then
                prompt = follow_up(words, trained["again"], wild)
                response = last.again
            elif followup:
                rng.choice(catalog.RECALL_PROMPTS)
                prompt = follow_up(words, trained["recall"], wild)
                response = f"You asked me to {last.description}."
            else:
                last = BY_NAME[rng.choice(names)]
                prompt = rng.choice(train_goals[last.name])
                response = last.response
            rows.append({"conversation": conv, "turn": turn, "prompt": prompt, "response": response})
    return rows


def _gallery(rng: random.Random, rules: Rules, taken: set[str]):
    names = sorted(BY_NAME)
    pools = {n: list(rules.held[n]) for n in names}
    for n in names:
        rng.shuffle(pools[n])
    turn = {n: 0 for n in names}

    def prompt_of(spec: IntentSpec) -> str:
        pool = pools[spec.name]
        for _ in range(200):
            core = pool[turn[spec.name] % len(pool)]
            line = dress(rng, spec, core, False)
            key = holdout.normalise(line)
            if key not in taken and rules.ok(line, [spec.name], True, MAX_GOAL_BYTES):
                turn[spec.name] += 1
                taken.add(key)
                return line
        raise AssertionError(f"no new gallery prompt for {spec.name}")

    held = {kind: pair[1] for kind, pair in holdout.split_follow_ups().items()}
    words = random.Random(f"{SEED}:gallery-follow-ups")  # apart, as in _dialogues
    rows = []
    for i in range(GALLERY_SIZE - GALLERY_MEMORY):
        spec = BY_NAME[names[i % len(names)]]
        rows.append({"kind": "gallery", "prompt": prompt_of(spec), "reference": spec.response, "memory": []})
    for i in range(GALLERY_MEMORY):  # memory cases: the answer depends on the earlier dialogue
        spec = BY_NAME[names[(3 * i + 1) % len(names)]]
        earlier = {"prompt": prompt_of(spec), "response": spec.response}
        # asked in held-out words: no training prompt asks for a repeat or a recall this way
        if i % 2 == 0:
            rows.append({"kind": "gallery", "prompt": follow_up(words, held["again"], rules.wild | taken),
                         "reference": spec.again, "memory": [earlier]})
        else:
            rows.append({"kind": "gallery", "prompt": follow_up(words, held["recall"], rules.wild | taken),
                         "reference": f"You asked me to {spec.description}.", "memory": [earlier]})
    return rows


def _sizes(rng: random.Random, total: int, triples: int) -> list[int]:
    sizes = [3] * triples + [2] * (total - triples)
    rng.shuffle(sizes)
    return sizes


def wild_texts(folder: Path | None = None) -> set[str]:
    """The normalised texts of the hand-written wild benches, which no generated line may equal."""
    from navi_model.corpus.load import BUNDLED_BENCHES, WILD_BENCHES, read_jsonl

    if folder is None:
        # the folder the wild benches sit in, this checkout's when run from one, else the installed
        # one (until 2026-12-03 this read assets/corpus, which has no wild benches, and the guard
        # was empty; tests/test_wild_benches.py found no leak)
        folder = Path(__file__).resolve().parents[2] / "assets" / "holdout_corpus"
        if not folder.is_dir():
            from navi_model.assets import holdout_corpus_dir

            folder = holdout_corpus_dir()
    out = set()
    for name in WILD_BENCHES:
        path = folder / BUNDLED_BENCHES[name][0]
        if path.exists():
            out |= {holdout.normalise(t) for _, obj in read_jsonl(path) for t in holdout.bench_texts(obj)}
    return out


def build_corpus(wild: set[str] | None = None) -> dict[str, list[dict]]:
    """Every generated file of the corpus as a list of JSON objects, keyed by file name."""
    train, held = holdout.split_cores()
    rules = Rules(train, held, wild_texts() if wild is None else wild)
    rng = random.Random(SEED)

    files: dict[str, list[dict]] = {}
    files["intents.jsonl"] = [
        {"intent": s.name, "description": s.description, "meta": s.meta, "action": not (s.meta or s.chat)}
        for s in INTENTS
    ]
    trained: set[str] = set()  # normalised training goals, plan goals and dialogue prompts
    train_goals = _goals(rng, rules, trained)
    files["goals.jsonl"] = [{"goal": g, "intent": i} for i in sorted(train_goals) for g in train_goals[i]]

    # plans: single steps are the policy's training lines, then the composites
    singles = [{"goal": g, "plan": [s.name]} for s in catalog.action_intents() for g in train_goals[s.name]]
    train_cores = {i: train[i] for i in ACTIONS}
    held_cores = {i: held[i] for i in ACTIONS}
    combos: set[tuple[str, ...]] = set()
    composites = _composites(rng, rules, train_cores, _sizes(rng, TRAIN_COMPOSITES, TRAIN_TRIPLES), False,
                             trained, training=True, combos=combos)
    files["plans.jsonl"] = singles + composites
    files["dialogues.jsonl"] = _dialogues(rng, train_goals, rules.wild)

    taken = set(trained)  # bench texts: never a training text, never another bench's
    files["bench_paraphrase.jsonl"] = [
        {"kind": "paraphrase", "goal": p, "intent": s.name} for s in INTENTS for p in s.must_pass
    ]
    taken |= rules.reserved
    per_intent = {s.name: POLICY_BENCH_SIZE // len(INTENTS) + (k < POLICY_BENCH_SIZE % len(INTENTS))
                  for k, s in enumerate(INTENTS)}
    files["bench_policy.jsonl"] = _one_per_core(rng, rules, train, per_intent, False, taken)
    files["bench_policy_unseen.jsonl"] = _one_per_core(rng, rules, held, {s.name: len(held[s.name]) for s in INTENTS},
                                                       True, taken)
    files["bench_plan.jsonl"] = [{"kind": "plan", **r} for r in _composites(
        rng, rules, held_cores, _sizes(rng, PLAN_BENCH_SIZE, PLAN_BENCH_TRIPLES), True, taken, training=False)]
    files["bench_plan_seen.jsonl"] = [{"kind": "plan", **r} for r in _composites(
        rng, rules, train_cores, _sizes(rng, PLAN_SEEN_SIZE, PLAN_SEEN_TRIPLES), False, taken, training=False,
        avoid_combos=combos)]
    files["gallery.jsonl"] = _gallery(rng, rules, taken)
    return {name: files[name] for name in GENERATED}


def render(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False, sort_keys=False).encode("utf-8") + b"\n" for r in rows)


def write_corpus(out: Path) -> list[Path]:
    """Write the generated files into out; the hand-written wild benches there are left as they are."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in build_corpus().items():
        path = out / name
        path.write_bytes(render(rows))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    from navi_model.assets import holdout_corpus_dir

    ap = argparse.ArgumentParser(description="regenerate navi's bundled corpus")
    ap.add_argument("--out", type=Path, default=None, help="folder to write (default: assets/holdout_corpus)")
    args = ap.parse_args(argv)
    for path in write_corpus(args.out or holdout_corpus_dir()):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
