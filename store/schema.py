"""The navi database schema, as sqlite-utils migrations.

Add a new decorated function at the end to change the schema; never edit
one that has shipped, because homes that already applied it will not run
it again.
"""

from sqlite_utils import Database, Migrations

migrations = Migrations("navi")


# the schema is written as sql rather than table().create() because
# sqlite-utils cannot emit AUTOINCREMENT, and run ids must never be reused:
# checkpoint folders are named after them
CREATE_TABLES = [
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created REAL NOT NULL,
        finished REAL,
        status TEXT NOT NULL,
        verdict TEXT,
        profile TEXT NOT NULL,
        command TEXT NOT NULL,
        config_json TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        resumed_from INTEGER REFERENCES runs(id),
        message TEXT
    )
    """,
    """
    CREATE TABLE metrics (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        step INTEGER NOT NULL,
        phase TEXT NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        time REAL NOT NULL
    )
    """,
    "CREATE INDEX metrics_run_name_step ON metrics (run_id, name, step)",
    "CREATE INDEX metrics_run_id ON metrics (run_id, id)",
    """
    CREATE TABLE checkpoints (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        step INTEGER NOT NULL,
        phase TEXT NOT NULL,
        model TEXT NOT NULL,
        path TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        created REAL NOT NULL,
        meta_json TEXT NOT NULL
    )
    """,
    "CREATE INDEX checkpoints_run_model_step ON checkpoints (run_id, model, step)",
    """
    CREATE TABLE evals (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        checkpoint_id INTEGER REFERENCES checkpoints(id),
        created REAL NOT NULL,
        gate TEXT NOT NULL,
        value REAL,
        threshold TEXT,
        passed INTEGER NOT NULL,
        detail_json TEXT
    )
    """,
    "CREATE INDEX evals_run ON evals (run_id, id)",
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_id INTEGER REFERENCES runs(id),
        time REAL NOT NULL,
        level TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data_json TEXT
    )
    """,
    "CREATE INDEX events_run ON events (run_id, id)",
    """
    CREATE TABLE gallery (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        checkpoint_id INTEGER REFERENCES checkpoints(id),
        prompt TEXT,
        output TEXT,
        reference TEXT,
        score REAL,
        created REAL NOT NULL
    )
    """,
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        created REAL NOT NULL,
        kind TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        sent REAL,
        attempts INTEGER NOT NULL DEFAULT 0
    )
    """,
]


@migrations()
def m001_create_tables(db: Database) -> None:
    for statement in CREATE_TABLES:
        db.execute(statement)


@migrations()
def m002_gallery_detail(db: Database) -> None:
    # a gallery row is judged with its memory and its exact-match flag, and read back per run
    db.execute("ALTER TABLE gallery ADD COLUMN memory_json TEXT")
    db.execute("ALTER TABLE gallery ADD COLUMN exact INTEGER")
    db.execute("CREATE INDEX gallery_run ON gallery (run_id, id)")


@migrations()
def m003_outbox_delivery(db: Database) -> None:
    # the discord mirror: a row is one message; rows sharing an edit_key are versions of one
    # discord message edited in place (a run's status), so the relay needs the message id the
    # first delivery got back. dedupe_key makes "announce run 7's end" idempotent across
    # relays and restarts. last_error is what the relay last met, already redacted
    for column in ("run_id INTEGER REFERENCES runs(id)", "edit_key TEXT", "dedupe_key TEXT", "outcome TEXT",
                   "discord_message_id TEXT", "last_error TEXT"):
        db.execute(f"ALTER TABLE outbox ADD COLUMN {column}")
    db.execute("CREATE UNIQUE INDEX outbox_dedupe ON outbox (dedupe_key)")
    db.execute("CREATE INDEX outbox_unsent ON outbox (sent, id)")
    db.execute("CREATE INDEX outbox_edit_key ON outbox (edit_key, id)")


def apply_schema(db: Database) -> None:
    """Bring db up to the latest schema; a no-op when it already is."""
    # begin immediate takes the write lock before the pending migrations are
    # read, so two processes opening a fresh home at once cannot both try to
    # apply migration 1; migrations.apply nests inside as savepoints
    db.execute("BEGIN IMMEDIATE")
    try:
        migrations.apply(db)
    except BaseException:
        db.rollback()
        raise
    db.commit()
