"""The home folder's disk fills up, or goes read-only, while a real trainer writes to it.

    python benchmarks/reliability/disk_trouble.py --faults full,readonly,fsize --runs 3
    python benchmarks/reliability/disk_trouble.py --faults full --code /path/to/other/checkout

Each run starts a real headless trainer (`python -m navi_tui --home H --no-ui --profile tiny
train --steps N`) on a home of its own, waits until the store holds the policy's checkpoint (the
planner is training; in every second run, the planner's too: the talker is training), stops the
trainer (SIGSTOP), plants one fault and lets it go on (SIGCONT):

- full: the home is on a small tmpfs of its own; a filler file takes every byte left on it;
- readonly: the home is on an ext4 image mounted with errors=remount-ro; the kernel is told to
  record a file system error (/sys/fs/ext4/DEV/trigger_fs_error), and it remounts the file system
  read-only at once, open files included, as it does when a disk starts failing;
- fsize: no mount (the form that runs where mount is not permitted): the trainer's own file size
  limit (RLIMIT_FSIZE, set from outside with prlimit) drops below its files' sizes, so every write
  that grows a file is refused by the kernel (EFBIG, "File too large").

Then it waits for the trainer to end, takes the fault away (deletes the filler; unmounts, runs
e2fsck and mounts again; the trainer's limit ends with it), and checks what the home holds.

Checks: the trainer stopped within the bound; exit 2; exactly one stderr line
`navi-tui: error: cannot write ...` naming the home's file and the OS error; no traceback; the
store passes `PRAGMA integrity_check`; every row a reader saw committed before the fault is still
there; every registered checkpoint file is whole (its sha256 matches); `runs --json` works;
`train --resume RUN` works and leaves no run 'running'. Exit 0 when every check of every run holds.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FAULTS = ("full", "readonly", "fsize")
# what the one error line must quote of the OS, per fault
OS_WORDS = {"full": "No space left on device", "readonly": "Read-only file system", "fsize": "File too large"}
TABLES = ("runs", "metrics", "events", "evals", "checkpoints", "gallery")
STOP_BOUND_S = 120.0  # from the fault to the trainer's exit: the rest of one phase on a loaded 2-core CPU


def mount_refusal() -> str | None:
    """Why this machine cannot mount a file system for the harness, or None when it can."""
    if os.geteuid() != 0:
        return "mount needs root"
    for tool in ("mount", "umount", "mkfs.ext4", "e2fsck"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    folder = Path(tempfile.mkdtemp(prefix="navi-mount-probe-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"mount is not permitted here: {done.stderr.strip().splitlines()[0] if done.stderr else done.returncode}"
        subprocess.run(["umount", str(folder)], check=True)
        return None
    finally:
        folder.rmdir()


def readonly_refusal() -> str | None:
    """Why the readonly fault cannot run here (no loop device, no ext4 error trigger), or None."""
    refusal = mount_refusal()
    if refusal:
        return refusal
    try:
        image = Ext4Image(size_mb=8)
    except (OSError, subprocess.CalledProcessError) as e:
        return f"an ext4 image cannot be mounted here: {e}"
    try:
        if not Path(f"/sys/fs/ext4/{image.device()}/trigger_fs_error").exists():
            return "this kernel has no /sys/fs/ext4/DEV/trigger_fs_error"
        return None
    finally:
        image.close()


# the three media: each gives a folder for the home, plants its fault, and takes it away


class Tmpfs:
    """A small tmpfs of its own, so filling it fills nothing else."""

    def __init__(self, size_mb: int = 64):
        self.root = Path(tempfile.mkdtemp(prefix="navi-full-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(self.root)], check=True)
        self.home = self.root / "home"
        self.filler = self.root / "filler"

    def plant(self, pid: int) -> None:
        # every byte left, down to the last page: 1 MiB writes, then 4 KiB ones
        with open(self.filler, "wb", buffering=0) as f:
            for chunk in (b"\0" * (1 << 20), b"\0" * 4096):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(chunk)

    def restore(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


class Ext4Image:
    """An ext4 image on a loop device, mounted errors=remount-ro: an error makes it read-only."""

    def __init__(self, size_mb: int = 96):
        self.dir = Path(tempfile.mkdtemp(prefix="navi-readonly-"))
        self.image, self.root = self.dir / "fs.img", self.dir / "mnt"
        self.root.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], check=True)
        self._mount()
        self.home = self.root / "home"
        self.fsck = ""

    def _mount(self) -> None:
        subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.root)], check=True)

    def device(self) -> str:
        for line in Path("/proc/mounts").read_text().splitlines():
            source, target = line.split()[:2]
            if target == str(self.root):
                return Path(source).name
        raise RuntimeError(f"{self.root} is not mounted")

    def plant(self, pid: int) -> None:
        Path(f"/sys/fs/ext4/{self.device()}/trigger_fs_error").write_text("navi disk-trouble harness\n")

    def restore(self) -> None:
        # what a person does after the disk recovers: unmount, check, mount again
        subprocess.run(["umount", str(self.root)], check=True)
        done = subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, text=True)
        self.fsck = f"e2fsck exit {done.returncode}"
        self._mount()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class FileSizeLimit:
    """No mount: the trainer's RLIMIT_FSIZE drops below its files' sizes, from outside (prlimit)."""

    LIMIT = 64 << 10

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="navi-fsize-"))
        self.home = self.root / "home"

    def plant(self, pid: int) -> None:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.LIMIT, self.LIMIT))

    def restore(self) -> None:
        pass  # the limit was the trainer's own and ended with it

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


MEDIA = {"full": Tmpfs, "readonly": Ext4Image, "fsize": FileSizeLimit}


# the trainer and what the store holds


# a planted fault for the judge's tests: the trainer's own error handling broken in one way each
PLANTS = {
    # the trainer swallows the disk error and reports success
    "swallowed": "import navi_tui.training_run as t; "
                 "t._end_broken_run = lambda *a: (_ for _ in ()).throw(SystemExit(0))",
}


def trainer_command(home: Path, steps: int, *extra: str, plant: str | None = None) -> list[str]:
    args = ["--home", str(home), "--no-ui", "--profile", "tiny", "train", "--steps", str(steps), *extra]
    if plant is None:
        return [sys.executable, "-m", "navi_tui", *args]
    return [sys.executable, "-c", f"import sys; {PLANTS[plant]}; from navi_tui.cli import main; "
                                  f"raise SystemExit(main(sys.argv[1:]))", *args]


def trainer_env(code: Path) -> dict:
    # one thread a process: the harness shares two cores with its own readers and other jobs
    return {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "NAVI_HOME": ""}


def read_ids(db_path: Path) -> dict[str, list[int]]:
    """The ids of every table's rows, as a reader sees them committed now."""
    db = sqlite3.connect(str(db_path), timeout=30)
    try:
        present = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # a table that is gone (a file system that lost the whole file) has lost every row
        return {t: [r[0] for r in db.execute(f"SELECT id FROM {t} ORDER BY id")] if t in present else []
                for t in TABLES}
    finally:
        db.close()


