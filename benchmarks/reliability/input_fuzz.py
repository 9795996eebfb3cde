"""The long form of the bad-input harnesses: the same hypothesis properties as the test suite,
with more examples, random rather than the suite's fixed ones, and a count of what they generated.

    python benchmarks/reliability/input_fuzz.py --examples 500

Runs, through the real command line in one pytest process (tests/test_input_fuzz.py and
tests/test_checkpoint_faults.py):
- `check --data` and `train --data` on a copy of the bundled corpus with one planted fault
  (malformed JSON, wrong types, missing and extra fields, huge lines, non-UTF-8 bytes, BOMs,
  empty and missing files, unknown intents, duplicates, held-out lines in training files, ...);
- `eval --bench` on a bench file with one planted fault;
- damaged checkpoint bytes whose sha256 is recorded with them, loaded as eval, resume and
  rollback load them.
Every case must end in exit 2 with one line naming the file, line and field (or, for a
checkpoint, a sound payload or a refusal naming it), no exception escaping, nothing written.
Hypothesis stops a property at its first failure and shrinks it: a failure is printed with the
smallest example it found, and the script exits 1.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROPERTIES = [
    "tests/test_input_fuzz.py::test_check_refuses_every_corpus_fault",
    "tests/test_input_fuzz.py::test_train_refuses_every_corpus_fault_and_writes_nothing",
    "tests/test_input_fuzz.py::test_eval_refuses_every_bench_fault_and_writes_nothing",
    "tests/test_checkpoint_faults.py::test_damaged_bytes_whose_sha256_was_recorded_load_sound_or_are_refused",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=500, help="hypothesis examples per property (default: 500)")
    ap.add_argument("--only", choices=["check", "train", "eval", "checkpoint"], action="append", default=[],
                    help="run only these properties (default: all four)")
    args = ap.parse_args()
    if args.examples < 1:
        ap.error(f"--examples must be at least 1, got {args.examples}")
    chosen = [p for p in PROPERTIES if not args.only or any(
        {"check": "check_refuses", "train": "train_refuses", "eval": "eval_refuses", "checkpoint": "damaged"}[o] in p
        for o in args.only)]

    with tempfile.TemporaryDirectory() as tmp:
        tally_path = Path(tmp) / "tally.jsonl"
        env = {**os.environ, "NAVI_FUZZ_EXAMPLES": str(args.examples), "NAVI_FUZZ_RANDOM": "1",
               "NAVI_FUZZ_TALLY": str(tally_path), "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short",
                            "--hypothesis-show-statistics", *chosen], cwd=REPO, env=env)
        seconds = time.perf_counter() - t0
        cases = [json.loads(line) for line in tally_path.read_text().splitlines()] if tally_path.exists() else []

    by_test = collections.Counter(c["test"] for c in cases)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for c in cases:
        by_kind[c["test"]][c["case"]] += 1
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}: {args.examples} examples per property, {seconds:.0f} s")
    for test, n in by_test.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(by_kind[test].items()))
        outcomes = collections.Counter(c.get("outcome") for c in cases if c["test"] == test and c.get("outcome"))
        ends = f"; {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}" if outcomes else ""
        print(f"  {test}: {n} cases ({kinds}){ends}")
    print(f"  cases in all: {len(cases)}; pytest exit {r.returncode} "
          f"({'no failure found' if r.returncode == 0 else 'a property failed: see above'})")
    return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
