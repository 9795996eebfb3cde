"""A console follows a run while another process writes it: is every row seen once, with no lock error?

    python benchmarks/reliability/concurrency.py --steps 10000                   # the long form
    python benchmarks/reliability/concurrency.py --steps 200 --step-ms 2         # the test's form
    python benchmarks/reliability/concurrency.py --writer trainer --steps 30     # the real trainer

The writer is a process of its own. `--writer emitter` (the default) writes what a headless
trainer writes, through the same parts: the real StoreWriter thread for metrics and events (five
metrics every log_every = 25 steps, a phase line, a warm line, a gallery sample every 250 talker
steps) and the run's own Store connection for the run row, a real checkpoint file per phase and
its row, the phase's gate rows and the run's end. Its three phases take --steps steps each at
--step-ms a step. `--writer trainer` is the real `python -m navi_tui --no-ui --profile tiny train
--steps N` instead; on a 2-core CPU it steps at 0.1 to 4 s a step, too slow for the long form.

The reader is the console itself (navi_tui.app.NaviApp through Textual's run_test), following
the run as it follows any run another process writes: rows past its cursor every
follow_interval, the run's gates and checkpoints, the runs table every 2 s. What its store calls
return is recorded. A second reader runs `navi-tui --no-ui runs --json` in a loop all along.
After each phase the emitter waits until the console has read the store past it (the harness
answers its line on stdin), so the console reads every phase while the run runs, however slow
the machine; the real trainer does not wait.

Checks: no "database is locked" (or any sqlite3.OperationalError) in any process's output, in the
run's log or in the console; the console saw exactly the run's metric and event rows, each once, in id order; its loss
plot holds every stored loss; it read rows while the run was still running; the writer and every
`runs --json` exited 0. Exit 0 when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

LOCK_WORDS = ("database is locked", "OperationalError", "Traceback")
PHASES = ("policy", "planner", "sft")
LOG_EVERY = 25  # the tiny policy's log window
SAMPLE_EVERY = 250  # a gallery sample event, as the talker writes them
PHASE_WRITTEN = "emitter: committed every row of phase"  # a gated emitter's line, then it waits for stdin


def emit_run(home: Path, steps: int, step_ms: float, gated: bool = False) -> int:
    """What a trainer writes, at step_ms a step; runs in the writer process.

    gated: after each phase's rows are committed, say so on stdout (PHASE_WRITTEN) and wait for a
    line on stdin before the next phase or the run's end: the harness sends it once the console
    has read the store past that phase."""
    import torch

    from store import Store, StoreWriter, save_checkpoint

    store = Store(home)
    config = {"steps": {"policy": steps, "planner": steps, "talker": steps}, "profile": {"talker_train": {"da_steps": 0}}}
    run_id = store.create_run(profile="tiny", command="train", config=config)
    writer = StoreWriter(store.path).start()
    t0 = time.perf_counter()
    done = 0
    for phase in PHASES:
        writer.event(run_id, "info", "phase", f"{phase}: {steps} steps")
        for step in range(steps):
            done += 1
            # keep to the rate: sleep to this step's due time, whatever the writes cost
            wait = t0 + done * step_ms / 1000.0 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if step == 0:
                writer.event(run_id, "info", "warm", f"{phase}: step ready after 0.1s")
            if (step + 1) % LOG_EVERY == 0 or step == steps - 1:
                writer.metrics(run_id, step + 1, phase, {"loss": 1.0 / (step + 1), "train_acc": 0.5, "lr": 1e-3,
                                                         "tokens_per_s": 1e5, "step_ms": step_ms})
            if phase == "sft" and (step + 1) % SAMPLE_EVERY == 0:
                writer.event(run_id, "info", "sample", f"sample at step {step + 1}",
                             {"step": step + 1, "prompt": "hello", "output": "hi", "reference": "hi"})
        path, sha = save_checkpoint(home, run_id, f"{phase}_{steps:06d}", {"step": steps, "w": torch.zeros(64)})
        cid = store.add_checkpoint(run_id, step=steps, phase=phase, model=phase, path=path, sha256=sha)
        writer.event(run_id, "info", "checkpoint", f"checkpoint {cid}: {phase}", {"checkpoint_id": cid, "step": steps})
        store.add_evals(run_id, cid, [{"gate": f"coverage_{phase}", "value": 3.0, "threshold": ">= 3", "passed": True,
                                       "detail": None}])
        if gated:
            writer.flush()
            print(f"{PHASE_WRITTEN} {phase}", flush=True)
            paused = time.perf_counter()
            sys.stdin.readline()
            t0 += time.perf_counter() - paused  # the next phase keeps to the rate from here, no burst
    writer.flush()
    store.finish_run(run_id, status="completed", verdict="pass", message="emitted")
    writer.close()
    store.close()
    return 0


class FixedStats:
    """System readings that do not move: the console's system pane is no part of this harness."""

    def read(self) -> dict:
        return {"cpu_percent": 0.0, "ram_percent": 0.0, "ram_used_gib": 0.0, "ram_total_gib": 1.0, "cpus": 2,
                "gpu": None, "gpu_error": "no GPU"}


