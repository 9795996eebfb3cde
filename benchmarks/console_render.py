"""What the console's UI thread spends per second of a fast run, without a trainer to disturb it.

    python benchmarks/console_render.py --seconds 30 --hz 4

The console opens a fixed store (the snapshot tests' run), then the loss windows of a fast
talker phase arrive at --hz (a GPU run logs a window each 50 steps; 4 a second is a fast one),
with a concept-similarity point and a log line every 10th. Reported: the UI thread's CPU as a
share of one core, and the time each widget class spent rendering. On a GPU the trainer is
launch-bound, so this CPU time is roughly what the console takes from it: the GIL is one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from textual.screen import Screen  # noqa: E402
from textual.widget import Widget  # noqa: E402

from test_console import FixedStats, make_app  # noqa: E402
from test_console_snapshots import fixed_home  # noqa: E402

APP_ARGS: dict = {}
spent: dict[str, float] = collections.defaultdict(float)


def timed(name_of, fn):
    def wrapper(self, *args, **kwargs):
        t = time.thread_time()
        try:
            return fn(self, *args, **kwargs)
        finally:
            spent[name_of(self)] += time.thread_time() - t
    return wrapper


async def feed(seconds: float, hz: float) -> tuple[float, float, int]:
    app = make_app(fixed_home(Path(tempfile.mkdtemp(prefix="navi-render-"))), system_stats=FixedStats(), **APP_ARGS)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.pause(1.0)
        spent.clear()
        view, step, windows = app.view, 100, 0
        t0, c0 = time.perf_counter(), time.thread_time()
        while time.perf_counter() - t0 < seconds:
            step, windows = step + 50, windows + 1
            view.metrics(step, "sft", {"loss": 1.0 / (1 + windows * 0.01), "tokens_per_s": 120000.0 + windows,
                                       "step_ms": 30.0})
            if windows % 10 == 0:
                view.metrics(step, "sft", {"concept_sim": 0.3})
                view.event("info", "sample", f"step {step}: 'hello' -> 'hi there'", None)
            await asyncio.sleep(1.0 / hz)
        return time.perf_counter() - t0, time.thread_time() - c0, windows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--hz", type=float, default=4.0, help="loss windows a second")
    args = ap.parse_args()
    # widgets that draw through render() and those that serve lines (the charts) both counted
    Widget._render_content = timed(lambda w: type(w).__name__, Widget._render_content)
    from navi_tui.widgets.chart import BrailleChart
    BrailleChart.render_line = timed(lambda w: type(w).__name__, BrailleChart.render_line)
    Screen._compositor_refresh = timed(lambda s: "all repaints (compositor)", Screen._compositor_refresh)
    wall, cpu, windows = asyncio.run(feed(args.seconds, args.hz))
    print(f"{windows} windows at {args.hz:g}/s over {wall:.1f}s: ui thread {cpu:.2f}s cpu = "
          f"{100 * cpu / wall:.2f}% of one core")
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {name:<28} {1000 * s / wall:6.2f} ms a second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
