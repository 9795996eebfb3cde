"""What the headless mode prints: progress lines, the gate table, the run list, JSON documents."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import TextIO

from navi_model.events import Event, LogLine, MetricsLogged
from navi_model.gates import GateVerdict, all_passed


class ProgressPrinter:
    """Prints a line per logged metrics window: phase, step, loss, accuracy, speed and the phase's ETA."""

    def __init__(self, totals: dict[str, int], out: TextIO | None = None):
        self.totals, self.out = totals, out  # phase -> planned steps

    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricsLogged) and "loss" in event.values:
            v = event.values
            total = self.totals.get(event.phase)
            of = f"/{total}" if total else ""
            eta = f"  ETA {(total - event.step) * v.get('step_ms', 0.0) / 1000.0:.0f}s" if total and "step_ms" in v else ""
            # the policy's intents, the planner's whole plans (greedy, on the batch), an older run's
            # teacher-forced planner tokens
            acc = next((v[k] for k in ("train_acc", "plan_acc", "tf_acc") if k in v), None)
            acc = f"  acc {acc:.3f}" if acc is not None else ""
            speed = f"  {v['tokens_per_s'] / 1000:.1f}k tok/s" if "tokens_per_s" in v else ""
            print(f"{event.phase:<7} step {event.step:>6}{of}  loss {v['loss']:.4f}{acc}{speed}{eta}",
                  file=self.out or sys.stdout, flush=True)
        elif isinstance(event, LogLine):
            print(f"[{event.level}] {event.message}", file=self.out or sys.stdout, flush=True)


def _fmt_value(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v) or v != int(v):
        return f"{v:.4g}"
    return f"{int(v)}"


def print_gate_table(gates: list[GateVerdict], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    width = max([len(g.name) for g in gates] + [4])
    print(f"{'gate':<{width}}  {'value':>8}  {'threshold':<10}  {'result':<6}  detail", file=out)
    for g in gates:
        print(f"{g.name:<{width}}  {_fmt_value(g.value):>8}  {g.threshold_text:<10}  "
              f"{'PASS' if g.passed else 'FAIL':<6}  {g.summary}", file=out)
    n_pass = sum(g.passed for g in gates)
    verdict = "PASS" if all_passed(gates) else "FAIL"
    print(f"verdict: {verdict} ({n_pass}/{len(gates)} gates passed)", file=out, flush=True)


def gates_document(run_id: int, checkpoint_ids: dict[str, int], gates: list[GateVerdict],
                   items: dict[str, list[dict]] | None = None) -> str:
    return json.dumps({
        "run_id": run_id,
        "checkpoint_ids": checkpoint_ids,
        "ok": all_passed(gates),
        "gates": [{"name": g.name, "value": g.value, "threshold": g.threshold_text, "passed": g.passed,
                   "summary": g.summary} for g in gates],
        "items": items or {},
    }, indent=2)


def print_items(label: str, rows: list[dict], out: TextIO | None = None) -> None:
    """Per-item results of one bench: what was asked, what came out, and whether it was right."""
    out = out or sys.stdout
    print(f"\n{label}:", file=out)
    for r in rows:
        if "reference" in r:  # gallery
            mem = f" [memory: {r['memory'][-1]['prompt']!r}]" if r.get("memory") else ""
            print(f"  {'ok  ' if r['exact'] else 'MISS'} {r['score']:.2f}  {r['prompt']!r}{mem} -> {r['output']!r}"
                  + ("" if r["exact"] else f"  (want {r['reference']!r})"), file=out)
        elif isinstance(r["expected"], list):  # plan
            print(f"  {'ok  ' if r['correct'] else 'MISS'} {r['goal']!r} -> {' '.join(r['predicted'])}"
                  + ("" if r["correct"] else f"  (want {' '.join(r['expected'])})"), file=out)
        else:
            print(f"  {'ok  ' if r['correct'] else 'MISS'} {r['goal']!r} -> {r['predicted']}"
                  + ("" if r["correct"] else f"  (want {r['expected']})"), file=out)


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def print_runs(runs: list[dict], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if not runs:
        print("no runs yet", file=out)
        return
    print(f"{'id':>4}  {'created':<19}  {'status':<9}  {'verdict':<7}  {'profile':<8}  message", file=out)
    for r in runs:
        print(f"{r['id']:>4}  {_when(r['created']):<19}  {r['status']:<9}  {r['verdict'] or '-':<7}  "
              f"{r['profile'] or '-':<8}  {r['message'] or ''}", file=out)


def runs_document(runs: list[dict]) -> str:
    keys = ("id", "status", "verdict", "profile", "command", "created", "finished", "message", "resumed_from")
    return json.dumps({"runs": [{k: r.get(k) for k in keys} for r in runs]}, indent=2)