class RecordingReads:
    """Wraps the console store's cursor reads: what each call returned, by id, and when.

    reader_fault plants a reader bug for the judge's tests: "skip" drops one row of the second
    batch, "duplicate" returns the second batch twice (a cursor that did not move once)."""

    def __init__(self, store, reader_fault: str | None = None):
        self.store, self.fault = store, reader_fault
        self.metric_reads = 0  # calls begun, empty ones too: the harness waits on it
        self.metric_ids: list[int] = []
        self.event_ids: list[int] = []
        self.batches_while_running = 0
        self._metric_calls = 0
        self._again: list[dict] | None = None
        self._plain_metrics, self._plain_events = store.metrics_after, store.events_after
        store.metrics_after, store.events_after = self.metrics_after, self.events_after

    def metrics_after(self, run_id, cursor_id, limit=20000):
        self.metric_reads += 1
        if self._again is not None:
            rows, self._again = self._again, None  # the planted replay of the batch before
        else:
            rows = self._plain_metrics(run_id, cursor_id, limit)
        if rows:
            self._metric_calls += 1
            if self._metric_calls == 2 and self.fault == "skip" and len(rows) > 1:
                rows = rows[1:]
            elif self._metric_calls == 2 and self.fault == "duplicate":
                self._again = rows
            self.metric_ids.extend(r["id"] for r in rows)
            self._note_running(run_id)
        return rows

    def events_after(self, run_id, cursor_id, limit=5000):
        rows = self._plain_events(run_id, cursor_id, limit)
        self.event_ids.extend(r["id"] for r in rows)
        return rows

    def _note_running(self, run_id) -> None:
        run = self.store.get_run(run_id)
        if run and run["status"] == "running":
            self.batches_while_running += 1


