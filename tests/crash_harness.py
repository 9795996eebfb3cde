"""Kill -9 a real trainer at a random instant, then check what a person relies on afterwards.

Not a test module: tests/test_crash.py imports it (tests/ is on sys.path), and so does
benchmarks/reliability/crash.py, its long form.

One trial: `python -m navi_tui --home H --no-ui --profile tiny train --steps N` runs in a process
of its own; after a random delay it gets SIGKILL (and is reaped: a zombie still answers kill -0).
Then, as a person would:
- the store file passes `PRAGMA integrity_check` (and `foreign_key_check`);
- no metric row is lost that the trainer had handed to its store writer more than one flush
  interval before the kill. What was handed over is read from the trainer's own stdout: the
  headless progress printer prints a metrics window ("policy  step 40/60  loss 2.1234 ...") and
  each log line ("[info] ...") right after the recorder has put its rows on the writer's queue
  (training_run's fanout: recorder first, printer second). The harness stamps each line when it
  reads it from the pipe, which is no earlier than the rows were queued, so "read more than
  FLUSH_INTERVAL_S before the kill" is a safe lower bound on the rows that must be committed;
- the next start (`runs --json`) shows the run as crashed;
- `train --resume RUN` continues it from its newest checkpoint and reaches the verdict of an
  uninterrupted run of the same command in the same home: the same gates, each passing or
  failing alike. A run killed before its first checkpoint cannot be continued: then the resume
  must be refused with one line naming the run, exit 2.

The trainer's profile is the real tiny profile with a short checkpoint_every_s, so kills land
between periodic checkpoints inside a phase as well as between phases (a launcher line sets it
in the child, as tests set profile fields, then runs the real navi_tui.cli.main).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from navi_tui.halt_points import HALT_ENV, PAUSE_ENV, STOP_ENV
from store.writer import FLUSH_INTERVAL_S

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
for _name in ("NAVI_DISCORD_WEBHOOK", "NAVI_DISCORD_TOKEN", "NAVI_DISCORD_CHANNEL"):
    ENV.pop(_name, None)  # the harness measures the store, not a mirror
for _name in (HALT_ENV, PAUSE_ENV, STOP_ENV):
    ENV.pop(_name, None)  # a trainer halts only where a trial arms it

# the child: the real command line, every training phase of every profile changed as argv[1] says
# (a JSON object of TrainConfig fields), as the tests change profile fields in process
LAUNCH = ("import json, sys, warnings\n"
          "warnings.filterwarnings('ignore', message='Failed to initialize NumPy')  # as cli.main does, before torch\n"
          "from navi_model import config\n"
          "for p in config.PROFILES.values():\n"
          "    for t in (p.policy_train, p.planner_train, p.talker_train):\n"
          "        for k, v in json.loads(sys.argv[1]).items():\n"
          "            setattr(t, k, v)\n"
          "from navi_tui.cli import main\n"
          "raise SystemExit(main(sys.argv[2:]))\n")

# the trainer the harness kills: tiny's models, small batches that log every 2 steps, and a checkpoint
# every half second, so that kills land between periodic checkpoints within a phase, many times a run
CRASH_TRAINING = {"batch_size": 8, "log_every": 2, "checkpoint_every_s": 0.5}

PROGRESS = re.compile(r"^(?P<phase>\w+)\s+step\s+(?P<step>\d+)(?:/\d+)?\s+loss\s+(?P<loss>\S+)")
LOG_LINE = re.compile(r"^\[(?P<level>info|warn|error)\] (?P<message>.*)$")
RUN_LINE = re.compile(r"^run \d+: profile ")  # printed once the run row exists and the trainer holds its lock
STOP_LINE = re.compile(r"^\[stop\] run \d+$")  # NAVI_STOP_AT=run: stopped, its writer's rows committed
HALT_LINE = re.compile(r"^\[halt\] (?P<phase>\w+) step (?P<step>\d+)$")  # navi_tui/halt_points.py


def navi_command(home: Path, *args, training: dict | None = None) -> list[str]:
    """argv of a navi-tui process on home; with training (TrainConfig fields), through the launcher."""
    tail = ["--home", str(home), "--no-ui", "--profile", "tiny", *map(str, args)]
    if training is None:
        return [sys.executable, "-m", "navi_tui", *tail]
    return [sys.executable, "-c", LAUNCH, json.dumps(training), *tail]


def small_corpus(dest: Path) -> Path:
    """A valid corpus in the bundled format, a few lines of each file of the bundled one: the
    benches and the gallery a run judges take seconds instead of a minute on a 2-core CPU."""
    from navi_model.assets import corpus_dir

    src = corpus_dir()
    dest.mkdir(parents=True, exist_ok=True)

    def lines(name: str) -> list[str]:
        return (src / name).read_text().splitlines()

    per_intent: dict[str, int] = {}
    goals = []
    for line in lines("goals.jsonl"):
        intent = json.loads(line)["intent"]
        if per_intent.get(intent, 0) < 8:
            per_intent[intent] = per_intent.get(intent, 0) + 1
            goals.append(line)
    conversations: list[str] = []
    dialogues = []
    for line in lines("dialogues.jsonl"):
        c = json.loads(line)["conversation"]
        if c not in conversations:
            conversations.append(c)
        if conversations.index(c) < 40:  # whole conversations: turns stay in order
            dialogues.append(line)
    files = {"intents.jsonl": lines("intents.jsonl"), "goals.jsonl": goals, "plans.jsonl": lines("plans.jsonl")[::40],
             "dialogues.jsonl": dialogues, "bench_policy.jsonl": lines("bench_policy.jsonl")[:8],
             "bench_paraphrase.jsonl": lines("bench_paraphrase.jsonl")[:4],
             "bench_plan.jsonl": lines("bench_plan.jsonl")[:4], "gallery.jsonl": lines("gallery.jsonl")[:8]}
    for name, content in files.items():
        (dest / name).write_text("\n".join(content) + "\n")
    return dest


class Child:
    """A navi-tui process whose stdout lines are stamped (time.monotonic()) as they arrive."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=REPO, env={**ENV, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.err = ""
        self._out = threading.Thread(target=self._read_out, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read_out(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _read_err(self) -> None:
        self.err = self.proc.stderr.read()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                if m := pattern.match(line):
                    return m
            if self.proc.poll() is not None and not self._out.is_alive():
                return None
            time.sleep(0.02)
        return None

    def kill(self) -> float:
        """SIGKILL now, reap, and return the moment of the kill."""
        at = time.monotonic()
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.finish(30)
        return at

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._out.join(10)
        self._err.join(10)
        return code


def run(argv: list[str], timeout: float = 600) -> tuple[int, str, str]:
    r = subprocess.run(argv, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


# what the store holds ----------------------------------------------------------------------------

def integrity(home: Path) -> tuple[str, int]:
    """(integrity_check's answer, foreign key violations) of home/navi.db, on a connection of its own."""
    db = sqlite3.connect(str(home / "navi.db"), timeout=30)
    try:
        answer = "; ".join(r[0] for r in db.execute("PRAGMA integrity_check").fetchall())
        violations = len(db.execute("PRAGMA foreign_key_check").fetchall())
    except sqlite3.DatabaseError as e:  # a file sqlite cannot even check
        return f"{type(e).__name__}: {e}", 0
    finally:
        db.close()
    return answer, violations


def query(home: Path, sql: str, params=()) -> list[tuple]:
    db = sqlite3.connect(f"file:{home / 'navi.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def run_of_pid(home: Path, pid: int) -> int | None:
    if not (home / "navi.db").exists():
        return None
    rows = query(home, "SELECT id FROM runs WHERE pid = ? ORDER BY id DESC LIMIT 1", (pid,))
    return rows[0][0] if rows else None


def gates_of(home: Path, run_id: int) -> dict[str, tuple[bool, float | None]]:
    """gate -> (passed, value) as the run's last rows of each gate say."""
    out = {}
    for gate, passed, value in query(home, "SELECT gate, passed, value FROM evals WHERE run_id = ? ORDER BY id",
                                     (run_id,)):
        out[gate] = (bool(passed), value)
    return out


def run_row(home: Path, run_id: int) -> dict | None:
    rows = query(home, "SELECT status, verdict, resumed_from FROM runs WHERE id = ?", (run_id,))
    return dict(zip(("status", "verdict", "resumed_from"), rows[0])) if rows else None


# one uninterrupted run, and one trial ------------------------------------------------------------

@dataclass
class Setup:
    """What every trainer of a harness run gets: the home they share, --steps, --data, the training."""
    home: Path
    steps: int
    data: Path | None = None
    training: dict | None = field(default_factory=lambda: dict(CRASH_TRAINING))

    def command(self, *args) -> list[str]:
        return navi_command(self.home, *args, training=self.training)

    def train(self) -> list[str]:
        return self.command("train", "--steps", self.steps, *(["--data", self.data] if self.data else []))


@dataclass
class Reference:
    run_id: int
    seconds: float  # wall time of the whole process
    verdict: str
    gates: dict[str, tuple[bool, float | None]]
    row_at: float = 0.0  # seconds from the start to its "run N:" line: the run row exists from there


def reference_run(setup: Setup) -> Reference:
    """The same command, not interrupted, in the same home (so later runs are judged beside it)."""
    child = Child(setup.train())
    code = child.finish(1800)
    seconds = time.monotonic() - child.started
    m = next((m for _, line in child.lines if (m := re.match(r"^run (\d+) \(", line))), None)
    if code not in (0, 1) or not m:
        raise RuntimeError(f"the uninterrupted run ended with exit {code}: {child.err.strip()[-500:]}")
    row_at = next((t for t, line in child.lines if RUN_LINE.match(line)), child.started) - child.started
    run_id = int(m.group(1))
    return Reference(run_id, seconds, run_row(setup.home, run_id)["verdict"], gates_of(setup.home, run_id), row_at)


@dataclass
class Trial:
    delay: float  # seconds from the start of the trainer (or from the `after` line) to its SIGKILL
    after: str | None = None  # the stdout line whose arrival started the delay
    halt: str | None = None  # or the known point (NAVI_HALT_AT, PHASE:STEP) where the trainer halted for its kill
    halted_at: float | None = None  # when its halt line arrived: every row printed before it was handed over
    killed: bool = False  # False: the trainer ended by itself before the kill
    exit_code: int | None = None
    run_id: int | None = None
    phase: str | None = None  # the last phase the trainer printed before the kill
    status_at_kill: str | None = None  # the run row's status right after the kill, before any other start
    checkpoints: int = 0  # the run's checkpoint rows after the kill
    last_checkpoint: tuple | None = None  # (model, phase, step) of the newest
    integrity: str = ""
    fk_violations: int = 0
    emitted: int = 0  # metric windows and log lines printed before the kill
    due: int = 0  # of those, printed more than one flush interval before it
    lost_metrics: list[str] = field(default_factory=list)
    lost_events: list[str] = field(default_factory=list)
    in_window: int = 0  # printed within the flush interval and not (yet) stored: allowed
    status_after: str | None = None  # what `runs --json` said of the run
    runs_exit: int | None = None
    resume_exit: int | None = None
    resume_err: str = ""
    resumed_run: int | None = None
    resumed: dict | None = None  # run row of the continuation
    gates: dict[str, tuple[bool, float | None]] = field(default_factory=dict)
    seconds: float = 0.0
    second: tuple[int, str] | None = None  # (exit, stderr) of a second resume while the first one trained
    continuations: int = 0  # runs that name this one as resumed_from, after the resume(s)
    first: "Trial | None" = field(default=None, repr=False)  # a killed resume: the kill of the run it continued
    lines: list[tuple[float, str]] = field(default_factory=list, repr=False)
    err: str = field(default="", repr=False)  # the killed process's stderr
    killed_at: float = 0.0


def kill(setup: Setup, delay: float, after: re.Pattern | None = None, command: list[str] | None = None,
         halt: str | None = None) -> Trial:
    """Start a trainer (setup.train(), or command), SIGKILL it `delay` seconds after its start (or after
    its first stdout line that matches `after`), and look at the store it left: integrity and rows.

    halt: instead of a delay, a known point (PHASE:STEP, or `start`: before the store is opened) where
    the trainer halts itself (navi_tui/halt_points.py); it is killed there, whatever the machine's
    speed. The tests kill at known points; the long form (benchmarks/reliability/crash.py) kills at
    random instants on purpose, and its judge takes a run that ended first as a run that ended."""
    if halt is not None:
        return kill_at(setup, halt, command)
    trial = Trial(delay, after.pattern if after is not None else None)
    child = Child(command or setup.train())
    begin = child.started
    if after is not None:
        m = child.wait_for(after, 600)
        begin = time.monotonic() if m else begin
    end = begin + delay
    while time.monotonic() < end and child.proc.poll() is None:
        time.sleep(min(0.01, max(0.0, end - time.monotonic())))
    if child.proc.poll() is None:
        trial.killed_at = child.kill()
        trial.killed = True
    else:
        child.finish(30)
        trial.killed_at = time.monotonic()
    trial.exit_code = child.proc.returncode
    trial.lines, trial.err = list(child.lines), child.err
    trial.run_id = run_of_pid(setup.home, child.pid)
    observe_store(setup.home, trial)
    return trial


def kill_at(setup: Setup, halt: str, command: list[str] | None = None) -> Trial:
    """SIGKILL a trainer at its halt point: once its halt line is out and the store holds the row of
    the step it halted at (its writer goes on while the training thread waits), so every row it
    printed before the halt is due."""
    trial = Trial(0.0, halt=halt)
    child = Child(command or setup.train(), env={HALT_ENV: halt})
    m = child.wait_for(HALT_LINE, 600)
    if m is None:
        code = child.finish(60)
        raise AssertionError(f"the trainer never reached its halt point {halt}: exit {code}, "
                             f"stderr {child.err.strip()[-500:]!r}")
    trial.halted_at = next(t for t, line in child.lines if HALT_LINE.match(line))
    if m["phase"] != "start":
        run_id = run_of_pid(setup.home, child.pid)
        step_row = "SELECT count(*) FROM metrics WHERE run_id = ? AND phase = ? AND step = ? AND name = 'loss'"
        deadline = time.monotonic() + 120
        while not (run_id and query(setup.home, step_row, (run_id, m["phase"], int(m["step"])))[0][0]):
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} halted at {m['phase']} step {m['step']}, and its writer "
                                     f"did not commit that step's loss within 120 s")
            time.sleep(0.02)
            run_id = run_id or run_of_pid(setup.home, child.pid)
    trial.killed_at = child.kill()
    trial.killed = True
    trial.exit_code = child.proc.returncode
    trial.lines, trial.err = list(child.lines), child.err
    trial.run_id = run_of_pid(setup.home, child.pid)
    observe_store(setup.home, trial)
    return trial


def kill_trial(setup: Setup, delay: float = 0.0, after: re.Pattern | None = None, second: bool = False,
               resume_kill: float | None = None, halt: str | None = None, resume_halt: str | None = None) -> Trial:
    """One whole trial: the kill, the next start, the resume (and with second, a second resume meanwhile).

    resume_kill: the resume is killed too, that many seconds after its run line; the returned trial is
    then the resume's (whose run continues the killed one, and is itself continued to the end), and
    `first` holds the observations of the first kill.
    halt, resume_halt: the same at known points instead of delays (see kill)."""
    t0 = time.monotonic()
    trial = kill(setup, delay, after, halt=halt)
    if trial.run_id is not None and trial.killed:
        observe_next_start(setup, trial)
        if (resume_kill is not None or resume_halt is not None) and trial.checkpoints:
            again = kill(setup, resume_kill or 0.0, RUN_LINE, setup.command("train", "--resume", trial.run_id),
                         halt=resume_halt)
            if not again.killed and again.run_id is not None:
                # the resume ended before its instant: it is simply this run's resume, judged as one
                take_resume(setup, trial, again.exit_code, again.err, again.run_id)
                trial.seconds = time.monotonic() - t0
                return trial
            again.first = trial
            trial = again
            if not (trial.run_id is not None and trial.killed):
                trial.seconds = time.monotonic() - t0
                return trial
            observe_next_start(setup, trial)
        observe_resume(setup, trial, second)
    trial.seconds = time.monotonic() - t0
    return trial


def observe_store(home: Path, trial: Trial) -> None:
    if not (home / "navi.db").exists():
        trial.integrity = "no store"
        return
    trial.integrity, trial.fk_violations = integrity(home)
    trial.emitted = trial.due = trial.in_window = 0
    trial.lost_metrics, trial.lost_events = [], []
    for _, line in trial.lines:
        if m := PROGRESS.match(line):
            trial.phase = m["phase"]
    if trial.run_id is None:
        return
    trial.status_at_kill = run_row(home, trial.run_id)["status"]
    ckpts = query(home, "SELECT model, phase, step FROM checkpoints WHERE run_id = ? ORDER BY id", (trial.run_id,))
    trial.checkpoints = len(ckpts)
    trial.last_checkpoint = ckpts[-1] if ckpts else None
    losses = {(phase, step): value for phase, step, value in query(
        home, "SELECT phase, step, value FROM metrics WHERE run_id = ? AND name = 'loss'", (trial.run_id,))}
    messages = {(level, message) for level, message in query(
        home, "SELECT level, message FROM events WHERE run_id = ?", (trial.run_id,))}
    for t, line in trial.lines:
        due = is_due(trial, t)
        if m := PROGRESS.match(line):
            key = (m["phase"], int(m["step"]))
            stored = key in losses and _same_loss(losses[key], m["loss"])
            lost = trial.lost_metrics
        elif m := LOG_LINE.match(line):
            stored = (m["level"], m["message"]) in messages
            lost = trial.lost_events
        else:
            continue
        trial.emitted += 1
        trial.due += due
        if due and not stored:
            lost.append(line.strip())
        elif not stored:
            trial.in_window += 1


def is_due(trial: Trial, t: float) -> bool:
    """Whether a line read at t had its rows committed before the kill: read a flush interval before
    it, or before the halt line of a trainer killed at its halt point (the harness waited for the
    writer to commit the halted step's rows, which it commits in order)."""
    return t < trial.killed_at - FLUSH_INTERVAL_S or (trial.halted_at is not None and t <= trial.halted_at)


def _same_loss(stored: float | None, printed: str) -> bool:
    if stored is None:  # nan is stored as NULL
        return printed == "nan"
    return math.isclose(round(stored, 4), float(printed), abs_tol=1e-4)


def observe_next_start(setup: Setup, trial: Trial, command: list[str] | None = None) -> None:
    code, out, _ = run(command or setup.command("runs", "--json"))
    trial.runs_exit = code
    if code == 0:
        runs = {r["id"]: r for r in json.loads(out)["runs"]}
        trial.status_after = runs.get(trial.run_id, {}).get("status")


def observe_resume(setup: Setup, trial: Trial, second: bool = False) -> None:
    """train --resume RUN, to its end. second: once it has claimed the run (its "run N:" line), a second
    `train --resume RUN` must be refused (exit 2, one line) and leave no run row."""
    child = Child(setup.command("train", "--resume", trial.run_id), env={STOP_ENV: "run"} if second else None)
    if second:
        # it stops itself once it holds the run, its rows committed: alive and holding its locks however
        # little it has left to do, and holding no write of the database while the second one tries
        if not child.wait_for(STOP_LINE, 600):
            raise AssertionError(f"the resume of run {trial.run_id} ended before it stopped: exit "
                                 f"{child.finish(60)}, stderr {child.err.strip()[-500:]!r}")
        wait_stopped(child.pid)
        try:
            code, _, err = run(setup.command("train", "--resume", trial.run_id))
        finally:
            os.kill(child.pid, signal.SIGCONT)
        trial.second = (code, err.strip())
    code = child.finish(600)
    m = next((m for _, line in child.lines if (m := re.match(r"^run (\d+) \(", line))), None)
    take_resume(setup, trial, code, child.err, int(m.group(1)) if m else None)


def wait_stopped(pid: int, timeout: float = 60) -> None:
    """Until the kernel shows pid stopped (state T): SIGSTOP from itself lands a moment after its line."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not stop within {timeout:.0f} s")
        time.sleep(0.01)


def take_resume(setup: Setup, trial: Trial, code: int, err: str, resumed_run: int | None) -> None:
    """What the resume of trial's run left: its exit, its run row and its gates."""
    trial.resume_exit, trial.resume_err = code, err.strip()
    trial.continuations = query(setup.home, "SELECT count(*) FROM runs WHERE resumed_from = ?", (trial.run_id,))[0][0]
    if resumed_run is not None:
        trial.resumed_run = resumed_run
        trial.resumed = run_row(setup.home, resumed_run)
        trial.gates = gates_of(setup.home, resumed_run)


# the judge ---------------------------------------------------------------------------------------

def judge(trial: Trial, reference: Reference) -> list[str]:
    """Every way this trial broke a promise; [] when it kept them all."""
    failures = []
    if trial.first is not None:
        # the kill of the run this one continues: its store, rows and mark (its resume is this trial)
        first = trial.first
        failures += [f"first kill: {f}" for f in judge_kill(first)]
    if not trial.killed:
        return failures + ([] if trial.exit_code in (0, 1) else
                           [f"the trainer ended with exit {trial.exit_code} before the kill"])
    failures += judge_kill(trial)
    if trial.run_id is None:
        return failures  # killed before its run row: nothing to mark or continue
    failures += judge_resume(trial, reference)
    return failures


def judge_kill(trial: Trial) -> list[str]:
    """What a kill may not break: the file, the rows handed to the writer in time, the next start's mark."""
    failures = []
    if trial.integrity not in ("ok", "no store"):
        failures.append(f"integrity_check: {trial.integrity}")
    if trial.fk_violations:
        failures.append(f"{trial.fk_violations} foreign key violations")
    failures += [f"metric row lost: {line}" for line in trial.lost_metrics]
    failures += [f"event row lost: {line}" for line in trial.lost_events]
    # a kill after the run's row was finished (the process was closing) is no crash: the row stays as it was
    want = "crashed" if trial.status_at_kill == "running" else trial.status_at_kill
    if trial.run_id is not None and trial.status_after != want:
        failures.append(f"run {trial.run_id} is {trial.status_after!r} after the next start (runs exit "
                        f"{trial.runs_exit}), not {want!r}")
    return failures


def judge_resume(trial: Trial, reference: Reference) -> list[str]:
    """What `train --resume RUN` owes a killed run: a refusal without a checkpoint, else the verdict."""
    failures = []
    if trial.checkpoints == 0:
        want = f"run {trial.run_id} has no checkpoint to continue from"
        lines = [line for line in trial.resume_err.splitlines() if line.strip()]
        if trial.resume_exit != 2 or len(lines) != 1 or want not in lines[0] or "Traceback" in trial.resume_err:
            failures.append(f"resume of run {trial.run_id} without a checkpoint: exit {trial.resume_exit}, "
                            f"stderr {trial.resume_err[-300:]!r} (want exit 2 and one line: {want})")
        return failures
    if trial.second is not None:
        code, err = trial.second
        lines = [line for line in err.splitlines() if line.strip()]
        if code != 2 or len(lines) != 1 or "one trainer per run" not in lines[0]:
            failures.append(f"a second train --resume {trial.run_id} while the first trained: exit {code}, "
                            f"stderr {err[-300:]!r} (want exit 2 and one line: one trainer per run)")
    if trial.continuations != (1 if trial.resumed is not None else 0):
        failures.append(f"{trial.continuations} runs continue run {trial.run_id}")
    if trial.resume_exit not in (0, 1) or trial.resumed is None:
        failures.append(f"train --resume {trial.run_id}: exit {trial.resume_exit}: {trial.resume_err[-300:]}")
        return failures
    if trial.resumed["resumed_from"] != trial.run_id or trial.resumed["status"] != "completed":
        failures.append(f"run {trial.resumed_run}: {trial.resumed}, not a completed continuation of {trial.run_id}")
    if trial.resumed["verdict"] != reference.verdict:
        failures.append(f"verdict {trial.resumed['verdict']} after the resume, {reference.verdict} uninterrupted")
    if set(trial.gates) != set(reference.gates):
        failures.append(f"gates differ: {sorted(set(trial.gates) ^ set(reference.gates))}")
    for gate in sorted(set(trial.gates) & set(reference.gates)):
        if trial.gates[gate][0] != reference.gates[gate][0]:
            failures.append(f"gate {gate}: {'PASS' if trial.gates[gate][0] else 'FAIL'} after the resume, "
                            f"{'PASS' if reference.gates[gate][0] else 'FAIL'} uninterrupted")
    return failures


def value_differences(trial: Trial, reference: Reference) -> dict[str, tuple[float | None, float | None]]:
    """Gates whose value after the resume differs from the uninterrupted run's (pass/fail alike or not)."""
    out = {}
    for gate in sorted(set(trial.gates) & set(reference.gates)):
        a, b = trial.gates[gate][1], reference.gates[gate][1]
        if not (a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))):
            out[gate] = (a, b)
    return out
