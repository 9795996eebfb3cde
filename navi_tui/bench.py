"""navi-tui --no-ui bench: how fast navi trains on this device, against what the hardware allows.

In one process on one device, for the chosen profile:
- time to green: a whole `train` run (store writer, events, gates, GPU monitor, as headless),
  wall seconds from its start until its verdict; each phase's tokens/s and step time come from
  that run's own metric windows (the first window of a phase, which holds the compile and the
  graph capture, is left out);
- the reference: the same model, batch, dtype and compile setting in the minimal loop
  (navi_model.speed.reference_loop), and navi's tokens/s over the reference's per phase;
- MFU: model FLOPs per second (navi_model.speed) over the GPU's dense bf16 peak;
- GPU utilisation from NVML, sampled every 0.2 s, over each phase's timed windows;
- the store writer's cost: each trainer run for the same steps with its events stored and
  with them dropped, alternating;
- the console's cost: the same short run headless and in the console (NaviApp through Textual's
  run_test), each in a process of its own, alternating (in one process, a headless run on the
  main thread slowed later console runs on the CPU by 25-35%, which no user meets).
Every figure is checked against the profile's bench targets; the exit code is their verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import torch

from navi_model.config import Profile
from navi_model.corpus.load import Corpus
from navi_model.events import MetricsLogged
from navi_model.speed import mfu, peak_flops, reference_loop, speed_cases

from store import Store

PHASES = ("policy", "planner", "sft")


# --- GPU utilisation over a window

class UtilisationLog:
    """NVML utilisation.gpu (% of the whole GPU) with a timestamp, every `interval` seconds."""

    def __init__(self, device: torch.device, interval: float = 0.2):
        self.samples: list[tuple[float, float]] = []
        self._sample = None
        if device.type == "cuda":
            from navi_tui.system_monitor import nvml_sampler

            self._sample = nvml_sampler(device.index or 0)
        self._done = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="navi-bench-nvml", daemon=True)

    def __enter__(self) -> "UtilisationLog":
        if self._sample:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._sample:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            self.samples.append((time.time(), self._sample()))

    def mean(self, t0: float, t1: float) -> float | None:
        values = [u for t, u in self.samples if t0 <= t <= t1]
        return sum(values) / len(values) if values else None


# --- a run's phases, from its metric windows

def timed_windows(windows: list[tuple[int, float, float, float]]) -> dict | None:
    """windows: (step at its end, tokens_per_s, step_ms, wall time) of one phase, in order.

    The first window holds the compile and the graph capture, so the figures come from the
    windows after it: tokens over time (each window weighted by its duration), step time,
    steps, and when the timed stretch began and ended (for the NVML samples)."""
    if len(windows) < 2:
        return None
    timed = windows[1:]
    n_steps = [b[0] - a[0] for a, b in zip(windows, timed)]
    seconds = [n * w[2] / 1000.0 for n, w in zip(n_steps, timed)]
    total_s = sum(seconds)
    return {"tokens_per_s": sum(s * w[1] for s, w in zip(seconds, timed)) / total_s,
            "step_ms": 1000.0 * total_s / sum(n_steps), "steps": sum(n_steps), "seconds": total_s,
            "t0": windows[0][3], "t1": timed[-1][3]}


def phase_windows(store: Store, run_id: int) -> dict[str, dict]:
    """timed_windows of each phase of a stored run, from its metric rows."""
    by_phase: dict[str, dict[int, dict]] = {p: {} for p in PHASES}
    for r in store.metrics(run_id):
        if r["phase"] in by_phase and r["name"] in ("tokens_per_s", "step_ms"):
            by_phase[r["phase"]].setdefault(r["step"], {})[r["name"]] = r
    out = {}
    for phase, steps in by_phase.items():
        windows = [(s, w["tokens_per_s"]["value"], w["step_ms"]["value"], w["tokens_per_s"]["time"])
                   for s, w in sorted(steps.items()) if len(w) == 2]
        timed = timed_windows(windows)
        if timed:
            out[phase] = timed
    return out


def short_run_profile(profile: Profile, steps: int) -> Profile:
    """The profile for the bench's short runs: each trainer logs at least four windows in `steps`
    steps (a window is what gets timed, and the first holds the compile); nothing else changes."""
    def scaled(cfg):
        return replace(cfg, log_every=min(cfg.log_every, max(1, steps // 4)))
    return replace(profile, policy_train=scaled(profile.policy_train), planner_train=scaled(profile.planner_train),
                   talker_train=scaled(profile.talker_train))


# --- the parts of the bench

def time_to_green(corpus: Corpus, profile: Profile, device: torch.device, home: Path, util: UtilisationLog,
                  out: TextIO) -> dict:
    """A whole train run, as `navi-tui --no-ui train` runs it."""
    from navi_tui.training_run import train_run

    t0, wall0 = time.perf_counter(), time.time()
    with open(os.devnull, "w") as null:
        outcome = train_run(corpus, profile, home=home, device=device, out=null)
    seconds = time.perf_counter() - t0
    with Store(home) as store:
        phases = phase_windows(store, outcome.run_id)
        run = store.get_run(outcome.run_id)
        # where the seconds went: the run's log, as offsets from the start of train (the preflight
        # runs before the run's row exists)
        timeline = [[round(run["created"] - wall0, 2), "created", f"run {outcome.run_id}"]]
        timeline += [[round(e["time"] - wall0, 2), e["kind"], e["message"][:160]] for e in store.events(outcome.run_id)]
    for p in phases.values():
        p["gpu_util"] = util.mean(p["t0"], p["t1"])
    failed = [g.name for g in outcome.gates if not g.passed]
    print(f"time to green: {seconds:.1f}s, {'PASS' if outcome.ok else 'FAIL'} "
          f"({sum(g.passed for g in outcome.gates)}/{len(outcome.gates)} gates)"
          + (f", failed: {', '.join(failed)}" if failed else ""), file=out, flush=True)
    return {"seconds": seconds, "ok": outcome.ok, "run_id": outcome.run_id, "status": run["status"],
            "gates_passed": sum(g.passed for g in outcome.gates), "gates": len(outcome.gates), "failed": failed,
            "failed_detail": [{"name": g.name, "value": g.value, "summary": g.summary}
                              for g in outcome.gates if not g.passed],
            "steps": outcome.steps, "phases": phases, "timeline": timeline}


def reference(corpus: Corpus, profile: Profile, device: torch.device, steps: int, util: UtilisationLog,
              out: TextIO) -> dict:
    from navi_model.brain import build_brain_data, to_device

    data = build_brain_data(corpus, profile)
    data = replace(data, policy=to_device(data.policy, device), plan=to_device(data.plan, device),
                   talk=to_device(data.talk, device))
    compile_on = {"policy": profile.policy_train.compile, "planner": profile.planner_train.compile,
                  "sft": profile.talker_train.compile}
    res = {}
    for case in speed_cases(profile, data, device):
        t0 = time.time()
        r = reference_loop(case.model, case.forward_loss, lr=case.lr, device=device, steps=steps,
                           compile=compile_on[case.phase])
        r["gpu_util"] = util.mean(t0 + r["first_step_s"], time.time())
        r["tokens_per_s"] = case.tokens_per_step / (r["step_ms"] / 1000.0)
        r["flops_per_step"] = case.reference_flops.total
        r["navi_flops_per_step"] = case.navi_flops.total
        res[case.phase] = r
        print(f"reference {case.phase:<7} {r['step_ms']:8.2f} ms/step  {r['tokens_per_s'] / 1000:9.1f}k tok/s",
              file=out, flush=True)
    return res


def store_writer_cost(corpus: Corpus, profile: Profile, device: torch.device, steps: int, reps: int,
                      out: TextIO) -> dict:
    """Each trainer for `steps` steps with its events stored (the run recorder and store writer of
    a real run) and with them dropped; tokens/s of the windows after the first, medians of reps."""
    from navi_model.brain import build_brain_data, to_device
    from navi_model.model import PolicyModel
    from navi_model.planner import PlannerModel, train_planner
    from navi_model.talker import TalkerModel, train_talker
    from navi_model.train import train_policy
    from navi_tui.recorder import RunRecorder
    from store import StoreWriter

    profile = short_run_profile(profile, steps)
    cpu = build_brain_data(corpus, profile)
    gallery = corpus.benches["gallery"].items[:4]
    talker_cfg = replace(profile.talker_train, da_steps=0, sample_every=0)
    results: dict[str, dict[str, list[float]]] = {p: {"stored": [], "dropped": []} for p in PHASES}

    def run_phase(phase: str, emit) -> None:
        torch.manual_seed(0)
        if phase == "policy":
            train_policy(PolicyModel(profile.policy, len(corpus.intents), profile.policy_members), to_device(cpu.policy, device),
                         profile.policy_train, steps=steps, device=device, emit=emit)
        elif phase == "planner":
            train_planner(PlannerModel(profile.planner, cpu.vocab.size), to_device(cpu.plan, device),
                          profile.planner_train, steps=steps, device=device, emit=emit, vocab=cpu.vocab)
        else:
            train_talker(TalkerModel(profile.talker), to_device(cpu.talk, device), talker_cfg, steps=steps,
                         device=device, emit=emit, gallery=gallery)

    for rep in range(reps):
        for kind in (("stored", "dropped") if rep % 2 == 0 else ("dropped", "stored")):
            home = Path(tempfile.mkdtemp(prefix="navi-bench-store-"))
            with Store(home) as store:
                run_id = store.create_run(profile=profile.name, command="bench", config={"bench": "store"})
                writer = StoreWriter(store.path).start()
                recorder = RunRecorder(store, writer, run_id)
                for phase in PHASES:
                    windows: list[tuple[int, float, float, float]] = []

                    def emit(event, windows=windows, kind=kind, recorder=recorder):
                        if isinstance(event, MetricsLogged) and "tokens_per_s" in event.values:
                            v = event.values
                            windows.append((event.step, v["tokens_per_s"], v["step_ms"], time.time()))
                        if kind == "stored":
                            recorder(event)

                    run_phase(phase, emit)
                    timed = timed_windows(windows)
                    if timed is None:
                        raise ValueError(f"bench: --steps {steps} gives the {phase} trainer fewer than two "
                                         f"log windows to time")
                    results[phase][kind].append(timed["tokens_per_s"])
                writer.close()
                store.finish_run(run_id, status="completed", verdict=None)
    ratios = {p: statistics.median(r["stored"]) / statistics.median(r["dropped"]) for p, r in results.items()}
    cost = max(0.0, 1.0 - min(ratios.values()))
    print("store writer: " + "  ".join(f"{p} {v:.3f}" for p, v in ratios.items()) + f"  (cost {100 * cost:.1f}%)",
          file=out, flush=True)
    return {"ratio": ratios, "cost": cost, "runs": results, "steps": steps, "reps": reps}


def console_cost(profile: Profile, device: torch.device, steps: int, reps: int, out: TextIO) -> dict:
    """The same `--steps` run headless and in the console, each a process of its own, alternating."""
    runs: dict[str, list[dict]] = {"headless": [], "console": []}
    for rep in range(reps):
        for kind in (("headless", "console") if rep % 2 == 0 else ("console", "headless")):
            cmd = [sys.executable, "-m", "navi_tui.bench", "--child", kind, "--profile", profile.name,
                   "--device", device.type, "--steps", str(steps)]
            # the child finds navi as this process does, installed or from a checkout
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                                os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"bench: the {kind} run failed: {done.stderr.strip()[-800:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            runs[kind].append(r)
            print(f"console bench {kind:<8} rep {rep}: " +
                  "  ".join(f"{p} {v / 1000:.1f}k tok/s" for p, v in r["tokens_per_s"].items()), file=out, flush=True)
    common = [p for p in PHASES if all(p in r["tokens_per_s"] for k in runs for r in runs[k])]
    ratios = {p: statistics.median(r["tokens_per_s"][p] for r in runs["console"])
              / statistics.median(r["tokens_per_s"][p] for r in runs["headless"]) for p in common}
    cost = max(0.0, 1.0 - min(ratios.values())) if ratios else None
    ui = [r["ui_cpu_seconds"] / r["seconds"] for r in runs["console"] if r.get("ui_cpu_seconds")]
    return {"ratio": ratios, "cost": cost, "ui_thread_share_of_one_core": statistics.median(ui) if ui else None,
            "runs": runs, "steps": steps, "reps": reps}


# --- one run in a child process (the console's cost)

def run_child(kind: str, profile: Profile, device: torch.device, steps: int) -> dict:
    from navi_model.assets import corpus_dir
    from navi_model.corpus.load import load_corpus

    profile = short_run_profile(profile, steps)
    home = Path(tempfile.mkdtemp(prefix="navi-bench-")) / "home"
    ui_seconds = None
    t0 = time.perf_counter()
    if kind == "headless":
        from navi_tui.training_run import train_run

        with open(os.devnull, "w") as null:
            run_id = train_run(load_corpus(corpus_dir()), profile, home=home, device=device, steps=steps,
                               out=null).run_id
    else:
        run_id, ui_seconds = asyncio.run(_console_run(profile, device, steps, home))
    seconds = time.perf_counter() - t0
    with Store(home) as store:
        phases = phase_windows(store, run_id)
    return {"seconds": seconds, "ui_cpu_seconds": ui_seconds,
            "tokens_per_s": {p: v["tokens_per_s"] for p, v in phases.items()}}


async def _console_run(profile: Profile, device: torch.device, steps: int, home: Path) -> tuple[int, float]:
    from navi_tui.app import NaviApp

    app = NaviApp(home, profile=profile, device=device, steps=steps, train_on_start=True)
    ui0 = time.thread_time()  # the ui's event loop runs on this thread: its cpu time is what the console costs
    async with app.run_test(size=(140, 45)) as pilot:
        while app.session is None or app.session.run_id is None:
            await pilot.pause(0.05)
        while app.session.alive:
            # plain sleeps: the pilot's own pause() waits for the app to go idle, which a training console never is
            await asyncio.sleep(0.5)
        await pilot.pause(0.2)
        run_id = app.session.run_id
    return run_id, time.thread_time() - ui0


# --- the whole bench

PARTS = ("green", "reference", "store", "console")


def run_bench(corpus: Corpus, profile: Profile, device: torch.device, *, steps: int, reps: int,
              parts: tuple[str, ...] = PARTS, out: TextIO) -> dict:
    """parts: which measurements to make; a target whose part did not run shows n/a."""
    name, peak = peak_flops(device)
    started = time.time()
    greened = ref = store = cons = None
    with UtilisationLog(device) as util:
        if "green" in parts:
            greened = time_to_green(corpus, profile, device, Path(tempfile.mkdtemp(prefix="navi-bench-green-")),
                                    util, out)
        if "reference" in parts:
            ref = reference(corpus, profile, device, max(steps, 10), util, out)
        if "store" in parts:
            store = store_writer_cost(corpus, profile, device, steps, reps, out)
    if "console" in parts:
        cons = console_cost(profile, device, steps, reps, out)

    flops = _navi_flops(corpus, profile, device)
    phases = {}
    for phase in PHASES:
        row: dict = {"flops_per_step": flops[phase]}
        r = ref[phase] if ref else None
        if r:
            row.update({"reference_tokens_per_s": r["tokens_per_s"], "reference_step_ms": r["step_ms"],
                        "reference_gpu_util": r["gpu_util"], "reference_flops_per_step": r["flops_per_step"],
                        "reference_mfu": mfu(r["flops_per_step"], r["step_ms"] / 1000, peak)})
        if greened and phase in greened["phases"]:
            g = greened["phases"][phase]
            row.update({"navi_tokens_per_s": g["tokens_per_s"], "navi_step_ms": g["step_ms"], "steps": g["steps"],
                        "seconds": g["seconds"], "gpu_util": g["gpu_util"],
                        "mfu": mfu(flops[phase], g["step_ms"] / 1000, peak)})
            if r:
                row["ratio"] = g["tokens_per_s"] / r["tokens_per_s"]
        phases[phase] = row

    timed = [p for p in phases.values() if "seconds" in p]
    seconds = sum(p["seconds"] for p in timed)
    overall_mfu = (sum(p["flops_per_step"] * p["steps"] for p in timed) / seconds / peak) if timed and peak else None
    utils = [(p["gpu_util"], p["seconds"]) for p in timed if p.get("gpu_util") is not None]
    gpu_util = sum(u * s for u, s in utils) / sum(s for _, s in utils) if utils else None
    summary = {
        "date": time.strftime("%Y-%m-%d", time.localtime(started)), "device": name if device.type == "cuda" else
        f"{platform.machine()} CPU, {os.cpu_count()} cores", "peak_flops": peak, "torch": torch.__version__,
        "profile": profile.name, "steps": steps, "reps": reps,
        "time_to_green": greened, "phases": phases, "gpu_util": gpu_util, "mfu": overall_mfu,
        "store_writer": store, "console": cons,
    }
    summary["targets"] = judge_targets(summary, profile, device)
    return summary


def _navi_flops(corpus: Corpus, profile: Profile, device: torch.device) -> dict[str, int]:
    """FLOPs of navi's own step per phase, counted on models of the profile's shapes (on the CPU:
    counting needs no device)."""
    from navi_model.model import PolicyModel
    from navi_model.planner import PlannerModel
    from navi_model.speed import planner_step_flops, policy_step_flops, talker_step_flops
    from navi_model.talker import TalkerModel

    vocab_size = 6 + sum(1 for i in corpus.intents if i.action)
    talker = TalkerModel(profile.talker)
    if profile.talker_train.freeze_encoder:
        talker.freeze_encoders()
    return {
        "policy": policy_step_flops(PolicyModel(profile.policy, len(corpus.intents), profile.policy_members), profile.policy_train.batch_size,
                                    profile.policy.seq_len).total,
        "planner": planner_step_flops(PlannerModel(profile.planner, vocab_size), profile.planner_train.batch_size,
                                      profile.planner.encoder.seq_len).total,
        "sft": talker_step_flops(talker, profile.talker_train.batch_size,
                                 encoder_cached=profile.talker_train.freeze_encoder).total,
    }


def judge_targets(summary: dict, profile: Profile, device: torch.device) -> list[dict]:
    """Each bench target of the profile: measured value, threshold, passed (n/a passes, and says why)."""
    t = profile.bench
    rows = []

    def target(name: str, value, op: str, threshold: float, na: str | None = None) -> None:
        if value is None:
            rows.append({"name": name, "value": None, "op": op, "threshold": threshold, "passed": True,
                         "summary": f"n/a: {na or 'not measured'}"})
            return
        passed = value >= threshold if op == ">=" else value <= threshold
        rows.append({"name": name, "value": value, "op": op, "threshold": threshold, "passed": passed, "summary": ""})

    phases = summary["phases"]
    green = summary["time_to_green"]
    for phase in PHASES:
        target(f"reference_ratio_{phase}", phases[phase].get("ratio"), ">=", t.min_reference_ratio,
               "needs the green run and the reference")
    on_gpu = device.type == "cuda"
    target("gpu_util", summary["gpu_util"] if on_gpu else None, ">=", t.min_gpu_util,
           "not on a GPU" if not on_gpu else "needs the green run")
    target("mfu", summary["mfu"], ">=", t.min_mfu,
           "no dense bf16 peak known for this device" if summary["peak_flops"] is None else "needs the green run")
    target("store_cost", summary["store_writer"]["cost"] if summary["store_writer"] else None, "<=",
           t.max_store_cost, "not run")
    target("console_cost", summary["console"]["cost"] if summary["console"] else None, "<=", t.max_console_cost,
           "not run")
    if green is not None and not green["ok"]:
        rows.append({"name": "time_to_green", "value": None, "op": "<=", "threshold": t.max_green_seconds,
                     "passed": False, "summary": f"the run did not go green: {', '.join(green['failed'])}"})
    else:
        target("time_to_green", green["seconds"] if green else None, "<=", t.max_green_seconds, "not run")
    return rows


def print_bench(summary: dict, out: TextIO) -> None:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    def num(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    print(f"\nbench: profile {summary['profile']} on {summary['device']}, torch {summary['torch']}", file=out)
    print(f"{'phase':<8} {'navi tok/s':>12} {'ref tok/s':>12} {'ratio':>6} {'ms/step':>8} {'ref ms':>8} "
          f"{'MFU':>6} {'ref MFU':>7} {'GPU util':>8}", file=out)
    for phase, p in summary["phases"].items():
        print(f"{phase:<8} {num(p.get('navi_tokens_per_s'), '{:,.0f}'):>12} "
              f"{num(p.get('reference_tokens_per_s'), '{:,.0f}'):>12} {num(p.get('ratio'), '{:.3f}'):>6} "
              f"{num(p.get('navi_step_ms'), '{:.2f}'):>8} {num(p.get('reference_step_ms'), '{:.2f}'):>8} "
              f"{pct(p.get('mfu')):>6} {pct(p.get('reference_mfu')):>7} {num(p.get('gpu_util'), '{:.1f}%'):>8}",
              file=out)
    for t in summary["targets"]:
        value = t["value"]
        shown = "-" if value is None else (f"{value:.4g}")
        print(f"  {t['name']:<24} {shown:>10} {t['op']} {t['threshold']:<8g} {'PASS' if t['passed'] else 'FAIL'}"
              f"  {t['summary']}", file=out)
    ok = all(t["passed"] for t in summary["targets"])
    print(f"bench verdict: {'PASS' if ok else 'FAIL'} ({sum(t['passed'] for t in summary['targets'])}/"
          f"{len(summary['targets'])} targets)", file=out, flush=True)


def _child_main(argv: list[str]) -> int:
    import argparse

    from navi_model.config import get_profile

    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=("headless", "console"), required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--steps", type=int, required=True)
    a = ap.parse_args(argv)
    print(json.dumps(run_child(a.child, get_profile(a.profile), torch.device(a.device), a.steps)))
    return 0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    raise SystemExit(_child_main(sys.argv[1:]))
