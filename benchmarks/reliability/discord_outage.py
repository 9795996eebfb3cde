"""Discord down for a long stretch while a live relay keeps running, then back: what arrives?

    python benchmarks/reliability/discord_outage.py --minutes 10
    python benchmarks/reliability/discord_outage.py --minutes 0.05 --tuning fast     (seconds; the test's form)

A real relay (navi_tui.mirror.Mirror, the real discord.py client in its own thread and loop)
follows a real store while a writer queues what a run queues: a one-off message every 0.25 s
(start, gate failures, alarms, rollbacks, the end: every one must arrive), a new version of one
status message every second (edited in place; only the newest must arrive) and a heartbeat every
2 s (likewise). The loopback Discord server (tests/discord_loopback.py) is down for the whole
writing stretch, with the relay retrying against a closed port at its real backoff (doubling to
30 s). Then, once the relay has failed a try against it, the server comes back and the script
waits until the outbox is empty.

Checks: every one-off message arrived exactly once, in the order queued; the status message
shows its newest version; no message was written twice; the store says each row closed once.
Exit 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from discord_loopback import LoopbackDiscord  # noqa: E402
from navi_tui.mirror import Mirror, Tuning  # noqa: E402
from navi_tui.mirror.targets import use_api_base  # noqa: E402
from store import Store  # noqa: E402

# the test's form shortens every wait; the real form keeps the relay's own defaults
FAST = Tuning(poll_interval=0.05, backoff_base=0.05, backoff_cap=0.3, request_timeout=10, lock_retry=0.2,
              command_poll=0.1)


WRITE_EVERY_S = 0.25  # a one-off message this often, as a busy run queues them


def write_outage(home: Path, seconds: float, stop: threading.Event) -> dict[str, list[str]]:
    """Queue a run's traffic: one round every WRITE_EVERY_S, as many rounds as fit in `seconds` at
    that pace (or until stop). The count is fixed, not what fits in the wall clock: a slow machine
    writes the same traffic, only later. Returns what was queued, by kind."""
    queued: dict[str, list[str]] = {"event": [], "status": [], "heartbeat": []}
    with Store(home) as store:
        for i in range(max(1, round(seconds / WRITE_EVERY_S))):
            if stop.is_set():
                break
            text = f"event {i}: gate failed at step {i * 50}"
            store.queue_message("alarm", text)
            queued["event"].append(text)
            if i % 4 == 0:
                text = f"status: step {i * 50}, loss {1.0 / (i + 1):.4f}"
                store.queue_message("status", text, edit_key="status:run-1")
                queued["status"].append(text)
            if i % 8 == 0:
                text = f"heartbeat {i // 8}"
                store.queue_message("heartbeat", text, edit_key="heartbeat")
                queued["heartbeat"].append(text)
            time.sleep(WRITE_EVERY_S)  # the pace of a run's writes, not a wait for anything
    return queued


def wait_for_failed_try(home: Path, mirror, timeout: float) -> None:
    """Until the relay has tried the closed port and failed, and says it is retrying: the outage is
    real to it. Raises when that takes longer than timeout (a relay that never tries)."""
    deadline = time.monotonic() + timeout
    while True:
        with Store(home) as store:
            failed = sum(r["attempts"] for r in store.outbox())  # nothing is delivered while down
        if failed and mirror.state().startswith("retrying"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the relay made no failed try in {timeout:.0f} s of the outage "
                               f"(state: {mirror.state()})")
        time.sleep(0.05)


def run(minutes: float, tuning: Tuning | None, settle_timeout: float = 120.0) -> dict:
    home = Path(tempfile.mkdtemp(prefix="navi-outage-"))
    server = LoopbackDiscord().start()
    server.down()
    mirror = Mirror.from_env(home, server.webhook_env(), tuning, follow=False) if tuning else \
        Mirror.from_env(home, server.webhook_env(), follow=False)
    mirror.start()
    try:
        t0 = time.monotonic()
        queued = write_outage(home, 60.0 * minutes, threading.Event())
        wait_for_failed_try(home, mirror, settle_timeout)
        outage = time.monotonic() - t0
        state_down = mirror.state()
        with Store(home) as store:
            rows_queued = len(store.outbox())
        server.up()
        t_back = time.monotonic()
        deadline = t_back + settle_timeout
        while time.monotonic() < deadline:
            with Store(home) as store:
                if store.unsent_count() == 0:
                    break
            time.sleep(0.1)
        drained = time.monotonic() - t_back
        with Store(home) as store:
            rows = store.outbox()
    finally:
        mirror.close()
        server.stop()
        use_api_base(None)

    contents = server.contents()
    posts = [w for w in server.writes() if w[1] == "POST"]
    checks = judge_delivery(queued, contents, len(posts), rows)
    delivered = [r for r in rows if r["outcome"] == "delivered"]
    return {
        "minutes": minutes, "outage_seconds": round(outage, 1), "state_while_down": state_down,
        "rows_queued": rows_queued, "events_queued": len(queued["event"]),
        "status_versions": len(queued["status"]), "heartbeats": len(queued["heartbeat"]),
        "messages_posted": len(posts), "superseded": sum(r["outcome"] == "superseded" for r in rows),
        "drained_seconds_after_back": round(drained, 1),
        "failed_attempts": sum(r["attempts"] for r in rows) - len(delivered),
        "checks": checks, "ok": all(checks.values()),
    }


def judge_delivery(queued: dict[str, list[str]], contents: list[str], n_posts: int, rows: list[dict]) -> dict:
    """What arrived against what was queued. Nothing was delivered during the outage, so each
    status and heartbeat row but the newest is superseded, and the newest goes out as a new
    message: one each."""
    expected_posts = len(queued["event"]) + 2
    delivered = [r for r in rows if r["outcome"] == "delivered"]
    return {
        "every event once, in order": [c for c in contents if c.startswith("event ")] == queued["event"],
        "the newest status, once": [c for c in contents if c.startswith("status:")] == queued["status"][-1:],
        "the newest heartbeat, once": [c for c in contents if c.startswith("heartbeat")] == queued["heartbeat"][-1:],
        "nothing posted twice or beside": n_posts == expected_posts == len(contents),
        "every row closed, as delivered or superseded":
            all(r["sent"] is not None and r["outcome"] in ("delivered", "superseded") for r in rows),
        "a delivered row per message": len(delivered) == expected_posts,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long Discord stays down while the run writes")
    ap.add_argument("--tuning", choices=("real", "fast"), default="real",
                    help="real: the relay's own poll and backoff (doubling to 30 s); fast: the tests' short waits")
    args = ap.parse_args()
    result = run(args.minutes, FAST if args.tuning == "fast" else None)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
