"""Snapshots of the console's screens, drawn from a fixed store (pytest-textual-snapshot).

    python -m pytest -q tests/test_console_snapshots.py            # compare
    python -m pytest -q tests/test_console_snapshots.py --snapshot-update   # after a deliberate change

The store is written here with fixed times and values, the system pane reads fixed figures,
and the clock's zone is UTC, so the screen is the same on every machine.
"""

from __future__ import annotations

import math
import time

import pytest

from store import Store

from test_console import FixedStats, make_app

T0 = 1_764_000_000.0  # a fixed instant: the screen shows times


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fixed_home(tmp_path):
    home = tmp_path / "home"
    config = {"steps": {"policy": 100, "planner": 100, "talker": 100}, "steps_from": "--steps", "device": "cpu",
              "profile": {"talker_train": {"da_steps": 20}}, "data": ""}
    with Store(home) as s:
        rid = s.create_run(profile="tiny", command="train", config=config)
        rows = []
        for phase, n, start, scale in (("policy", 100, 2.8, 30), ("planner", 100, 3.2, 25), ("sft", 100, 4.5, 35),
                                       ("da", 20, 0.6, 50)):
            first = 100 if phase == "da" else 0
            for step in range(first + 5, first + n + 1, 5):
                loss = start * math.exp(-(step - first) / scale) + 0.05
                rows.append({"run_id": rid, "step": step, "phase": phase, "name": "loss", "value": loss, "time": T0})
            rows.append({"run_id": rid, "step": first + n, "phase": phase, "name": "tokens_per_s", "value": 52000.0,
                         "time": T0})
        for step, sim in ((25, 0.41), (50, 0.33), (75, 0.29), (100, 0.27)):
            rows.append({"run_id": rid, "step": step, "phase": "sft", "name": "concept_sim", "value": sim, "time": T0})
        for cls, w, share in (("STEP", 0.128, 0.391), ("EOS", 0.229, 0.219), ("build", 2.3, 0.022)):
            rows += [{"run_id": rid, "step": 0, "phase": "planner", "name": f"weight/{cls}", "value": w, "time": T0},
                     {"run_id": rid, "step": 0, "phase": "planner", "name": f"share/{cls}", "value": share, "time": T0},
                     {"run_id": rid, "step": 0, "phase": "planner", "name": f"weighted_share/{cls}", "value": 0.05,
                      "time": T0}]
        s.insert_metrics(rows)
        s.insert_events([{"run_id": rid, "level": lvl, "kind": kind, "message": msg, "time": T0 + i}
                         for i, (lvl, kind, msg) in enumerate([
                             ("info", "phase", "policy: 100 steps over 2640 unique goals, batch 64"),
                             ("info", "checkpoint", "checkpoint 1: policy_000100 (3f2a9c1e77d0)"),
                             ("info", "sample", "step 50: 'hello' -> 'hi there'"),
                             ("warn", "rollback", "DA regressed the gallery; rolled back to talker_sft_000100"),
                             ("error", "gpu_util", "GPU utilisation averaged 7% over the last 60 samples")])])
        gates = [("policy_bench", 64.0, ">= 1", True, "64/64"), ("plan_bench", 19.0, ">= 1", False, "19/21"),
                 ("concept_sim", 0.27, "<= 0.9", True, "0.27"), ("gpu_util", None, ">= 80", True, "no GPU")]
        s.add_evals(rid, None, [{"gate": g, "value": v, "threshold": th, "passed": ok, "detail": {"summary": sm}}
                                for g, v, th, ok, sm in gates])
        s.add_gallery(rid, None, [
            {"prompt": "hello", "output": "hi there", "reference": "hi there", "score": 1.0, "exact": True},
            {"prompt": "what can you do?", "output": "i can plan", "reference": "i can plan things", "score": 0.7,
             "exact": False}])
        s.finish_run(rid, status="completed", verdict="fail", message="22/23 gates passed in 60s")
        s.db.execute("UPDATE runs SET created = ?, finished = ?", [T0, T0 + 60])
        s.db.conn.commit()
    return home


def test_main_screen(snap_compare, tmp_path, utc):
    app = make_app(fixed_home(tmp_path), system_stats=FixedStats())
    assert snap_compare(app, terminal_size=(140, 45))


def test_help_screen(snap_compare, tmp_path, utc):
    app = make_app(fixed_home(tmp_path), system_stats=FixedStats())
    assert snap_compare(app, terminal_size=(140, 45), press=["question_mark"])
