"""The run database: one SQLite file per navi home, at home/navi.db."""

import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path

import sqlite_utils

from .disk import disk_error
from .rows import OUTBOX_OUTCOMES, RUN_STATUSES, VERDICTS, event_row, metric_row
from .schema import apply_schema

DB_FILENAME = "navi.db"


def connect(path: Path | str) -> sqlite_utils.Database:
    """Open the database file with the settings every navi connection uses."""
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    db = sqlite_utils.Database(conn)
    try:
        _enable_wal(db)
        db.execute("PRAGMA busy_timeout=30000")
        # full syncs the wal at every commit, so what a reader saw committed survives a power cut
        # or a file system the kernel turns read-only after an error. normal (no sync until a
        # checkpoint of the wal) lost every row of a young run that way: the disk-trouble harness
        # (docs/reliability.md, "Disk trouble"). Commits are batched (the writer's one per half second), so
        # the syncs cost the trainer nothing it waits for
        db.execute("PRAGMA synchronous=FULL")
        # sqlite leaves foreign keys off unless each connection asks
        db.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return db


def _enable_wal(db: sqlite_utils.Database, patience: float = 30) -> None:
    # wal lets the tui and other readers read while training writes.
    # switching a fresh file to wal needs an exclusive lock, and when several
    # connections open the file at once sqlite answers "database is locked"
    # at once instead of waiting through busy_timeout (it would deadlock);
    # the failed statement drops its locks, so trying again is safe
    deadline = time.monotonic() + patience
    while True:
        try:
            db.enable_wal()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database):
    """One write transaction that takes the write lock up front (BEGIN IMMEDIATE).

    sqlite-utils' atomic() begins a deferred transaction, and an insert first reads the table's
    columns: once another connection (the writer thread) commits in between, SQLite refuses to
    turn that read into a write and answers "database is locked" at once, without waiting out
    busy_timeout. Seen in the test suite; BEGIN IMMEDIATE waits for the lock instead.
    """
    if db.conn.in_transaction:
        with db.atomic():  # nested: a savepoint inside the open transaction
            yield db
        return
    try:
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.conn.in_transaction:
                _rollback(db)
            raise
        else:
            db.conn.execute("COMMIT")
    except sqlite3.Error as exc:
        # a full disk or a file system gone read-only: one line naming the file and the OS error
        found = disk_error(exc, "the store", database_file(db))
        if found is None:
            raise
        if db.conn.in_transaction:
            _rollback(db)
        raise found from exc


def _rollback(db: sqlite_utils.Database) -> None:
    try:
        db.conn.execute("ROLLBACK")
    except sqlite3.Error:
        # sqlite may have rolled back itself (SQLITE_FULL, SQLITE_IOERR): the error that got us
        # here is the one to report
        pass


def database_file(db: sqlite_utils.Database) -> Path:
    """The file of db's main database, for messages."""
    try:
        for row in db.conn.execute("PRAGMA database_list"):
            if row[1] == "main" and row[2]:
                return Path(row[2])
    except sqlite3.Error:
        pass
    return Path("navi.db")