def checkpoint_rows(db_path: Path) -> list[tuple[int, str, str]]:
    db = sqlite3.connect(str(db_path), timeout=30)
    try:
        return list(db.execute("SELECT id, path, sha256 FROM checkpoints ORDER BY id"))
    except sqlite3.OperationalError:  # no table (yet, or any more)
        return []
    finally:
        db.close()


def integrity(db_path: Path) -> str:
    db = sqlite3.connect(str(db_path), timeout=30)
    try:
        return "; ".join(r[0] for r in db.execute("PRAGMA integrity_check"))
    finally:
        db.close()


def run_statuses(db_path: Path) -> dict[int, str]:
    db = sqlite3.connect(str(db_path), timeout=30)
    try:
        return {r[0]: r[1] for r in db.execute("SELECT id, status FROM runs ORDER BY id")}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def wait_for_checkpoint(home: Path, proc: subprocess.Popen, timeout: float, count: int = 1) -> bool:
    """Until the store holds count checkpoint rows: 1, the policy's (the planner is training then);
    2, the planner's too (the talker is training)."""
    deadline = time.monotonic() + timeout
    db_path = home / "navi.db"
    while time.monotonic() < deadline and proc.poll() is None:
        if db_path.exists():
            with contextlib.suppress(sqlite3.Error):
                if len(checkpoint_rows(db_path)) >= count:
                    return True
        time.sleep(0.1)
    return False


