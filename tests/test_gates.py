"""Every gate can fail: each test plants the fault its gate exists for and sees it caught.

    python -m pytest tests/test_gates.py -q
"""

import math

from navi_model.gates import all_passed, bench_gate, coverage_gate, gate, truncation_gate


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


def test_empty_bench_fails():
    g = bench_gate("plan_bench", [], 1.0)
    assert not g.passed and g.value is None


def test_truncation_gate_catches_a_long_goal():
    lengths = {"short": 5, "a goal much longer than the context": 34}
    g = truncation_gate(lengths, seq_len=32, max_truncated=0)
    assert not g.passed
    assert g.value == 1.0
    assert "longest 34 bytes, seq_len 32" in g.summary
    assert truncation_gate(lengths, seq_len=34, max_truncated=0).passed


def test_coverage_gate_catches_an_undertrained_goal():
    assert not coverage_gate(2.0, 9.0, 3.0).passed  # one goal seen only twice
    assert coverage_gate(3.0, 9.0, 3.0).passed


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
