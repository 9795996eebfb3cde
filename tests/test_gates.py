"""Every gate can fail: each test plants the fault its gate exists for and sees it caught.

    python -m pytest tests/test_gates.py -q
"""

import math

from navi_model.config import PROFILES, GateThresholds
from navi_model.gates import (
    all_passed, bench_gate, class_share_gate, concept_sim_gate, coverage_gate, da_regression_gate, gallery_gates, gate,
    memory_prefix_gate, not_run, prefix_use_gate, truncation_gate,
)


def items(n_correct, n_wrong):
    ok = [{"goal": f"g{i}", "expected": "a", "predicted": "a", "correct": True} for i in range(n_correct)]
    bad = [{"goal": f"w{i}", "expected": "check", "predicted": "memory_add", "correct": False} for i in range(n_wrong)]
    return ok + bad


def test_bench_gate_passes_only_when_all_correct():
    assert bench_gate("policy_bench", items(64, 0), 1.0).passed
    g = bench_gate("policy_bench", items(63, 1), 1.0)
    assert not g.passed
    assert g.value == 63 / 64
    assert g.summary.startswith("63/64; first miss: 'w0' -> memory_add (want check)")


def test_tiny_plan_bench_allows_one_miss_of_21_and_no_more():
    # the tiny profile's threshold sits at the floor its healthy seeds reach (20/21), not below it
    th = PROFILES["tiny"].gates.plan_bench
    assert bench_gate("plan_bench", items(20, 1), th).passed
    assert not bench_gate("plan_bench", items(19, 2), th).passed
    assert not bench_gate("plan_bench", items(20, 1), PROFILES["base"].gates.plan_bench).passed


def test_empty_bench_fails():
    g = bench_gate("plan_bench", [], 1.0)
    assert not g.passed and g.value is None


def test_truncation_gate_catches_a_long_goal():
    samples = [("short", 5, 32), ("a goal much longer than the context", 34, 32)]
    g = truncation_gate("truncation_policy", samples, max_truncated=0)
    assert not g.passed
    assert g.value == 1.0
    assert "1 too long, e.g. 'a goal much longer than the context' (34 > 32)" in g.summary
    assert truncation_gate("truncation_policy", [("short", 5, 32), ("long", 34, 34)], 0).passed


def test_coverage_gate_catches_an_undertrained_goal():
    assert not coverage_gate("coverage_policy", 2.0, 9.0, 3.0).passed  # one goal seen only twice
    assert coverage_gate("coverage_policy", 3.0, 9.0, 3.0).passed


def test_class_share_gate_catches_a_dominant_class():
    # M-002: one action at 40% of the planner's targets
    bad = class_share_gate({"share/build": 0.4, "share/test": 0.6 / 5, "share_max": 0.4}, 0.2)
    assert not bad.passed and "build 40.0%" in bad.summary
    assert class_share_gate({"share/build": 0.05, "share/test": 0.05, "share_max": 0.05}, 0.2).passed


def test_memory_prefix_gate_catches_training_without_memory():
    assert not memory_prefix_gate(0.0, 0.1).passed  # M-004: memory never present in SFT
    assert memory_prefix_gate(0.5, 0.1).passed


def test_gallery_gates_catch_one_answer_for_every_prompt():
    # M-007: the same response for every prompt
    refs = ["Starting the build.", "Checking disk usage.", "Hello, sir. What can I do for you?"]
    rows = [{"prompt": f"p{i}", "output": "Starting the build.", "reference": r, "exact": r == "Starting the build.",
             "score": 1.0 if i == 0 else 0.3} for i, r in enumerate(refs)]
    summary = {"gallery_similarity": sum(r["score"] for r in rows) / 3, "gallery_exact": 1 / 3, "gallery_diversity": 1 / 3}
    gates = {g.name: g for g in gallery_gates(summary, rows, GateThresholds())}
    assert not gates["gallery_quality"].passed and not gates["gallery_exact"].passed
    assert not gates["gallery_diversity"].passed
    assert gates["gallery_diversity"].summary == "1 distinct answers for 3 distinct references"


def test_concept_sim_gate_catches_collapsed_concepts():
    assert not concept_sim_gate(0.9591, 0.9).passed  # M-031's number
    assert concept_sim_gate(0.12, 0.9).passed


def test_prefix_use_gate_catches_a_decoder_that_ignores_its_prefix():
    assert not prefix_use_gate(0.154, 0.156, 2.0).passed  # measured on the talker before the fix
    assert prefix_use_gate(0.0185, 0.57, 2.0).passed


def test_da_regression_gate():
    pre = {"gallery_similarity": 0.95}
    assert not da_regression_gate(pre, {"gallery_similarity": 0.6}, False, 0.0).passed  # M-039, kept
    assert da_regression_gate(pre, pre, True, 0.0).passed  # rolled back to the pre-DA model
    assert "no DA phase" in da_regression_gate(pre, pre, False, 0.0).summary
    assert not da_regression_gate(None, None, False, 0.0).passed


def test_a_gate_that_was_not_measured_fails():
    assert not not_run("plan_bench", 1.0, ">=", "stopped").passed


def test_nan_and_missing_values_never_pass():
    assert not gate("x", math.nan, 0.0, ">=", "").passed
    assert not gate("x", None, 0.0, "<=", "").passed


def test_all_passed_needs_at_least_one_gate():
    assert not all_passed([])
    assert not all_passed([gate("a", 1.0, 1.0, ">=", ""), gate("b", 2.0, 1.0, "<=", "")])
    assert all_passed([gate("a", 1.0, 1.0, ">=", "")])


def test_gate_table_prints_nan_and_missing_values(capsys):
    from navi_tui.report import print_gate_table

    print_gate_table([gate("loss_ok", math.nan, 1.0, "<=", "diverged"), gate("bench", None, 1.0, ">=", "empty")])
    out = capsys.readouterr().out
    assert "nan" in out and "FAIL" in out and "verdict: FAIL (0/2 gates passed)" in out


def test_gpu_util_gate():
    from navi_model.gates import gpu_util_gate

    assert gpu_util_gate([0, 0, 95, 93, 91], 80.0, warmup=2).passed
    low = gpu_util_gate([90, 90, 6, 7, 5], 80.0, warmup=2)  # M-015: 5-7% after warm-up
    assert not low.passed and low.value == 6.0
    assert gpu_util_gate(None, 80.0, warmup=2).passed  # not on a GPU: nothing to hold to the rule
    assert not gpu_util_gate([90], 80.0, warmup=2).passed  # nothing measured after warm-up


def test_constant_metric_gate():
    from navi_model.gates import constant_metric_gate

    earlier = [(3, '{"lr": 0.001}', {"concept_sim": 0.95912}), (4, '{"lr": 0.003}', {"concept_sim": 0.9591})]
    hit = constant_metric_gate({"concept_sim": 0.959104}, '{"lr": 0.01}', earlier, "navi-tui --no-ui diagnose --run 5")
    assert not hit.passed and hit.value == 2.0
    assert hit.summary.startswith("concept_sim = 0.9591 here and in run 3, whose config differs")
    assert "diagnose --run 5" in hit.summary
    # the same config repeating its own number is determinism, not an alarm; bounds repeat legitimately
    assert constant_metric_gate({"concept_sim": 0.9591}, '{"lr": 0.001}', earlier[:1], "").passed
    assert constant_metric_gate({"gallery_quality": 1.0}, "a", [(1, "b", {"gallery_quality": 1.0})], "").passed
