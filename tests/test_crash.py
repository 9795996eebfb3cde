"""Kill -9 a real trainer, then check the store, the next start and the resume (tests/crash_harness.py).

    python -m pytest -q -m slow tests/test_crash.py            # a few kills at chosen moments
    python benchmarks/reliability/crash.py --kills 20          # the long form: kills at random instants

Every trainer here is a real `navi-tui --no-ui --profile tiny train` process on a small corpus, with
small batches and a checkpoint every half second (crash_harness.CRASH_TRAINING). The fast form kills
at known points where the trainer halts itself (NAVI_HALT_AT, navi_tui/halt_points.py; a wall-clock
delay would land elsewhere on a faster or a loaded machine): inside the policy's phase after a
periodic checkpoint, inside the planner's phase of its resume, and inside the talker's SFT. The
planted faults show that the judge fails a trial that loses a row, is not marked crashed, resumes
to another verdict, or leaves a damaged file.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

import crash_harness as H
from cli_harness import run_main
from navi_tui.cli import main
from store import Store

# a long harness: the slow tier (python -m pytest -q -m slow; .ci/run runs it after the everyday tier)
pytestmark = pytest.mark.slow

STEPS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    # a periodic checkpoint after every step (a step takes far longer than a nanosecond): the kills
    # below land after a known checkpoint, however fast the machine
    return H.Setup(root / "home", steps=STEPS, data=H.small_corpus(root / "corpus"),
                   training={**H.CRASH_TRAINING, "checkpoint_every_s": 1e-9})


@pytest.fixture(scope="module")
def reference(setup):
    return H.reference_run(setup)


# every kill lands where the trainer halted itself (navi_tui/halt_points.py), never a delay after a
# line: on a fast machine a 6-step run ends within a second of any line
@pytest.fixture(scope="module")
def policy_kill(setup, reference):
    # inside the policy's phase after its periodic checkpoint of step 4; its resume is killed too,
    # inside the planner's phase, and that one is resumed to the end
    return H.kill_trial(setup, halt="policy:4", resume_halt="planner:2")


@pytest.fixture(scope="module")
def talker_kill(setup, reference):
    # and a second `train --resume` while the first one trains: refused
    return H.kill_trial(setup, halt="sft:2", second=True)


@pytest.mark.parametrize("kill", ["policy_kill", "talker_kill"])
def test_a_killed_trainer_loses_no_row_is_marked_crashed_and_resumes_to_the_same_verdict(kill, request, setup,
                                                                                         reference):
    trial = request.getfixturevalue(kill)
    assert trial.killed and trial.exit_code == -9
    assert trial.run_id is not None and trial.checkpoints > 0
    assert trial.due > 0  # rows the store had to hold: the check was not empty
    assert H.judge(trial, reference) == []
    assert trial.status_after == "crashed" and trial.resumed["resumed_from"] == trial.run_id
    if kill == "policy_kill":  # a chain: run K killed, its resume K' killed, K' resumed to the verdict
        assert trial.first is not None and trial.first.status_after == "crashed" and trial.first.due > 0
        assert H.run_row(setup.home, trial.run_id)["resumed_from"] == trial.first.run_id
    assert set(trial.gates) == set(reference.gates) and len(reference.gates) == 24
    if trial.second is not None:
        assert trial.second[0] == 2 and "one trainer per run" in trial.second[1]


def test_a_kill_before_the_run_row_leaves_no_run_and_a_sound_store(setup, reference):
    # the process has loaded its corpus and judged its preflight, and not opened the store yet
    before = H.query(setup.home, "SELECT count(*) FROM runs")[0][0]
    trial = H.kill_trial(setup, halt="start")
    assert trial.killed and trial.run_id is None
    assert H.judge(trial, reference) == []
    assert H.query(setup.home, "SELECT count(*) FROM runs")[0][0] == before


# the judge fails what it exists to catch --------------------------------------------------------

def copy_home(setup, tmp_path):
    dest = tmp_path / "home"
    shutil.copytree(setup.home, dest)
    return dest


def test_the_judge_catches_a_lost_metric_row(policy_kill, reference, setup, tmp_path):
    home = copy_home(setup, tmp_path)
    first = policy_kill.first  # the kill inside the policy's phase, whose resume was killed in its turn
    due = next(line for t, line in first.lines if H.PROGRESS.match(line) and H.is_due(first, t))
    m = H.PROGRESS.match(due)
    with sqlite3.connect(home / "navi.db") as db:
        db.execute("DELETE FROM metrics WHERE run_id = ? AND phase = ? AND step = ? AND name = 'loss'",
                   (first.run_id, m["phase"], int(m["step"])))
    H.observe_store(home, first)
    try:
        assert H.judge(policy_kill, reference) == [f"first kill: metric row lost: {due.strip()}"]
    finally:
        H.observe_store(setup.home, first)


def test_the_judge_catches_a_lost_event_row(talker_kill, reference, setup, tmp_path):
    home = copy_home(setup, tmp_path)
    line = next(line for _, line in talker_kill.lines if line.startswith("[info] policy: "))
    with sqlite3.connect(home / "navi.db") as db:
        db.execute("DELETE FROM events WHERE run_id = ? AND message = ?", (talker_kill.run_id, line[len("[info] "):]))
    H.observe_store(home, talker_kill)
    try:
        assert H.judge(talker_kill, reference) == [f"event row lost: {line}"]
    finally:
        H.observe_store(setup.home, talker_kill)


def test_the_judge_catches_a_run_the_next_start_does_not_mark_crashed(policy_kill, reference, setup, tmp_path):
    home = copy_home(setup, tmp_path)
    # back to the moment after the kill: the run's row as the dead trainer left it
    with sqlite3.connect(home / "navi.db") as db:
        db.execute("UPDATE runs SET status = 'running', finished = NULL, message = NULL WHERE id = ?",
                   (policy_kill.run_id,))
    skip_the_mark = [sys.executable, "-c", "import sys; from store.db import Store; "
                     "Store.mark_crashed_runs = lambda self: []; from navi_tui.cli import main; "
                     "raise SystemExit(main(sys.argv[1:]))", "--home", str(home), "--no-ui", "runs", "--json"]
    observed = H.Trial(0.0)
    observed.__dict__.update({**policy_kill.__dict__, "status_after": None})
    H.observe_next_start(setup, observed, skip_the_mark)
    assert H.judge(observed, reference) == [f"run {policy_kill.run_id} is 'running' after the next start (runs exit 0), "
                                            f"not 'crashed'"]
    # the real next start on the same copy marks it
    H.observe_next_start(setup, observed, H.navi_command(home, "runs", "--json"))
    assert observed.status_after == "crashed" and H.judge(observed, reference) == []


def test_the_judge_catches_a_resume_that_reaches_another_verdict(talker_kill, reference):
    gate = "memory_prefix"
    wrong = H.Trial(0.0)
    wrong.__dict__.update({**talker_kill.__dict__, "gates": dict(talker_kill.gates)})
    passed, value = wrong.gates[gate]
    wrong.gates[gate] = (not passed, value)
    assert H.judge(wrong, reference) == [f"gate {gate}: {'FAIL' if passed else 'PASS'} after the resume, "
                                         f"{'PASS' if passed else 'FAIL'} uninterrupted"]
    wrong.resumed = {**talker_kill.resumed, "verdict": "pass" if reference.verdict == "fail" else "fail"}
    assert f"verdict {wrong.resumed['verdict']} after the resume, {reference.verdict} uninterrupted" \
        in H.judge(wrong, reference)


def test_the_judge_catches_a_damaged_store_file(policy_kill, reference, setup, tmp_path):
    home = copy_home(setup, tmp_path)
    with sqlite3.connect(home / "navi.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every row in the main file, none in the wal
    with open(home / "navi.db", "r+b") as f:
        f.seek(4096 * 3)  # a b-tree page, not the header: sqlite still opens the file
        f.write(b"\xff" * 4096)
    observed = H.Trial(0.0)
    observed.__dict__.update(policy_kill.__dict__)
    observed.integrity, observed.fk_violations = H.integrity(home)
    assert observed.integrity != "ok"
    assert H.judge(observed, reference)[0].startswith("integrity_check: ")


# what the harness found, fixed ------------------------------------------------------------------

def test_a_resumed_run_that_reaches_a_straight_runs_numbers_passes_constant_metric(setup, reference):
    """Before the fix every resume after a crash failed constant_metric: its config differed from the
    uninterrupted run's only in resumed_from, and it rightly reached the same concept_sim."""
    code, out, err = H.run(setup.command("train", "--resume", reference.run_id))
    assert code == 1, err  # the short run fails some gates; nothing is left to train, only judged
    run_id = int(re.search(r"^run (\d+) \(", out, re.M)[1])
    with Store(setup.home) as store:
        assert store.get_run(run_id)["resumed_from"] == reference.run_id
        gate = next(e for e in store.evals(run_id) if e["gate"] == "constant_metric")
        first = {m["name"]: m["value"] for m in store.metrics(reference.run_id) if m["phase"] == "eval"}
        again = {m["name"]: m["value"] for m in store.metrics(run_id) if m["phase"] == "eval"}
    assert round(first["concept_sim"], 4) == round(again["concept_sim"], 4)  # the numbers do repeat
    assert gate["passed"] == 1, gate["detail_json"]


