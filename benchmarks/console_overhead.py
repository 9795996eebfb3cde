"""What the console costs the trainer, and how fast a key reaches it.

    python benchmarks/console_overhead.py --profile tiny --device cpu --steps 300 --reps 2
    python benchmarks/console_overhead.py --profile base --device cuda --steps 600 --reps 2

Throughput: the same training (profile, --steps, device, seed) runs headless (train_run with the
--no-ui progress printer, as `navi-tui --no-ui train` does) and in the console (NaviApp through
Textual's run_test: the real app, widgets and redraws, on a virtual screen), alternating which
goes first. Each run is a process of its own, as a user's `navi-tui --no-ui` and `navi-tui` are:
within one process, a headless run on the main thread left the CPU's later console runs 25-35%
slower, which no user meets. tokens/s per phase is read back from the store: total tokens over
total time of the logged windows after each phase's first (warm-up, allocator, kernels).

Key latency: in one more console run, `p` is pressed 10 times while training runs. "acted" is
the time from the key's press to the control object's pause; "trainer" is the time until the
training loop blocks at its next step boundary (at most one step).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import navi_tui.training_session as training_session  # noqa: E402
from navi_model.assets import corpus_dir  # noqa: E402
from navi_model.config import get_profile  # noqa: E402
from navi_model.control import TrainingControl  # noqa: E402
from navi_model.corpus.load import load_corpus  # noqa: E402
from navi_tui.app import NaviApp  # noqa: E402
from navi_tui.bench import PHASES, phase_windows  # noqa: E402
from navi_tui.report import ProgressPrinter  # noqa: E402
from navi_tui.training_run import train_run  # noqa: E402
from store import Store  # noqa: E402

def phase_throughput(home: Path, run_id: int, median: bool = False) -> dict[str, float]:
    """Per phase: tokens over time of every logged window after the first, from the store
    (navi_tui.bench.phase_windows); or, with median, the median window's tokens/s (a window that
    holds a gallery sample or a checkpoint write is slower whoever runs it, and weighs on the mean)."""
    with Store(home) as store:
        if not median:
            return {p: v["tokens_per_s"] for p, v in phase_windows(store, run_id).items()}
        rows = store.metrics(run_id)
    out = {}
    for phase in PHASES:
        tps = [r["value"] for r in rows if r["phase"] == phase and r["name"] == "tokens_per_s"][1:]
        if tps:
            out[phase] = statistics.median(tps)
    return out


def run_headless(corpus, profile, device, steps, home) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        outcome = train_run(corpus, profile, home=home, device=device, steps=steps,
                            progress=ProgressPrinter({}, out=null), out=null)
    return outcome.run_id, time.perf_counter() - t0


async def run_console(profile, device, steps, home, probe_keys: int = 0) -> tuple[int, float, list, list]:
    app = NaviApp(home, profile=profile.name, device=device, steps=steps, train_on_start=True)
    acted, trainer = [], []
    t0 = time.perf_counter()
    ui0 = time.thread_time()  # the ui's event loop runs on this thread: its cpu time is what the console costs
    async with app.run_test(size=(140, 45)) as pilot:
        while app.session is None or app.session.run_id is None or app.view.latest.step < 1:
            await pilot.pause(0.05)
        for _ in range(probe_keys):
            control = app.session.control
            await pilot.pause(0.5)
            if not app.session.alive:
                break
            pressed = time.perf_counter()
            await pilot.press("p")
            while control.paused_at is None:
                await asyncio.sleep(0.001)
            acted.append(control.paused_at - pressed)
            while control.blocked_at is None and app.session.alive:
                await asyncio.sleep(0.001)
            if control.blocked_at is not None:
                trainer.append(control.blocked_at - pressed)
            await pilot.press("p")
            control.paused_at = control.blocked_at = None
        while app.session.alive:
            # plain sleeps: the pilot's own pause() waits for the app to go idle, work a terminal never does
            await asyncio.sleep(0.5)
        await pilot.pause(0.2)
        run_id = app.session.run_id
    run_console.ui_cpu_seconds = time.thread_time() - ui0
    return run_id, time.perf_counter() - t0, acted, trainer


class TimedControl(TrainingControl):
    """Records when a pause was asked for and when the loop first blocked on it."""

    def __init__(self):
        super().__init__()
        self.paused_at = self.blocked_at = None

    def pause(self) -> None:
        self.paused_at = time.perf_counter()
        super().pause()

    def checkpoint_between_steps(self) -> bool:
        if self.paused and self.blocked_at is None:
            self.blocked_at = time.perf_counter()
        return super().checkpoint_between_steps()


def child(args) -> dict:
    """One run in this process: headless, console, or console with the key probe."""
    profile, device = get_profile(args.profile), torch.device(args.device)
    training_session.TrainingControl = TimedControl
    home = Path(tempfile.mkdtemp(prefix="navi-bench-")) / "home"
    if args.child == "headless":
        run_id, seconds = run_headless(load_corpus(corpus_dir()), profile, device, args.steps, home)
        acted, trainer = [], []
    else:
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        run_id, seconds, acted, trainer = asyncio.run(
            run_console(profile, device, args.steps, home, probe_keys=10 if args.child == "keys" else 0))
    ui = getattr(run_console, "ui_cpu_seconds", None)
    return {"seconds": seconds, "tokens_per_s": phase_throughput(home, run_id), "acted": acted, "trainer": trainer,
            "median_window": phase_throughput(home, run_id, median=True), "ui_cpu_seconds": ui}


def run_child(args, kind: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--profile", args.profile, "--device", args.device,
           "--steps", str(args.steps), "--switch-interval", str(args.switch_interval)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _spread(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": 1000 * statistics.median(values), "max": 1000 * max(values), "n": len(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="set sys.setswitchinterval in the console runs (an experiment; 0 keeps python's 5 ms)")
    ap.add_argument("--no-keys", action="store_true", help="skip the key-latency run")
    ap.add_argument("--child", choices=("headless", "console", "keys"), default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0

    profile, device = get_profile(args.profile), torch.device(args.device)
    results = {"headless": [], "console": []}
    for rep in range(args.reps):
        order = ("headless", "console") if rep % 2 == 0 else ("console", "headless")
        for kind in order:
            r = run_child(args, kind)
            results[kind].append({"seconds": r["seconds"], "tokens_per_s": r["tokens_per_s"],
                                  "median_window": r["median_window"], "ui_cpu_seconds": r["ui_cpu_seconds"]})
            ui = f"  ui thread {100 * r['ui_cpu_seconds'] / r['seconds']:.1f}% of a core" if r["ui_cpu_seconds"] else ""
            print(f"{kind:<8} rep {rep}: {r['seconds']:6.1f}s  " +
                  "  ".join(f"{p} {v / 1000:.1f}k tok/s" for p, v in r["tokens_per_s"].items()) + ui, flush=True)

    keys = run_child(args, "keys") if not args.no_keys else {"acted": [], "trainer": []}
    if args.reps == 0:
        # keys only
        print(json.dumps({"key_acted_ms": _spread(keys["acted"]), "key_to_trainer_blocked_ms": _spread(keys["trainer"]),
                          "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                          "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}, indent=2))
        return 0
    acted, trainer = keys["acted"], keys["trainer"]

    def median(kind: str, phase: str, key: str = "tokens_per_s") -> float:
        return statistics.median(r[key][phase] for r in results[kind])

    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "profile": profile.name, "steps": args.steps, "reps": args.reps,
        "ratio_console_over_headless": {p: median("console", p) / median("headless", p) for p in PHASES
                                        if all(p in r["tokens_per_s"] for k in results for r in results[k])},
        "ratio_median_window": {p: median("console", p, "median_window") / median("headless", p, "median_window")
                                for p in PHASES},
        "headless_tokens_per_s": {p: median("headless", p) for p in PHASES},
        "console_tokens_per_s": {p: median("console", p) for p in PHASES},
        "ui_thread_share_of_one_core": statistics.median(r["ui_cpu_seconds"] / r["seconds"] for r in results["console"]),
        "switch_interval": args.switch_interval or sys.getswitchinterval(),
        "key_acted_ms": _spread(acted),
        "key_to_trainer_blocked_ms": _spread(trainer),
        "runs": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
