"""Data-parallel training through torchrun: the worker entry, the launcher of `train --nproc N`, rank failures.

`torchrun --nproc_per_node N -m navi_tui --no-ui train ...` runs navi_tui in N processes (its
__main__ sends a torchrun worker here). Rank 0 runs the normal headless train with the store;
the other ranks run the same training with no store, no writer, no Discord and no output.
navi_model must not import the store or navi_tui, so the entry point is navi_tui, not navi_model.

A non-zero rank that fails writes one small file, HOME/ranks/<launch id>/rank<N>.json, and rank
0 records it in the store as an event ("rank 1 failed: ...") before it marks the run failed.
The launch id (NAVI_LAUNCH_ID, or torchrun's own run id) keeps one launch's files apart from
another's.

`navi-tui --no-ui train --nproc N` re-launches itself through torchrun on this host (standalone
rendezvous) and answers with the store's verdict for the run, like a one-process train.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

from navi_model.config import Profile

LAUNCH_ENV = "NAVI_LAUNCH_ID"
# set by `train --nproc`: rank 0 then leaves the verdict to the launcher, which reads the store, so
# torchrun does not report a run whose gates failed as a crashed worker
LAUNCHER_ENV = "NAVI_LAUNCHER"


def launch_id() -> str:
    return os.environ.get(LAUNCH_ENV) or f"torchrun-{os.environ.get('TORCHELASTIC_RUN_ID', 'none')}"


def ranks_dir(home: Path, launch: str) -> Path:
    return home / "ranks" / launch


def batch_split_error(profile: Profile, nproc: int) -> str | None:
    """The first phase whose global batch does not split evenly over nproc processes, in one line."""
    from navi_model.talker import sft_sampler_batch

    t = profile.talker_train
    for phase, batch in (("policy", profile.policy_train.batch_size), ("planner", profile.planner_train.batch_size),
                         ("talker sft", t.batch_size), ("talker da", sft_sampler_batch(t))):
        if batch % nproc:
            return (f"--nproc {nproc}: the {phase} batch size of profile {profile.name} is {batch}, which does not "
                    f"split evenly over {nproc} processes")
    return None


# --- rank failures

def write_rank_failure(home: Path, launch: str, rank: int, message: str, code: int) -> Path:
    """One small JSON file per failed rank, written whole (a temporary name, then a rename)."""
    folder = ranks_dir(home, launch)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "exit": code, "error": message[:1000], "pid": os.getpid(),
                               "time": time.time()}))
    tmp.replace(path)
    return path


def read_rank_failures(home: Path, launch: str, wait_s: float = 0.0) -> list[dict]:
    """The failure files of one launch, by rank; waits up to wait_s for a first one to appear."""
    folder = ranks_dir(home, launch)
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for path in sorted(folder.glob("rank*.json")) if folder.is_dir() else []:
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a file being replaced: read it on the next look
        if found or time.monotonic() >= deadline:
            return sorted(found, key=lambda f: f.get("rank", 0))
        time.sleep(0.1)


def failure_message(failure: dict) -> str:
    return f"rank {failure.get('rank')} failed: {failure.get('error')}"


# --- the worker

def worker_main(argv: list[str] | None = None) -> int:
    """`python -m navi_tui ...` inside a torchrun job: every rank runs the command line; what a rank
    that is not rank 0 would print goes nowhere, and its failure goes to a file for rank 0."""
    from navi_tui.cli import main, resolve_home

    rank = int(os.environ["RANK"])
    if rank != 0:
        sys.stdout = open(os.devnull, "w")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: bad usage, already printed
        code = e.code if isinstance(e.code, int) else 2
    except BaseException as e:  # noqa: BLE001 - the rank's failure is reported, then the rank exits 1
        message = f"{type(e).__name__}: {e}"
        if rank == 0:
            traceback.print_exc()
        else:
            print(f"navi-tui: rank {rank} failed: {message}", file=sys.stderr)
        _record_failure(argv, resolve_home, rank, message, 1)
        return 1
    if rank == 0 and code == 1:
        # a verdict (a gate failed), not a crash: under train --nproc the launcher reads it from the store
        return 0 if os.environ.get(LAUNCHER_ENV) else 1
    if code:
        _record_failure(argv, resolve_home, rank, f"exit {code}", code)
    return code


def _record_failure(argv, resolve_home, rank: int, message: str, code: int) -> None:
    record_rank_failure(resolve_home(_home_arg(argv)), rank, message, code)


def record_rank_failure(home: Path, rank: int, message: str, code: int) -> None:
    """This rank's failure file for this launch (written again with the same words if it exists)."""
    try:
        write_rank_failure(home, launch_id(), rank, message, code)
    except OSError as e:
        print(f"navi-tui: rank {rank}: could not record its failure: {e}", file=sys.stderr)


def _home_arg(argv: list[str]) -> Path | None:
    for i, a in enumerate(argv):
        if a == "--home" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if a.startswith("--home="):
            return Path(a.split("=", 1)[1])
    return None


# --- the launcher of train --nproc N

def without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(argv: list[str], nproc: int, home: Path) -> int:
    """Run `python -m navi_tui <argv without --nproc>` in nproc processes through torchrun and
    return the store's verdict for the run they wrote: 0 every gate passed, 1 a gate failed (or
    the run failed), 2 bad input. SIGINT or SIGTERM stops the run at a step boundary."""
    launch = uuid.uuid4().hex[:12]
    env = {**os.environ, LAUNCH_ENV: launch, LAUNCHER_ENV: "1"}
    # torchrun would pick 1 thread per process and warn; the cores are shared out instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "navi_tui", *without_nproc(argv)]
    # its own session: a ctrl-c in the terminal reaches this process, which passes it on once
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    asked = []

    def on_signal(signum, frame):
        if not asked:
            print("\nstopping the ranks after their next agreed step", flush=True)
        asked.append(signum)
        # torchrun passes SIGTERM to every worker, whose handler stops at a step boundary
        proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return verdict(home, launch, rc)


def verdict(home: Path, launch: str, rc: int) -> int:
    """The exit code of a launch, from the store's row of the run it wrote."""
    from navi_tui.home import open_store

    failures = read_rank_failures(home, launch)
    if not (home / "navi.db").is_file():
        return 2 if any(f.get("exit") == 2 for f in failures) else (1 if rc else 0)
    with open_store(home, create=False) as store:
        run = next((r for r in store.list_runs()
                    if json.loads(r["config_json"] or "{}").get("launch_id") == launch), None)
        if run is None:
            # refused before the run row: the ranks said why on stderr
            return 2 if any(f.get("exit") == 2 for f in failures) else (1 if rc else 0)
        if run["status"] == "running":
            # rank 0 was killed before it could finish the run (a rank hung in a collective until
            # torchrun's timeout): every process is gone, so the launcher records what it knows
            recorded = {e["message"] for e in store.events(run["id"])}
            store.insert_events([{"run_id": run["id"], "level": "error", "kind": "rank",
                                  "message": failure_message(f), "data": f}
                                 for f in failures if failure_message(f) not in recorded])
            store.mark_crashed_runs()
            run = store.get_run(run["id"])
    if run["status"] in ("completed", "stopped") and run["verdict"] == "pass":
        return 0
    return 1
