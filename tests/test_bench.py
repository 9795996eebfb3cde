"""navi-tui --no-ui bench: its CI-sized form on the CPU, its arithmetic, and every target failing.

    python -m pytest -q -m slow tests/test_bench.py

The figures themselves (time to green, MFU, GPU utilisation) come from the device machine and
live in docs/benchmarks.md; here the bench runs in seconds and its verdict is checked against
the targets it printed, and each target is shown to fail on a planted value.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from navi_model.config import EncoderConfig, get_profile
from navi_model.model import PolicyModel
from navi_model.speed import _attention_flops, mfu, peak_flops, policy_step_flops, talker_step_flops
from navi_model.talker import TalkerModel
from navi_tui.bench import judge_targets, short_run_profile, timed_windows

# a long harness: the slow tier (python -m pytest -q -m slow; .ci/run runs it after the everyday tier)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "navi_tui", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_bench_json_on_the_cpu_in_ci_form():
    done = run("--no-ui", "--profile", "tiny", "--device", "cpu", "bench", "--json", "--steps", 8, "--reps", 1,
               "--parts", "reference,store")
    assert done.returncode in (0, 1), done.stderr[-2000:]
    doc = json.loads(done.stdout)
    assert doc["profile"] == "tiny" and doc["peak_flops"] is None
    for phase in ("policy", "planner", "sft"):
        p = doc["phases"][phase]
        assert p["reference_tokens_per_s"] > 0 and p["reference_step_ms"] > 0
        assert p["flops_per_step"] > 0 and p["reference_mfu"] is None  # no peak for a CPU
        assert doc["store_writer"]["ratio"][phase] > 0
    # the talker's frozen encoder is cached by navi's step, not by the minimal loop
    assert doc["phases"]["sft"]["flops_per_step"] < doc["phases"]["sft"]["reference_flops_per_step"]
    targets = {t["name"]: t for t in doc["targets"]}
    assert targets["gpu_util"]["summary"] == "n/a: not on a GPU"
    assert targets["mfu"]["value"] is None and targets["time_to_green"]["value"] is None
    assert targets["store_cost"]["value"] is not None
    # the exit code is the verdict of the targets it printed
    assert done.returncode == (0 if all(t["passed"] for t in doc["targets"]) else 1)


def test_bench_console_child_times_every_phase_through_the_app():
    done = subprocess.run([sys.executable, "-m", "navi_tui.bench", "--child", "console", "--profile", "tiny",
                           "--device", "cpu", "--steps", "8"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(r["tokens_per_s"]) == {"policy", "planner", "sft"}
    assert all(v > 0 for v in r["tokens_per_s"].values())
    assert r["ui_cpu_seconds"] > 0


@pytest.mark.parametrize("args, message", [
    (("--steps", 3), "--steps must be at least 4"),
    (("--reps", 0), "--reps must be at least 1"),
    (("--parts", "green,speed"), "unknown part 'speed'"),
])
def test_bench_refuses_bad_usage(args, message):
    done = run("--no-ui", "--device", "cpu", "bench", *args, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_timed_windows_skip_the_first_and_weigh_by_time():
    # (step, tokens/s, ms/step, wall time): the first window holds a 10 s compile
    windows = [(50, 10.0, 200.0, 100.0), (100, 1000.0, 10.0, 100.5), (200, 2000.0, 5.0, 101.0)]
    t = timed_windows(windows)
    # 50 steps of 10 ms (0.5 s at 1000/s) and 100 steps of 5 ms (0.5 s at 2000/s)
    assert t["steps"] == 150 and t["seconds"] == pytest.approx(1.0)
    assert t["tokens_per_s"] == pytest.approx(1500.0)
    assert t["step_ms"] == pytest.approx(1000.0 / 150)
    assert (t["t0"], t["t1"]) == (100.0, 101.0)
    assert timed_windows(windows[:1]) is None


@pytest.mark.parametrize("members", [1, 3])
def test_flops_match_torch_flop_counter_for_the_matrices(members):
    # torch's counter sees every matmul of forward and backward (not the CPU's attention kernel)
    model = PolicyModel(EncoderConfig(seq_len=16, d_model=32, n_layers=2, n_heads=4), 7, members)
    ids, valid = torch.randint(1, 256, (4, 16)), torch.ones(4, 16, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter:
        model(ids, valid, per_member=True).sum().backward()
    f = policy_step_flops(model, 4, 16)
    attention = 3 * members * _attention_flops(model.encoder.blocks, 4, 16)
    assert f.total - attention == counter.get_total_flops()


def test_a_frozen_or_cached_encoder_is_counted_as_it_runs():
    profile = get_profile("tiny")
    talker = TalkerModel(profile.talker)
    trained = talker_step_flops(talker, 8, encoder_cached=False)
    talker.freeze_encoders()  # every encoder it reads, one per policy member
    frozen = talker_step_flops(talker, 8, encoder_cached=False)
    cached = talker_step_flops(talker, 8, encoder_cached=True)
    assert trained.frozen_forward == 0 and frozen.frozen_forward > 0 and cached.frozen_forward == 0
    assert cached.total < frozen.total < trained.total


def test_mfu_needs_a_known_peak():
    assert peak_flops(CPU) == ("cpu", None)
    assert mfu(10**12, 1.0, None) is None
    assert mfu(int(989e12 * 0.3), 1.0, 989e12) == pytest.approx(0.3)


def test_short_run_profile_logs_enough_windows_and_changes_nothing_else():
    base = get_profile("base")
    short = short_run_profile(base, 8)
    assert short.policy_train.log_every == 2 and short.talker_train.log_every == 2
    assert short.policy_train.batch_size == base.policy_train.batch_size and short.policy == base.policy
    assert short_run_profile(base, 300).policy_train.log_every == base.policy_train.log_every


def summary(**over):
    phases = {p: {"ratio": 1.05} for p in ("policy", "planner", "sft")}
    s = {"phases": phases, "time_to_green": {"seconds": 50.0, "ok": True, "failed": []}, "gpu_util": 95.0,
         "mfu": 0.35, "peak_flops": 989e12, "store_writer": {"cost": 0.0}, "console": {"cost": 0.01}}
    s.update(over)
    return s


def verdict(s, device="cuda"):
    return {t["name"]: t["passed"] for t in judge_targets(s, get_profile("base"), torch.device(device))}


def test_targets_pass_on_good_figures():
    assert all(verdict(summary()).values())


@pytest.mark.parametrize("planted, failing", [
    ({"phases": {"policy": {"ratio": 0.97}, "planner": {"ratio": 1.0}, "sft": {"ratio": 1.2}}}, "reference_ratio_policy"),
    ({"gpu_util": 85.0}, "gpu_util"),
    ({"mfu": 0.2}, "mfu"),
    ({"store_writer": {"cost": 0.03}}, "store_cost"),
    ({"console": {"cost": 0.025}}, "console_cost"),
    ({"time_to_green": {"seconds": 61.0, "ok": True, "failed": []}}, "time_to_green"),
    ({"time_to_green": {"seconds": 30.0, "ok": False, "failed": ["plan_bench"]}}, "time_to_green"),
])
def test_each_target_fails_on_its_planted_fault(planted, failing):
    v = verdict(summary(**planted))
    assert [name for name, ok in v.items() if not ok] == [failing]


def test_targets_without_a_measurement_say_why():
    rows = judge_targets(summary(gpu_util=None, mfu=None, peak_flops=None, console=None), get_profile("tiny"), CPU)
    by = {t["name"]: t for t in rows}
    assert by["gpu_util"]["summary"] == "n/a: not on a GPU" and by["gpu_util"]["passed"]
    assert "no dense bf16 peak" in by["mfu"]["summary"]
    assert by["console_cost"]["summary"] == "n/a: not run"


def test_time_to_green_times_each_phase_of_a_real_run(tmp_path):
    # a whole run, shortened by its coverage budget: it fails coverage, and says so
    from dataclasses import replace

    from navi_model.assets import corpus_dir
    from navi_model.corpus.load import load_corpus
    from navi_tui.bench import UtilisationLog, time_to_green

    p = get_profile("tiny")
    p = replace(p, policy_train=replace(p.policy_train, passes_per_goal=0.25, log_every=2),
                planner_train=replace(p.planner_train, passes_per_goal=0.06, log_every=2),
                talker_train=replace(p.talker_train, passes_per_goal=0.3, log_every=2, da_steps=2, sample_every=0))
    out = tmp_path / "out.txt"
    with UtilisationLog(CPU) as util, out.open("w") as f:
        g = time_to_green(load_corpus(corpus_dir()), p, CPU, tmp_path / "home", util, f)
    assert not g["ok"] and "coverage_policy" in g["failed"]
    assert g["gates"] == 24 and g["gates_passed"] < 24
    assert set(g["phases"]) == {"policy", "planner", "sft"}
    for phase in g["phases"].values():
        assert phase["tokens_per_s"] > 0 and phase["steps"] > 0 and phase["gpu_util"] is None
    assert "time to green" in out.read_text() and "FAIL" in out.read_text()
