"""Persist metrics and events from a background thread, in batches.

The training thread only puts rows on a queue; one writer thread owns its
own SQLite connection and commits whatever has piled up in one transaction,
so training never waits on the disk and there is never a commit per value.
"""

import queue
import threading
import time
from pathlib import Path

import sqlite_utils

from .db import connect, write_transaction
from .disk import DiskError, disk_error
from .rows import event_row, metric_row
from .schema import apply_schema


# rows wait at most about this long in the queue before their commit: what a killed process can lose
FLUSH_INTERVAL_S = 0.5


class StoreWriterError(RuntimeError):
    """The writer thread failed; rows it had not committed are lost."""


class _FlushRequest:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class StoreWriter:
    def __init__(self, db_path: Path | str, *, flush_interval: float = FLUSH_INTERVAL_S, max_batch: int = 2000):
        self.db_path = Path(db_path)
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        # written only by the writer thread; tests read them to prove batching
        self.commits = 0
        self.rows_written = 0
        self.error: BaseException | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> "StoreWriter":
        if self._thread is not None:
            raise RuntimeError("StoreWriter is already started")
        # daemon so a writer that was never closed cannot keep the
        # interpreter alive; close() is what guarantees the rows are written
        self._thread = threading.Thread(
            target=self._run, name=f"StoreWriter({self.db_path})", daemon=True
        )
        self._thread.start()
        return self

    def __enter__(self) -> "StoreWriter":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # called from the training thread; none of these touch sqlite

    def metric(self, run_id: int, step: int, phase: str, name: str, value: float) -> None:
        self._check_open()
        self._queue.put(("metrics", metric_row(run_id, step, phase, name, value)))

    def metrics(self, run_id: int, step: int, phase: str, values: dict[str, float]) -> None:
        self._check_open()
        now = time.time()
        for name, value in values.items():
            self._queue.put(("metrics", metric_row(run_id, step, phase, name, value, now)))

    def event(self, run_id: int | None, level: str, kind: str, message: str, data=None) -> None:
        self._check_open()
        self._queue.put(("events", event_row(run_id, level, kind, message, data)))

    def flush(self, timeout: float = 10) -> None:
        """Block until everything queued before this call is committed."""
        self._raise_if_failed()
        if self._closed:
            # close() already wrote everything
            return
        if self._thread is None:
            raise RuntimeError("start() the StoreWriter before flush()")
        request = _FlushRequest()
        self._queue.put(request)
        self._wait_for(request, timeout)
        self._raise_if_failed()

    def close(self, timeout: float = 10) -> None:
        """Write what is queued, stop the thread and close its connection."""
        if self._closed:
            self._raise_if_failed()
            return
        self._closed = True
        if self._thread is None:
            if self._queue.empty():
                return
            # rows were queued but the writer never started: write them now
            self.start()
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"StoreWriter for {self.db_path} did not stop within {timeout}s")
        self._raise_if_failed()

    def _check_open(self) -> None:
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError(f"StoreWriter for {self.db_path} is closed")

    def _raise_if_failed(self) -> None:
        # the error stays set: once the thread is dead, every later call fails
        if isinstance(self.error, DiskError):
            # a full or read-only disk is no bug of the writer: the caller reports it in one line
            raise self.error.again() from self.error
        if self.error is not None:
            raise StoreWriterError(
                f"store writer for {self.db_path} failed: {self.error!r}"
            ) from self.error

    def _wait_for(self, request: _FlushRequest, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # short waits, so a thread that died after the request was queued
        # is noticed at once instead of after the whole timeout
        while not request.done.wait(0.05):
            if not self._thread.is_alive():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"StoreWriter for {self.db_path} did not flush within {timeout}s"
                )

    # the writer thread

    def _open_database(self) -> sqlite_utils.Database:
        db = connect(self.db_path)
        # the schema must exist before insert_all, which would otherwise
        # invent tables from the first rows it sees
        apply_schema(db)
        return db

    def _run(self) -> None:
        db = None
        try:
            db = self._open_database()
            stop = False
            while not stop:
                batch, requests, stop = self._collect()
                self._write(db, batch)
                for request in requests:
                    request.done.set()
        except BaseException as exc:
            self.error = disk_error(exc, "the store", self.db_path) or exc
            self._release_waiters()
        finally:
            if db is not None:
                db.close()

    def _collect(self) -> tuple[dict[str, list[dict]], list[_FlushRequest], bool]:
        """Wait for a first item, then gather more for up to flush_interval.

        Gathering ends early when max_batch rows are in hand, or when a flush
        or close asks for them: then only what is already queued is taken.
        """
        batch: dict[str, list[dict]] = {"metrics": [], "events": []}
        requests: list[_FlushRequest] = []
        count = 0
        urgent = False
        item = self._queue.get()
        deadline = time.monotonic() + self.flush_interval
        while True:
            if item is _STOP:
                return batch, requests, True
            if isinstance(item, _FlushRequest):
                requests.append(item)
                urgent = True
            else:
                table, row = item
                batch[table].append(row)
                count += 1
                if count >= self.max_batch:
                    break
            try:
                remaining = deadline - time.monotonic()
                if urgent or remaining <= 0:
                    item = self._queue.get_nowait()
                else:
                    item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
        return batch, requests, False

    def _write(self, db: sqlite_utils.Database, batch: dict[str, list[dict]]) -> None:
        rows = sum(len(table_rows) for table_rows in batch.values())
        if rows == 0:
            return
        with write_transaction(db):
            for table, table_rows in batch.items():
                if table_rows:
                    db[table].insert_all(table_rows)
        self.commits += 1
        self.rows_written += rows

    def _release_waiters(self) -> None:
        # wake flushes that are already queued; they will see self.error
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _FlushRequest):
                item.done.set()
