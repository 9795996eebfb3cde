"""The console follows a run another process writes, with a second reader: every row once, no lock error.

    python -m pytest -q -m slow tests/test_reliability_concurrency.py

The fast form of benchmarks/reliability/concurrency.py (its long form writes 10,000 steps a
phase): a writer process through the real StoreWriter and Store, the real console through
Textual's run_test following it, and `runs --json` in a loop beside them. The judge is shown to
catch each fault it exists for: a reader that skips a row, one that reads a batch twice, a lock
error in a log.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "reliability"))

from concurrency import judge_concurrency, run  # noqa: E402

# a long harness: the slow tier (python -m pytest -q -m slow; .ci/run runs it after the everyday tier)
pytestmark = pytest.mark.slow


def failing(checks: dict) -> list[str]:
    return [name for name, ok in checks.items() if not ok]


def test_the_console_sees_every_row_once_while_another_process_writes():
    result = run(400, 5.0, follow_interval=0.1)
    assert failing(result["checks"]) == [], result
    assert result["runs_calls"] >= 1 and result["metrics_seen"] == result["metrics_stored"] > 200


@pytest.mark.parametrize("fault, caught", [
    ("skip", ["the console saw every metric row once, in order", "the loss plot holds every stored loss"]),
    ("duplicate", ["the console saw every metric row once, in order", "the loss plot holds every stored loss"]),
])
def test_the_judge_catches_a_reader_that_skips_or_repeats_rows(fault, caught):
    result = run(400, 5.0, follow_interval=0.1, reader_fault=fault, runs_reader=False)
    assert failing(result["checks"]) == caught, result
    if fault == "skip":
        assert result["missing"] == 1 and result["duplicates"] == 0
    else:
        assert result["duplicates"] >= 1 and result["missing"] == 0


CLEAN = {"lock_errors": [], "loss_points": 3, "losses_stored": 3, "batches_while_running": 2, "writer": "emitter",
         "writer_exit": 0, "run_status": "completed", "runs_failed": 0}
SEEN = {"metric_ids": [1, 2, 3], "event_ids": [1, 2]}


def test_the_judge_passes_a_clean_run():
    assert failing(judge_concurrency(CLEAN, SEEN, [1, 2, 3], [1, 2])) == []


@pytest.mark.parametrize("change, seen, caught", [
    ({"lock_errors": ["sqlite3.OperationalError: database is locked"]}, SEEN,
     ["no database-is-locked or other sqlite error anywhere"]),
    ({}, {"metric_ids": [1, 3, 2], "event_ids": [1, 2]}, ["the console saw every metric row once, in order"]),
    ({}, {"metric_ids": [1, 2, 3], "event_ids": [2]}, ["the console saw every event row once, in order"]),
    ({"batches_while_running": 1}, SEEN, ["the console read rows while the run ran"]),
    ({"writer_exit": 1}, SEEN, ["the writer finished"]),
    ({"run_status": "running"}, SEEN, ["the writer finished"]),
    ({"runs_failed": 1}, SEEN, ["every runs --json worked"]),
])
def test_the_judge_catches_each_fault_it_exists_for(change, seen, caught):
    assert failing(judge_concurrency({**CLEAN, **change}, seen, [1, 2, 3], [1, 2])) == caught
