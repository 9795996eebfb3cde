"""What a Discord that is down for a whole run costs the run, and what arrives once it is back.

    python benchmarks/discord_down.py --steps 60 --reps 2

Each rep runs `navi-tui --no-ui --profile tiny train --steps N` twice, in a process of its own,
alternating which goes first: once with no mirror configured, once with the mirror's webhook
pointed at a port where nothing listens (every delivery fails to connect; heartbeats every 2 s
and status edits every second keep the outbox busy). Then the loopback Discord server
(tests/discord_loopback.py) starts on that port and `navi-tui --no-ui mirror` delivers the
outbox: the script checks that every message arrived exactly once, in the order queued.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from discord_loopback import LoopbackDiscord, free_port  # noqa: E402
from store import Store  # noqa: E402

last_cpu = 0.0


def navi(home: Path, args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run navi-tui in a process of its own; wall seconds and stdout. The child's CPU seconds
    (user + system, all its threads) are added to CPU[mode] by the caller through last_cpu."""
    global last_cpu
    base = {k: v for k, v in os.environ.items() if not k.startswith("NAVI_DISCORD_")}
    base["PYTHONPATH"] = str(REPO) + os.pathsep + base.get("PYTHONPATH", "")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", *args],
                          env={**base, **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 1):
        raise SystemExit(f"navi-tui {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    port = free_port()  # nothing listens here until the server starts at the end
    server = LoopbackDiscord(port)
    mirror_env = {**server.webhook_env(), "NAVI_DISCORD_HEARTBEAT": "2", "NAVI_DISCORD_EDIT_INTERVAL": "1"}
    train = ["--profile", "tiny", "train", "--steps", str(args.steps)]
    work = Path(tempfile.mkdtemp(prefix="navi-discord-down-"))
    plain_home, mirror_home = work / "plain", work / "mirrored"
    times: dict[str, list[float]] = {"no mirror": [], "mirror, Discord down": []}
    cpu: dict[str, list[float]] = {"no mirror": [], "mirror, Discord down": []}
    for rep in range(args.reps):
        order = ["no mirror", "mirror, Discord down"]
        if rep % 2:
            order.reverse()
        for mode in order:
            if mode == "no mirror":
                seconds, out = navi(plain_home, train, {})
            else:
                seconds, out = navi(mirror_home, train, mirror_env)
                summary = [line for line in out.splitlines() if line.startswith("discord:")]
                print("   ", " / ".join(summary))
            times[mode].append(seconds)
            cpu[mode].append(last_cpu)
            print(f"rep {rep + 1}: {mode:<22} {seconds:6.1f} s wall, {last_cpu:6.1f} s CPU", flush=True)

    with Store(mirror_home) as store:
        rows = store.outbox()
    queued = len(rows)
    waiting = [r for r in rows if r["sent"] is None]
    kinds: dict[str, int] = {}
    for r in waiting:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(f"\noutbox after the runs: {queued} rows, {len(waiting)} unsent ({kinds}); "
          f"{sum(r['sent'] is not None for r in rows)} closed while down (stale status/heartbeat versions)")

    server.start()
    try:
        seconds, out = navi(mirror_home, ["mirror", "--timeout", "120"], mirror_env)
        print(f"Discord back: `navi-tui --no-ui mirror` took {seconds:.1f} s: {out.strip().splitlines()[-1]}")
        with Store(mirror_home) as store:
            rows = store.outbox()
        delivered = [r for r in rows if r["outcome"] == "delivered"]
        posted = server.posted()
        writes = server.writes()
        assert all(r["sent"] is not None for r in rows), "some rows were left unsent"
        # one POST per new message and one PATCH per status edit: nothing was sent twice
        assert len(writes) == len(delivered), (len(writes), len(delivered))
        first_posts = [r for r in delivered if not r["edit_key"] or r["discord_message_id"] not in
                       {d["discord_message_id"] for d in delivered if d["id"] < r["id"]}]
        assert [m.versions[0] for m in posted] == [eval_content(r) for r in first_posts], "order differs"
        starts = sum(m.content.startswith("▶") for m in posted)
        ends = sum(m.content.startswith("■") for m in posted)
        beats = sum(m.content.startswith("💓") for m in posted)
        print(f"delivered {len(delivered)} rows as {len(posted)} messages (+{len(writes) - len(posted)} edits): "
              f"{starts} starts, {ends} end messages with the verdict, {beats} heartbeat(s), "
              f"{sum(m.content.startswith('✗') for m in posted)} gate failures; each once, in order")
    finally:
        server.stop()

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    for mode, values in times.items():
        print(f"{mode:<22} median {statistics.median(values):6.1f} s wall ({', '.join(f'{v:.1f}' for v in values)}), "
              f"{statistics.median(cpu[mode]):6.1f} s CPU ({', '.join(f'{v:.1f}' for v in cpu[mode])})")
    ratio = statistics.median(times["mirror, Discord down"]) / statistics.median(times["no mirror"])
    print(f"ratio mirror-down / no-mirror: {ratio:.3f}")


def eval_content(row: dict) -> str:
    import json

    return json.loads(row["payload_json"])["content"]


if __name__ == "__main__":
    main()
