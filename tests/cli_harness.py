"""Running the command line in this process, and what a home folder holds before and after.

Not a test module: the reliability tests import it (tests/ is on sys.path, as for
discord_loopback.py), and benchmarks/reliability/input_fuzz.py reads what tally() writes.
"""

import contextlib
import io
import json
import os
import sqlite3
from pathlib import Path


def store_dump(home: Path) -> dict:
    """Every row of every table of home/navi.db, and the files under home with their sizes.

    Read through a read-only connection, so taking the dump changes nothing either. The WAL's
    side files come and go with connections and are left out; their rows are in the dump.
    """
    db = sqlite3.connect(f"file:{home / 'navi.db'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: db.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        db.close()
    files = {p.relative_to(home).as_posix(): p.stat().st_size for p in sorted(home.rglob("*"))
             if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    return {"rows": rows, "files": files}


def run_main(main, args: list) -> tuple[int | str, str, str]:
    """navi_tui.cli.main in this process -> (exit code, stdout, stderr). An exception that escapes
    main is returned as the code "escaped: <type>: <message>", so a test names it instead of
    crashing in it; hypothesis then shrinks it like any other failure."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's exit 2 for bad usage
        code = e.code
    except BaseException as e:  # noqa: BLE001 - reporting it is the point
        code = f"escaped: {type(e).__name__}: {e}"[:500]
    return code, out.getvalue(), err.getvalue()


def one_line_error(err: str) -> str:
    """The single 'navi-tui: error: ...' line a refusal prints, or an AssertionError saying why not."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("navi-tui: error: "), f"not one error line: {err!r}"
    return lines[0]


def tally(test: str, case: str, file: str | None = None, outcome: str | None = None) -> None:
    """One generated case, appended to $NAVI_FUZZ_TALLY when it is set (the long form counts them)."""
    path = os.environ.get("NAVI_FUZZ_TALLY")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "case": case, "file": file, "outcome": outcome}) + "\n")