def _json_or_none(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # the process exists but belongs to another user
        return True
    return True


class Store:
    """Reads and writes runs, metrics, checkpoints, evals and events."""

    def __init__(self, home: Path | str):
        # absolute, so every path derived from it means the same whatever the working folder
        self.home = Path(home).resolve()
        self.home.mkdir(parents=True, exist_ok=True)
        self.path = self.home / DB_FILENAME
        self.db = connect(self.path)
        try:
            apply_schema(self.db)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # runs

    def create_run(
        self,
        *,
        profile: str,
        command: str,
        config: dict,
        resumed_from: int | None = None,
    ) -> int:
        with write_transaction(self.db):
            table = self.db["runs"].insert(
                {
                    "created": time.time(),
                    "finished": None,
                    "status": "running",
                    "verdict": None,
                    "profile": profile,
                    "command": command,
                    "config_json": json.dumps(config, sort_keys=True),
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "resumed_from": resumed_from,
                    "message": None,
                }
            )
        return table.last_pk

    def finish_run(
        self,
        run_id: int,
        *,
        status: str,
        verdict: str | None,
        message: str | None = None,
    ) -> None:
        if status not in RUN_STATUSES or status == "running":
            finished = [s for s in RUN_STATUSES if s != "running"]
            raise ValueError(f"status must be one of {finished}, not {status!r}")
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"verdict must be None or one of {VERDICTS}, not {verdict!r}")
        with write_transaction(self.db):
            cursor = self.db.execute(
                "UPDATE runs SET status = ?, verdict = ?, message = ?, finished = ? WHERE id = ?",
                [status, verdict, message, time.time(), run_id],
            )
            if cursor.rowcount == 0:
                raise ValueError(f"no run with id {run_id}")

    def mark_crashed_runs(self) -> list[int]:
        """Mark as crashed the running runs whose process on this host is gone."""
        host = socket.gethostname()
        running = self.db.query(
            "SELECT id, pid FROM runs WHERE status = 'running' AND host = ? ORDER BY id",
            [host],
        )
        dead = [(row["id"], row["pid"]) for row in running if not process_alive(row["pid"])]
        if not dead:
            # reading commands (runs, eval) call this on every start: no write lock for nothing
            return []
        now = time.time()
        with write_transaction(self.db):
            for run_id, pid in dead:
                # the status test keeps a run that finished meanwhile as it is
                self.db.execute(
                    "UPDATE runs SET status = 'crashed', finished = ?, message = ? "
                    "WHERE id = ? AND status = 'running'",
                    [now, f"process {pid} ended without finishing the run", run_id],
                )
        return [run_id for run_id, _ in dead]

    def get_run(self, run_id: int) -> dict | None:
        return self._one("SELECT * FROM runs WHERE id = ?", [run_id])

    def list_runs(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM runs ORDER BY id DESC"))

    def latest_run(self, status: str | None = None) -> dict | None:
        if status is None:
            return self._one("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        return self._one("SELECT * FROM runs WHERE status = ? ORDER BY id DESC LIMIT 1", [status])

    # metrics and events

    def insert_metrics(self, rows: list[dict]) -> None:
        """Insert rows of run_id, step, phase, name, value and optional time."""
        records = [metric_row(**row) for row in rows]
        with write_transaction(self.db):
            self.db["metrics"].insert_all(records)

    def insert_events(self, rows: list[dict]) -> None:
        """Insert rows of run_id, level, kind, message, optional data and time."""
        records = [event_row(**row) for row in rows]
        with write_transaction(self.db):
            self.db["events"].insert_all(records)

    def metrics(self, run_id: int, name: str | None = None) -> list[dict]:
        if name is None:
            return list(
                self.db.query("SELECT * FROM metrics WHERE run_id = ? ORDER BY id", [run_id])
            )
        return list(
            self.db.query(
                "SELECT * FROM metrics WHERE run_id = ? AND name = ? ORDER BY id",
                [run_id, name],
            )
        )

    def metrics_after(self, run_id: int, cursor_id: int, limit: int = 20000) -> list[dict]:
        """Metrics with id above cursor_id, oldest first, for a follower that polls; at most
        limit rows a call, so catching up on a long run never stalls the reader."""
        return list(
            self.db.query(
                "SELECT * FROM metrics WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
                [run_id, cursor_id, limit],
            )
        )

    def events(self, run_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM events WHERE run_id = ? ORDER BY id", [run_id]))

    def events_after(self, run_id: int, cursor_id: int, limit: int = 5000) -> list[dict]:
        """Events with id above cursor_id, oldest first, for a follower that polls."""
        return list(
            self.db.query(
                "SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
                [run_id, cursor_id, limit],
            )
        )

    # checkpoints

    def add_checkpoint(
        self,
        run_id: int,
        *,
        step: int,
        phase: str,
        model: str,
        path: Path,
        sha256: str,
        meta: dict | None = None,
    ) -> int:
        with write_transaction(self.db):
            table = self.db["checkpoints"].insert(
                {
                    "run_id": run_id,
                    "step": step,
                    "phase": phase,
                    "model": model,
                    "path": self._relative_to_home(Path(path)),
                    "sha256": sha256,
                    "created": time.time(),
                    "meta_json": json.dumps(meta or {}, sort_keys=True),
                }
            )
        return table.last_pk

    def checkpoint_path(self, checkpoint: dict) -> Path:
        """The absolute file path of a checkpoint row."""
        return self.home / checkpoint["path"]

    def checkpoints(self, run_id: int) -> list[dict]:
        return list(
            self.db.query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY id", [run_id])
        )

    def get_checkpoint(self, checkpoint_id: int) -> dict | None:
        return self._one("SELECT * FROM checkpoints WHERE id = ?", [checkpoint_id])

    def latest_checkpoint(self, run_id: int, model: str | None = None) -> dict | None:
        """The checkpoint with the highest step (the newest one on a tie)."""
        if model is None:
            return self._one(
                "SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step DESC, id DESC LIMIT 1",
                [run_id],
            )
        return self._one(
            "SELECT * FROM checkpoints WHERE run_id = ? AND model = ? "
            "ORDER BY step DESC, id DESC LIMIT 1",
            [run_id, model],
        )

    # evals

    def add_evals(self, run_id: int, checkpoint_id: int | None, rows: list[dict]) -> None:
        """Record gate results: each row has gate, value, threshold, passed, detail."""
        now = time.time()
        records = [
            {
                "run_id": run_id,
                "checkpoint_id": checkpoint_id,
                "created": now,
                "gate": row["gate"],
                "value": row["value"],
                "threshold": None if row["threshold"] is None else str(row["threshold"]),
                "passed": 1 if row["passed"] else 0,
                "detail_json": _json_or_none(row.get("detail")),
            }
            for row in rows
        ]
        with write_transaction(self.db):
            self.db["evals"].insert_all(records)

    def add_gallery(self, run_id: int, checkpoint_id: int | None, rows: list[dict]) -> None:
        """Record generated answers: each row has prompt, output, reference, score, exact, memory."""
        now = time.time()
        records = [
            {
                "run_id": run_id,
                "checkpoint_id": checkpoint_id,
                "prompt": row["prompt"],
                "output": row["output"],
                "reference": row["reference"],
                "score": row["score"],
                "exact": 1 if row["exact"] else 0,
                "memory_json": json.dumps(row.get("memory") or [], sort_keys=True),
                "created": now,
            }
            for row in rows
        ]
        with write_transaction(self.db):
            self.db["gallery"].insert_all(records)

    def gallery(self, run_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM gallery WHERE run_id = ? ORDER BY id", [run_id]))

    def evals(self, run_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM evals WHERE run_id = ? ORDER BY id", [run_id]))

    def evals_after(self, run_id: int, cursor_id: int) -> list[dict]:
        """Gate results with id above cursor_id, oldest first, for a follower that polls."""
        return list(self.db.query("SELECT * FROM evals WHERE run_id = ? AND id > ? ORDER BY id", [run_id, cursor_id]))

    def latest_metric(self, run_id: int, name: str) -> dict | None:
        """The newest row of one metric, whatever its phase: what a status line shows."""
        return self._one("SELECT * FROM metrics WHERE run_id = ? AND name = ? ORDER BY id DESC LIMIT 1",
                         [run_id, name])

    def last_metric_id(self, run_id: int) -> int:
        row = self._one("SELECT max(id) AS id FROM metrics WHERE run_id = ?", [run_id])
        return row["id"] or 0

    def last_event_id(self, run_id: int) -> int:
        row = self._one("SELECT max(id) AS id FROM events WHERE run_id = ?", [run_id])
        return row["id"] or 0

    # outbox: messages for the discord mirror, written before any delivery is tried

    def queue_message(
        self,
        kind: str,
        content: str,
        *,
        run_id: int | None = None,
        edit_key: str | None = None,
        dedupe_key: str | None = None,
    ) -> int | None:
        """Queue one message; None when dedupe_key was queued before (by anyone, sent or not)."""
        with write_transaction(self.db):
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO outbox (created, kind, payload_json, attempts, run_id, edit_key, dedupe_key) "
                "VALUES (?, ?, ?, 0, ?, ?, ?)",
                [time.time(), kind, json.dumps({"content": content}), run_id, edit_key, dedupe_key],
            )
        return cursor.lastrowid if cursor.rowcount else None

    def unsent_messages(self, limit: int = 50) -> list[dict]:
        """Messages not yet sent, oldest first: the relay's queue."""
        return list(self.db.query("SELECT * FROM outbox WHERE sent IS NULL ORDER BY id LIMIT ?", [limit]))

    def unsent_count(self) -> int:
        return self._one("SELECT count(*) AS n FROM outbox WHERE sent IS NULL")["n"]

    def newer_unsent_version(self, message: dict) -> bool:
        """Whether a later unsent row of the same kind and edit_key makes this one stale."""
        row = self._one(
            "SELECT 1 AS x FROM outbox WHERE sent IS NULL AND id > ? AND kind = ? AND edit_key IS ? LIMIT 1",
            [message["id"], message["kind"], message["edit_key"]],
        )
        return row is not None

    def delivered_message_id(self, edit_key: str) -> str | None:
        """The discord message that rows with this edit_key edit: the one the newest delivered row holds."""
        row = self._one(
            "SELECT discord_message_id FROM outbox WHERE edit_key = ? AND outcome = 'delivered' "
            "AND discord_message_id IS NOT NULL ORDER BY id DESC LIMIT 1",
            [edit_key],
        )
        return row["discord_message_id"] if row else None

    def mark_sent(self, message_id: int, *, outcome: str, discord_message_id: str | None = None) -> bool:
        """Close a row once; False when it was already closed (then nothing changes)."""
        if outcome not in OUTBOX_OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTBOX_OUTCOMES}, not {outcome!r}")
        with write_transaction(self.db):
            cursor = self.db.execute(
                "UPDATE outbox SET sent = ?, outcome = ?, discord_message_id = ?, attempts = attempts + ? "
                "WHERE id = ? AND sent IS NULL",
                # a failed try (a rejection too) was counted by note_failed_attempt
                [time.time(), outcome, discord_message_id, 1 if outcome == "delivered" else 0, message_id],
            )
        return cursor.rowcount == 1

    def note_failed_attempt(self, message_id: int, error: str) -> None:
        """error must already be free of secrets: it is stored as given."""
        with write_transaction(self.db):
            self.db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ? AND sent IS NULL",
                [error[:500], message_id],
            )

    def outbox(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM outbox ORDER BY id"))

    # helpers

    def _one(self, sql: str, params: list | None = None) -> dict | None:
        return next(self.db.query(sql, params), None)

    def _relative_to_home(self, path: Path) -> str:
        # stored relative so a home can be moved or copied whole; a relative path given here
        # is relative to the working folder, like every other path a caller holds
        try:
            return path.resolve().relative_to(self.home.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"checkpoint {path} is not inside home {self.home}") from None
