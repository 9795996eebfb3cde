"""The long form of the crash harness: kill -9 a real trainer at random instants, many times.

    flock /tmp/navi-long.lock python benchmarks/reliability/crash.py --kills 20

One home for the whole session, as a person's would be: first an uninterrupted `train --steps N`
(the reference), then N trials. Each trial starts the same command, SIGKILLs it at an instant drawn
uniformly over the reference's wall time, and checks (tests/crash_harness.py): `PRAGMA
integrity_check`; no metric or event row lost that the trainer printed more than the store writer's
flush interval before the kill; `runs` shows the run crashed; `train --resume RUN` reaches the
reference's verdict gate by gate (or, killed before its first checkpoint, is refused with one line);
and a second `train --resume RUN`, started while the first one trains, is refused with one line and
adds no run. Prints a line per trial and a summary; exit 1 when any trial broke a promise.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import crash_harness as H  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="trials, one SIGKILL each (default: 20)")
    ap.add_argument("--steps", type=int, default=8, help="--steps of every trainer (default: 8)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the kill instants (default: random, printed)")
    ap.add_argument("--bundled-corpus", action="store_true",
                    help="train on the bundled corpus instead of the harness's small one (minutes a run)")
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    if args.kills < 1 or args.steps < 1:
        ap.error("--kills and --steps must be at least 1")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        data = None if args.bundled_corpus else H.small_corpus(root / "corpus")
        setup = H.Setup(root / "home", steps=args.steps, data=data)
        t0 = time.monotonic()
        reference = H.reference_run(setup)
        passed = sum(p for p, _ in reference.gates.values())
        print(f"reference: run {reference.run_id}, {reference.seconds:.1f} s, verdict {reference.verdict} "
              f"({passed}/{len(reference.gates)} gates passed); kill seed {seed}", flush=True)
        trials, failures, differences = [], [], collections.Counter()
        for i in range(args.kills):
            # every 5th trial: an instant anywhere in the process's life, startup included; the others
            # from the moment its run row exists (what a crash can break), to its end as the reference took
            if i % 5 == 0:
                delay, after = rng.uniform(0.0, reference.seconds), None
            else:
                delay, after = rng.uniform(0.0, reference.seconds - reference.row_at), H.RUN_LINE
            # every other trial kills the resume too, at a random instant of its life, then resumes that one
            resume_kill = rng.uniform(0.0, reference.seconds - reference.row_at) if i % 2 else None
            trial = H.kill_trial(setup, delay, after, second=True, resume_kill=resume_kill)
            found = H.judge(trial, reference)
            trials.append(trial)
            failures += [(i + 1, f) for f in found]
            differences.update(H.value_differences(trial, reference))
            print(line_of(i + 1, trial, found), flush=True)
        seconds = time.monotonic() - t0
    summarise(trials, failures, differences, reference, seconds, args)
    return 1 if failures else 0


def line_of(n: int, t: H.Trial, found: list[str]) -> str:
    first = ""
    if t.first is not None:
        first = f"first {kill_text(t.first)}; then its resume: "
    return f"{n:>3}. {first}{kill_text(t)}; " + ("ok" if not found else "FAILED: " + "; ".join(found))


def kill_text(t: H.Trial) -> str:
    where = ("ended before the kill" if not t.killed else "before its run row" if t.run_id is None
             else f"run {t.run_id} in {t.phase or 'its start'}"
             + ("" if t.status_at_kill == "running" else f" (its row already {t.status_at_kill}: the process was closing)"))
    ckpt = f"newest checkpoint {t.last_checkpoint[0]} {t.last_checkpoint[1]} step {t.last_checkpoint[2]}" \
        if t.last_checkpoint else "no checkpoint"
    parts = [f"kill at {t.delay:.1f} s{' after its run line' if t.after else ''}: {where}"]
    if t.killed and t.run_id is not None:
        parts += [ckpt, f"rows due {t.due} of {t.emitted} printed, lost {len(t.lost_metrics) + len(t.lost_events)}",
                  f"next start: {t.status_after}"]
        if t.resume_exit is not None:
            parts += [f"resume exit {t.resume_exit}" + (f" -> run {t.resumed_run} {t.resumed['verdict']}"
                                                        if t.resumed else ""),
                      f"second resume exit {t.second[0]}" if t.second else "no second resume"]
    return "; ".join(parts)


def mid_phase(checkpoint: tuple, steps: int) -> bool:
    """Whether a (model, phase, step) checkpoint is a periodic one, before its phase's last step
    (DA's steps continue SFT's count)."""
    _, phase, step = checkpoint
    end = {"policy": steps, "planner": steps, "sft": steps, "da": 2 * steps}.get(phase)
    return end is not None and step < end


def summarise(trials, failures, differences, reference, seconds, args) -> None:
    # every SIGKILL: the trials' own, and the first kill of each chain (a run whose resume was killed)
    kills = [t.first for t in trials if t.first is not None] + trials
    killed = [t for t in kills if t.killed]
    with_row = [t for t in killed if t.run_id is not None]
    resumed = [t for t in trials if t.killed and t.resumed is not None]
    refused = [t for t in trials if t.killed and t.run_id is not None and t.checkpoints == 0]
    phases = collections.Counter((t.phase or "its start") for t in with_row)
    seconds_per = [t.seconds for t in trials]
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}: {len(trials)} trials "
          f"(--steps {args.steps}, {'bundled' if args.bundled_corpus else 'small'} corpus) in {seconds:.0f} s")
    print(f"  SIGKILLs: {len(killed)} landed ({len(kills) - len(killed)} trainers ended first), "
          f"{sum(t.first is not None for t in trials)} of them on a resume; {len(killed) - len(with_row)} before "
          f"the run row; {len(with_row)} in a run, by the last phase it printed: "
          + ", ".join(f"{p} {n}" for p, n in sorted(phases.items())))
    newest = collections.Counter(" ".join(map(str, t.last_checkpoint[:2])) for t in with_row if t.last_checkpoint)
    print(f"  newest checkpoint at the kill (model, phase): none {sum(t.checkpoints == 0 for t in with_row)}, "
          + ", ".join(f"{m} {n}" for m, n in sorted(newest.items())))
    periodic = sum(1 for t in with_row if t.last_checkpoint and mid_phase(t.last_checkpoint, args.steps))
    print(f"  of which a periodic checkpoint inside a phase (the resume continues mid-phase): {periodic}")
    print(f"  killed after the row was finished (the process was closing): "
          f"{sum(t.status_at_kill != 'running' for t in with_row)}")
    print(f"  integrity_check ok: {sum(t.integrity == 'ok' for t in killed)} of {len(killed)} "
          f"(foreign key violations: {sum(t.fk_violations for t in killed)})")
    print(f"  rows printed before the kill: {sum(t.emitted for t in with_row)}, due (older than "
          f"{H.FLUSH_INTERVAL_S} s): {sum(t.due for t in with_row)}, lost: "
          f"{sum(len(t.lost_metrics) + len(t.lost_events) for t in with_row)}; within the flush interval and "
          f"not stored: {sum(t.in_window for t in with_row)}")
    running = [t for t in with_row if t.status_at_kill == "running"]
    print(f"  marked crashed by the next start: {sum(t.status_after == 'crashed' for t in running)} of {len(running)}")
    same = sum(1 for t in resumed if not any(f.startswith(("gate", "verdict")) for f in H.judge_resume(t, reference)))
    print(f"  resumed to the reference's verdict ({reference.verdict}, gate by gate): {same} of {len(resumed)}; "
          f"refused for want of a checkpoint (one line, exit 2): {len(refused)}")
    seconds_ok = [t for t in trials if t.second is not None]
    print(f"  second resume while the first trained: refused {sum(t.second[0] == 2 for t in seconds_ok)} of "
          f"{len(seconds_ok)}")
    print(f"  gate values that differ from the reference: "
          f"{', '.join(f'{g} in {n} trials' for g, n in sorted(differences.items())) or 'none'}")
    resumes = sum(1 for t in kills if t.killed and t.run_id is not None)  # each killed run got one resume
    print(f"  trainer processes started: {1 + len(trials) + resumes + len(seconds_ok)} (the reference, the "
          f"trials' trainers, a resume per killed run, second resumes); seconds a trial: "
          f"{min(seconds_per):.0f} to {max(seconds_per):.0f}")
    print(f"  failures: {len(failures)}" + "".join(f"\n    trial {n}: {f}" for n, f in failures))


if __name__ == "__main__":
    sys.exit(main())
