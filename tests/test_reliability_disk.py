"""The home's disk fills up or goes read-only under a real trainer: one line, exit 2, a sound store.

    python -m pytest -q -m slow tests/test_reliability_disk.py

The fast form of benchmarks/reliability/disk_trouble.py: one real `python -m navi_tui ... train`
per fault. `full` (a tmpfs of its own, filled) and `readonly` (an ext4 image the kernel remounts
read-only after an error) need mount, so they skip where it is not permitted; `fsize` (the
trainer's file size limit dropped from outside) needs nothing and always runs. The judge is shown
to catch each fault it exists for, planted in a real trainer (one that swallows the disk error)
and in its results. The trainer before these fixes is the harness's own negative control:
`--code` points it at another checkout (docs/reliability.md, "Disk trouble" has what it found).
"""

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from store import DiskError, disk_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "reliability"))

from disk_trouble import judge_disk, mount_refusal, readonly_refusal, run_one  # noqa: E402

# a long harness: the slow tier (python -m pytest -q -m slow; .ci/run runs it after the everyday tier)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MOUNT_REFUSAL = mount_refusal()
READONLY_REFUSAL = readonly_refusal()
needs_mount = pytest.mark.skipif(MOUNT_REFUSAL is not None, reason=f"needs mount: {MOUNT_REFUSAL}")
needs_ext4 = pytest.mark.skipif(READONLY_REFUSAL is not None, reason=f"needs an ext4 image: {READONLY_REFUSAL}")


def failing(result: dict) -> list[str]:
    return [name for name, ok in result["checks"].items() if not ok]


# the train --resume after the fault costs a second training (about 30 s here): the fsize test,
# which runs everywhere, takes it; the long form takes it after every fault


@needs_mount
def test_a_full_disk_stops_the_trainer_with_one_line_and_a_sound_store():
    result = run_one("full", steps=10, resume=False)
    assert failing(result) == [], result
    assert "No space left on device" in result["stderr"]


@needs_ext4
def test_a_file_system_gone_read_only_stops_the_trainer_and_loses_no_committed_row():
    # with synchronous=NORMAL this lost every row of the run (docs/reliability.md, "Disk trouble")
    result = run_one("readonly", steps=10, resume=False)
    assert failing(result) == [], result
    assert result["rows_seen_before_fault"] > 0


def test_a_file_size_limit_stops_the_trainer_and_the_next_resume_works():
    result = run_one("fsize", steps=10)
    assert failing(result) == [], result
    assert result["statuses_after_resume"][1] in ("failed", "crashed")


# planted faults: a trainer broken in one way each, and results that say so


def test_the_judge_catches_a_trainer_that_swallows_the_disk_error():
    result = run_one("fsize", steps=10, plant="swallowed", resume=False)
    assert result["exit"] == 0
    assert failing(result) == ["exit 2", "one line naming the file and the OS error"]


GOOD = {"fault": "full", "fault_planted_while_running": True, "exit": 2, "stopped_after_s": 2.0,
        "stderr": "navi-tui: error: cannot write the store /m/home/navi.db: disk full (No space left on device)\n",
        "stdout": "", "home": "/m/home", "integrity": "ok", "rows_lost": {"metrics": 0},
        "checkpoints": [{"id": 1, "whole": True}], "runs_ok": True, "resume_exit": 1,
        "integrity_after_resume": "ok", "statuses_after_resume": {1: "crashed", 2: "completed"}}


def test_the_judge_passes_a_clean_result():
    assert all(judge_disk(GOOD).values())


@pytest.mark.parametrize("change, caught", [
    ({"exit": "did not stop", "stopped_after_s": 120.0}, ["stopped within the bound", "exit 2"]),
    ({"stopped_after_s": 500.0}, ["stopped within the bound"]),
    ({"stderr": "navi-tui: error: something went wrong\n"}, ["one line naming the file and the OS error"]),
    ({"stderr": GOOD["stderr"] * 2}, ["one line naming the file and the OS error"]),
    ({"stdout": "Traceback (most recent call last):\n"}, ["no traceback"]),
    ({"integrity": "*** in database main ***\nPage 7 is never used"}, ["integrity_check ok"]),
    ({"rows_lost": {"metrics": 3}}, ["no committed row lost"]),
    ({"checkpoints": [{"id": 1, "whole": True}, {"id": 2, "whole": False}]}, ["every registered checkpoint whole"]),
    ({"runs_ok": False}, ["runs --json works"]),
    ({"resume_exit": 2}, ["train --resume works"]),
    ({"statuses_after_resume": {1: "running", 2: "completed"}}, ["no run left running"]),
    ({"fault_planted_while_running": False}, ["the fault hit a running trainer"]),
])
def test_the_judge_catches_each_fault_it_exists_for(change, caught):
    checks = judge_disk({**GOOD, **change})
    assert [name for name, ok in checks.items() if not ok] == caught


# the pieces, each on its own


def test_disk_errors_name_the_file_and_the_os_error(tmp_path):
    full = disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "the store", tmp_path / "navi.db")
    assert str(full) == f"cannot write the store {tmp_path / 'navi.db'}: disk full (No space left on device)"
    readonly = disk_error(RuntimeError("file write failed"), "the checkpoint", tmp_path / "a.pt")
    assert readonly is None  # the folder takes writes: no disk trouble to name
    wrapped = RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
    wrapped.__context__ = OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert "read-only file system (Read-only file system)" in str(disk_error(wrapped, "the checkpoint", tmp_path))
    assert disk_error(ValueError("no"), "the store", tmp_path) is None
    assert disk_error(sqlite3.IntegrityError("FOREIGN KEY constraint failed"), "the store", tmp_path) is None
    # a folder that does not exist is no disk trouble either (the writer's own error names it)
    missing = sqlite3.OperationalError("unable to open database file")
    assert disk_error(missing, "the store", tmp_path / "no-such-folder" / "navi.db") is None
    assert isinstance(disk_error(full, "x", tmp_path), DiskError)


def test_a_checkpoint_that_cannot_be_written_leaves_no_file_and_no_row(tmp_path):
    """The file size limit refuses the checkpoint's bytes halfway: no temporary file stays, no row
    names it, and the error is one line. In a process of its own: the limit is the process's."""
    script = f"""
import resource, sys, torch
from pathlib import Path
from navi_model.events import CheckpointReady
from navi_tui.recorder import RunRecorder
from store import DiskError, Store, StoreWriter
home = Path({str(tmp_path / "home")!r})
store = Store(home)
run = store.create_run(profile="tiny", command="train", config={{}})
writer = StoreWriter(store.path).start()
recorder = RunRecorder(store, writer, run)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    recorder(CheckpointReady(5, "policy", "policy", "policy_000005", {{"model": torch.zeros(1 << 20)}}))
except DiskError as e:
    print(e)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(len(store.checkpoints(run)), sorted(p.name for p in (home / "checkpoints").rglob("*")))
writer.close()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    message, listing = done.stdout.strip().splitlines()
    path = tmp_path / "home" / "checkpoints" / "run_0001" / "policy_000005.pt"
    assert message == f"cannot write the checkpoint {path}: file too large (File too large)"
    assert listing == "0 ['run_0001']"