# the next start, wherever a person looks first ---------------------------------------------------

def dead_run(home) -> int:
    """A run row left 'running' by a process that died (a real one, started and ended here)."""
    code = ("import os, sys; from store import Store; s = Store(sys.argv[1]); "
            "print(s.create_run(profile='tiny', command='train', config={})); os._exit(9)")
    r = subprocess.run([sys.executable, "-c", code, str(home)], cwd=H.REPO, env=H.ENV, capture_output=True, text=True)
    run_id = int(r.stdout)
    with Store(home) as store:
        assert store.get_run(run_id)["status"] == "running"
    return run_id


@pytest.mark.parametrize("command", [["runs"], ["runs", "--json"], ["eval", "--run", 99], ["train", "--resume", "R"],
                                     ["rollback", "--run", "R"]])
def test_each_command_a_person_starts_first_marks_a_dead_run_crashed(command, tmp_path):
    home = tmp_path / "home"
    run_id = dead_run(home)
    code, out, err = run_main(main, ["--home", home, "--no-ui", *[run_id if a == "R" else a for a in command]])
    assert "Traceback" not in err
    # runs lists it; eval of another run, a resume or a rollback of a run with no checkpoint refuse,
    # after the mark: the person who looks sees what happened to it either way
    assert code == (0 if command[0] == "runs" else 2), err
    with Store(home) as store:
        row = store.get_run(run_id)
    assert row["status"] == "crashed" and "ended without finishing the run" in row["message"]
    if command[0] == "runs":
        assert "crashed" in out
    if command[0] in ("train", "rollback"):
        assert f"marked crashed: run {run_id} (its process ended without finishing)" in out


async def test_the_console_marks_a_dead_run_crashed_when_it_opens(tmp_path):
    from test_console import SIZE, make_app

    home = tmp_path / "home"
    run_id = dead_run(home)
    app = make_app(home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.store.get_run(run_id)["status"] == "crashed"
        assert app.view.run_id == run_id and app.view.status == "crashed"
        assert f"marked crashed: run {run_id}" in "".join(n.message for n in app._notifications)