def runs_loop(home: Path, env: dict, stop: threading.Event, out: list[dict]) -> None:
    """The second reader: `runs --json` again and again until the writer is done; once at least,
    however late this thread gets to run."""
    while True:
        done = subprocess.run([sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", "runs", "--json"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        parsed = True
        try:
            json.loads(done.stdout)
        except ValueError:
            parsed = False
        out.append({"exit": done.returncode, "parsed": parsed, "stderr": done.stderr[-2000:]})
        if stop.is_set():
            return


class PhaseGate:
    """The harness's side of a gated emitter: the phases it has committed (its PHASE_WRITTEN lines in
    its log) against the ones the harness let it go on from."""

    def __init__(self, writer: subprocess.Popen, log: Path):
        self.writer, self.log, self.released = writer, log, 0

    def waiting(self) -> str | None:
        """The phase the emitter committed and waits after, or None."""
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.startswith(PHASE_WRITTEN)]
        return lines[self.released].rsplit(" ", 1)[1] if len(lines) > self.released else None

    def release(self) -> None:
        self.writer.stdin.write(b"go\n")
        self.writer.stdin.flush()
        self.released += 1


async def follow_with_console(home: Path, writer: subprocess.Popen, follow_interval: float,
                              reader_fault: str | None, timeout: float, gate: PhaseGate | None = None) -> dict:
    import torch

    from navi_tui.app import NaviApp

    app = NaviApp(home, profile="tiny", device=torch.device("cpu"), follow_interval=follow_interval,
                  system_stats=FixedStats())
    reads = RecordingReads(app.store, reader_fault)
    problems: list[str] = []
    async with app.run_test(size=(140, 45)) as pilot:
        deadline = time.monotonic() + timeout

        async def read_past(what: str) -> None:
            """Until the console has read the store past everything committed now: its next read
            begins after this, and the one after begins once that read's rows are in the view
            (follow reads, shows, then reads again at its next interval)."""
            begun = reads.metric_reads
            while reads.metric_reads < begun + 2:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the console did not read the store after {what} within {timeout:.0f} s")
                await pilot.pause(0.05)

        while writer.poll() is None and time.monotonic() < deadline:
            phase = gate.waiting() if gate is not None else None
            if phase is not None:
                # each phase is read while the run runs: the emitter waits until the console has read it
                await read_past(f"the {phase} phase")
                gate.release()
            await pilot.pause(0.05)
        # the run's end is committed after its last rows: the reads after the writer's exit hold the rest
        await read_past("the writer's exit")
        loss_points = sum(len(v) for v in app.view.loss.values())
        status = app.view.status
        if app.last_notice and any(w in app.last_notice for w in LOCK_WORDS):
            problems.append(app.last_notice)
    return {"metric_ids": reads.metric_ids, "event_ids": reads.event_ids, "loss_points": loss_points,
            "batches_while_running": reads.batches_while_running, "console_status": status,
            "console_problems": problems, "run_id": app.view.run_id}


def run(steps: int, step_ms: float = 5.0, *, writer_kind: str = "emitter", follow_interval: float = 0.5,
        reader_fault: str | None = None, runs_reader: bool = True, timeout: float = 3600.0) -> dict:
    from store import Store

    home = Path(tempfile.mkdtemp(prefix="navi-concurrency-")) / "home"
    logs = Path(tempfile.mkdtemp(prefix="navi-concurrency-logs-"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NAVI_HOME": ""}
    if writer_kind == "trainer":
        command = [sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", "--profile", "tiny", "train",
                   "--steps", str(steps)]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--emit", str(home), "--steps", str(steps),
                   "--step-ms", str(step_ms), "--gated"]
    t0 = time.monotonic()
    with open(logs / "out", "wb") as out, open(logs / "err", "wb") as err:
        gated = writer_kind != "trainer"  # the real trainer cannot wait for the console; the emitter does
        writer = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err,
                                  stdin=subprocess.PIPE if gated else subprocess.DEVNULL)
        gate = PhaseGate(writer, logs / "out") if gated else None
        stop, runs_results = threading.Event(), []
        loop = threading.Thread(target=runs_loop, args=(home, env, stop, runs_results), daemon=True)
        try:
            # the console opens once the run exists, as a person would attach to it
            while writer.poll() is None and not _has_run(home):
                time.sleep(0.05)
            if runs_reader:
                loop.start()
            seen = asyncio.run(follow_with_console(home, writer, follow_interval, reader_fault, timeout, gate))
            writer_exit = writer.wait(timeout=60)
        finally:
            stop.set()
            if writer.poll() is None:
                writer.kill()
                writer.wait()
            if writer.stdin is not None:
                writer.stdin.close()
            if loop.is_alive():
                loop.join(timeout=300)
    seconds = time.monotonic() - t0
    logs_text = (logs / "out").read_text(errors="replace") + (logs / "err").read_text(errors="replace")
    with Store(home) as store:
        run_id = seen["run_id"] or 1
        stored_metrics = [m["id"] for m in store.metrics(run_id)]
        stored_events = [e["id"] for e in store.events(run_id)]
        # the run's own log too: a trainer that met a lock error and logged it
        logged = [e["message"] for e in store.events(run_id) if any(w in e["message"] for w in LOCK_WORDS)]
        stored_losses = len(store.metrics(run_id, "loss"))
        status = store.get_run(run_id)["status"]
    result = {
        "writer": writer_kind, "steps_per_phase": steps, "step_ms": step_ms, "seconds": round(seconds, 1),
        "writer_exit": writer_exit, "run_status": status, "rows_stored": len(stored_metrics) + len(stored_events),
        "metrics_stored": len(stored_metrics), "events_stored": len(stored_events),
        "metrics_seen": len(seen["metric_ids"]), "events_seen": len(seen["event_ids"]),
        "missing": len(set(stored_metrics) - set(seen["metric_ids"])) + len(set(stored_events) - set(seen["event_ids"])),
        "duplicates": (len(seen["metric_ids"]) - len(set(seen["metric_ids"])))
        + (len(seen["event_ids"]) - len(set(seen["event_ids"]))),
        "batches_while_running": seen["batches_while_running"], "loss_points": seen["loss_points"],
        "losses_stored": stored_losses, "runs_calls": len(runs_results),
        "runs_failed": sum(r["exit"] != 0 or not r["parsed"] for r in runs_results),
        "lock_errors": _lock_lines(logs_text) + [line for r in runs_results for line in _lock_lines(r["stderr"])]
        + seen["console_problems"] + logged,
    }
    result["checks"] = judge_concurrency(result, seen, stored_metrics, stored_events)
    result["ok"] = all(result["checks"].values())
    return result


def judge_concurrency(r: dict, seen: dict, stored_metrics: list[int], stored_events: list[int]) -> dict[str, bool]:
    """What one run must show; the tests hand it planted readings too."""
    return {
        "no database-is-locked or other sqlite error anywhere": not r["lock_errors"],
        "the console saw every metric row once, in order": seen["metric_ids"] == stored_metrics,
        "the console saw every event row once, in order": seen["event_ids"] == stored_events,
        "the loss plot holds every stored loss": r["loss_points"] == r["losses_stored"],
        "the console read rows while the run ran": r["batches_while_running"] >= 2,
        "the writer finished": r["writer_exit"] in ((0, 1) if r["writer"] == "trainer" else (0,))
        and r["run_status"] == "completed",
        "every runs --json worked": r["runs_failed"] == 0,
    }


def _lock_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(w in line for w in LOCK_WORDS)][:20]


def _has_run(home: Path) -> bool:
    import sqlite3

    if not (home / "navi.db").exists():
        return False
    try:
        db = sqlite3.connect(str(home / "navi.db"), timeout=30)
        try:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10000, help="steps of each of the three phases")
    ap.add_argument("--step-ms", type=float, default=5.0, help="the emitter's time a step (default: 5)")
    ap.add_argument("--writer", choices=("emitter", "trainer"), default="emitter")
    ap.add_argument("--follow-interval", type=float, default=0.5, help="the console's (default: its own, 0.5 s)")
    ap.add_argument("--emit", type=Path, default=None, help=argparse.SUPPRESS)  # the writer process itself
    ap.add_argument("--gated", action="store_true", help=argparse.SUPPRESS)  # the emitter waits after each phase
    args = ap.parse_args()
    if args.emit is not None:
        return emit_run(args.emit, args.steps, args.step_ms, args.gated)
    result = run(args.steps, args.step_ms, writer_kind=args.writer, follow_interval=args.follow_interval)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