def thread_states(pid: int) -> list[str]:
    """The kernel's one-letter state of each thread of a process: R, S, T (stopped), Z (ended)...;
    [] when a thread ended as we looked, or the process is gone."""
    try:
        return [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in Path(f"/proc/{pid}/task").iterdir()]
    except (OSError, IndexError):
        return []


def pause(proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """SIGSTOP the trainer and wait until the kernel has stopped every thread of it (the signal is
    asynchronous); False when it had ended first."""
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        states = thread_states(proc.pid)
        if states and all(state == "T" for state in states):
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"trainer {proc.pid} did not stop within {timeout:.0f} s of SIGSTOP (threads {states})")
        time.sleep(0.01)
    return False


def run_one(fault: str, *, steps: int = 20, code: Path = REPO, plant: str | None = None,
            stop_bound: float = STOP_BOUND_S, resume: bool = True, after_checkpoints: int = 1) -> dict:
    """One trainer, one fault, planted once the store holds after_checkpoints checkpoint rows;
    returns what happened and the judge's checks."""
    medium = MEDIA[fault]()
    logs = Path(tempfile.mkdtemp(prefix="navi-disk-logs-"))  # never on the faulty medium
    result: dict = {"fault": fault, "steps": steps, "plant": plant, "after_checkpoints": after_checkpoints}
    try:
        home, db_path = medium.home, medium.home / "navi.db"
        env = trainer_env(code)
        with open(logs / "out", "wb") as out, open(logs / "err", "wb") as err:
            proc = subprocess.Popen(trainer_command(home, steps, plant=plant), cwd=code, env=env,
                                    stdout=out, stderr=err)
            try:
                result["reached_fault_point"] = wait_for_checkpoint(home, proc, timeout=600, count=after_checkpoints)
                before = read_ids(db_path) if result["reached_fault_point"] else {t: [] for t in TABLES}
                # stopped while the fault is planted: however long planting takes (filling a tmpfs, a
                # remount), the trainer cannot end meanwhile, and it meets the fault when it goes on
                stopped = pause(proc)
                if stopped:
                    medium.plant(proc.pid)
                result["fault_planted_while_running"] = stopped
                t_fault = time.monotonic()
                if stopped:
                    os.kill(proc.pid, signal.SIGCONT)
                try:
                    code_ = proc.wait(timeout=stop_bound)
                except subprocess.TimeoutExpired:
                    code_ = "did not stop"
                    proc.kill()
                    proc.wait()
                result["stopped_after_s"] = round(time.monotonic() - t_fault, 1)
                result["exit"] = code_
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        result["stdout"] = (logs / "out").read_text(errors="replace")
        result["stderr"] = (logs / "err").read_text(errors="replace")
        medium.restore()
        result["home"] = str(home)
        result["integrity"] = integrity(db_path)
        after = read_ids(db_path)
        result["rows_seen_before_fault"] = sum(len(v) for v in before.values())
        result["rows_lost"] = {t: len(set(before[t]) - set(after[t])) for t in TABLES}
        result["checkpoints"] = [{"id": cid, "whole": sha256(home / rel) == digest}
                                 for cid, rel, digest in checkpoint_rows(db_path)]
        result["stray_temporary_files"] = len(list(home.rglob("*.tmp")))
        statuses = run_statuses(db_path)
        result["status_after_fault"] = statuses.get(1)
        runs = subprocess.run([sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", "runs", "--json"],
                              cwd=code, env=env, capture_output=True, text=True, timeout=300)
        result["runs_exit"] = runs.returncode
        result["runs_ok"] = runs.returncode == 0 and any(r["id"] == 1 for r in json.loads(runs.stdout or "{}").get("runs", []))
        if resume:
            again = subprocess.run(trainer_command(home, steps, "--resume", "1"), cwd=code, env=env,
                                   capture_output=True, text=True, timeout=1200)
            result["resume_exit"] = again.returncode
            result["resume_stderr_tail"] = again.stderr[-500:]
            statuses = run_statuses(db_path)
            result["statuses_after_resume"] = statuses
            result["integrity_after_resume"] = integrity(db_path)
        if hasattr(medium, "fsck"):
            result["fsck"] = medium.fsck
    finally:
        medium.close()
        shutil.rmtree(logs, ignore_errors=True)
    result["checks"] = judge_disk(result, stop_bound=stop_bound)
    result["ok"] = all(result["checks"].values())
    return result


def judge_disk(r: dict, *, stop_bound: float = STOP_BOUND_S) -> dict[str, bool]:
    """What one run must show. r holds what run_one measured (the tests hand it planted results too)."""
    lines = [line for line in r["stderr"].splitlines() if line.strip()]
    line = lines[0] if len(lines) == 1 else ""
    checks = {
        "the fault hit a running trainer": bool(r.get("fault_planted_while_running")),
        "stopped within the bound": r["exit"] != "did not stop" and r["stopped_after_s"] <= stop_bound,
        "exit 2": r["exit"] == 2,
        "one line naming the file and the OS error": line.startswith("navi-tui: error: cannot write ")
        and r["home"] in line and OS_WORDS[r["fault"]] in line,
        "no traceback": "Traceback" not in r["stderr"] + r["stdout"],
        "integrity_check ok": r["integrity"] == "ok",
        "no committed row lost": sum(r["rows_lost"].values()) == 0,
        "every registered checkpoint whole": all(c["whole"] for c in r["checkpoints"]),
        "runs --json works": bool(r.get("runs_ok")),
    }
    if "resume_exit" in r:
        checks["train --resume works"] = r["resume_exit"] in (0, 1) and r.get("integrity_after_resume") == "ok"
        checks["no run left running"] = "running" not in r["statuses_after_resume"].values()
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faults", default="full,readonly,fsize", help=f"comma-separated, of {', '.join(FAULTS)}")
    ap.add_argument("--runs", type=int, default=1, help="runs per fault")
    ap.add_argument("--steps", type=int, default=20, help="the trainer's --steps")
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose navi_tui trains (default: this one)")
    ap.add_argument("--no-resume", action="store_true", help="skip the train --resume after each fault")
    args = ap.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        ap.error(f"unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
    refusals = {"full": mount_refusal(), "readonly": readonly_refusal(), "fsize": None}
    results = []
    for fault in faults:
        if refusals[fault]:
            print(f"skipping {fault}: {refusals[fault]}", file=sys.stderr)
            continue
        for i in range(args.runs):
            # odd runs fault while the planner trains, even ones while the talker does
            r = run_one(fault, steps=args.steps, code=args.code.resolve(), resume=not args.no_resume,
                        after_checkpoints=1 + i % 2)
            failed = [name for name, ok in r["checks"].items() if not ok]
            print(f"{fault} run {i + 1}: {'ok' if r['ok'] else 'FAILED ' + ', '.join(failed)}; exit {r['exit']} "
                  f"{r['stopped_after_s']}s after the fault; {r['stderr'].strip().splitlines()[-1:]}", file=sys.stderr,
                  flush=True)
            results.append({k: v for k, v in r.items() if k not in ("stdout",)})
    summary = {"runs": len(results), "failed": sum(not r["ok"] for r in results),
               "rows_lost": sum(sum(r["rows_lost"].values()) for r in results), "results": results}
    print(json.dumps(summary, indent=2))
    return 0 if results and summary["failed"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
