"""One training run, from a validated corpus to a stored verdict.

Order matters: the corpus is loaded and validated, and the preflight gates computed, before
the store is opened, so bad input never leaves a half-written store behind.
"""

from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import torch

from navi_model.config import Profile
from navi_model.control import TrainingControl
from navi_model.corpus.load import Corpus
from navi_model.data import build_policy_data
from navi_model.evaluate import run_intent_bench
from navi_model.events import Event, EmitFn
from navi_model.gates import GateVerdict, all_passed, bench_gate, coverage_gate, truncation_gate
from navi_model.model import PolicyModel, count_params
from navi_model.train import steps_for_coverage, train_policy
from navi_model.vocab import text_bytes
from store import StoreWriter

from navi_tui.home import open_store
from navi_tui.recorder import RunRecorder


@dataclass
class TrainOutcome:
    run_id: int
    checkpoint_id: int | None
    gates: list[GateVerdict]
    status: str
    steps: int
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all_passed(self.gates)


def corpus_fingerprint(corpus: Corpus) -> str:
    """sha256 over the corpus files, so a run records exactly which data it saw."""
    h = hashlib.sha256()
    for path in sorted(corpus.root.glob("*.jsonl")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def preflight_gates(corpus: Corpus, profile: Profile) -> list[GateVerdict]:
    """Gates decided before step 0: every goal the policy reads or is judged on must fit seq_len."""
    texts = [g["goal"] for g in corpus.goals]
    for kind in ("policy", "paraphrase"):
        texts += [it["goal"] for it in corpus.benches[kind].items]
    lengths = {t: len(text_bytes(t)) for t in texts}
    return [truncation_gate(lengths, profile.policy.seq_len, profile.gates.max_truncated)]


def planned_steps(corpus: Corpus, profile: Profile, steps: int | None = None) -> int:
    """--steps if given, else enough steps for every unique goal to be seen often enough (M-011)."""
    if steps is not None:
        return steps
    return steps_for_coverage(len({g["goal"] for g in corpus.goals}), profile.policy_train)


def fanout(*sinks: EmitFn) -> EmitFn:
    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)
    return emit


def train_run(
    corpus: Corpus,
    profile: Profile,
    *,
    home: Path,
    device: torch.device,
    steps: int | None = None,
    control: TrainingControl | None = None,
    progress: EmitFn | None = None,
    out: TextIO | None = None,
) -> TrainOutcome:
    out = out or sys.stdout
    intents = corpus.intent_names
    planned = planned_steps(corpus, profile, steps)
    preflight = preflight_gates(corpus, profile)
    config = {
        "profile": profile.to_dict(),
        "data": str(corpus.root),
        "data_sha256": corpus_fingerprint(corpus),
        "device": str(device),
        "steps": planned,
        "steps_from": "--steps" if steps is not None else "coverage",
        "torch": torch.__version__,
    }

    store = open_store(home, create=True)
    try:
        crashed = store.mark_crashed_runs()
        if crashed:
            print(f"marked crashed: run {', '.join(map(str, crashed))} (its process ended without finishing)", file=out)
        run_id = store.create_run(profile=profile.name, command="train", config=config)
        writer = StoreWriter(store.path).start()
        try:
            return _train_and_judge(corpus, profile, store, writer, run_id, intents, planned, preflight,
                                    device, control, progress, out)
        except BaseException as e:
            # the run is over whatever happened; the store says how
            writer.close()
            status = "stopped" if isinstance(e, KeyboardInterrupt) else "failed"
            store.finish_run(run_id, status=status, verdict=None, message=f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            writer.close()
    finally:
        store.close()


def _train_and_judge(corpus, profile, store, writer, run_id, intents, planned, preflight, device,
                     control, progress, out) -> TrainOutcome:
    print(f"run {run_id}: profile {profile.name}, {len(intents)} intents, {len(corpus.goals)} goals, "
          f"{planned} steps on {device}", file=out, flush=True)
    if not all_passed(preflight):
        # a truncated corpus is not worth a single step (M-008)
        store.add_evals(run_id, None, [_eval_row(g) for g in preflight])
        store.finish_run(run_id, status="completed", verdict="fail", message="preflight gate failed; not trained")
        return TrainOutcome(run_id, None, preflight, "completed", 0)

    torch.manual_seed(profile.policy_train.seed)
    data = build_policy_data(corpus.goals, intents, profile.policy.seq_len, device)
    model = PolicyModel(profile.policy, len(intents))
    writer.event(run_id, "info", "model", f"policy: {count_params(model):,} parameters")
    recorder = RunRecorder(store, writer, run_id)
    emit = fanout(recorder, progress) if progress else recorder
    extra = {"intents": [i.__dict__ for i in corpus.intents], "profile": profile.name}
    result = train_policy(model, data, profile.policy_train, steps=planned, device=device, emit=emit,
                          control=control, checkpoint_extra=extra)

    gates = list(preflight)
    gates.append(coverage_gate(result.coverage_min, result.coverage_mean, profile.gates.min_coverage))
    for kind, threshold in (("policy", profile.gates.policy_bench), ("paraphrase", profile.gates.paraphrase_bench)):
        items = run_intent_bench(model, corpus.benches[kind], intents, device)
        gates.append(bench_gate(f"{kind}_bench", items, threshold))
    checkpoint_id = recorder.checkpoint_ids.get("policy")
    store.add_evals(run_id, checkpoint_id, [_eval_row(g) for g in gates])
    writer.metrics(run_id, result.steps, "eval", {g.name: g.value for g in gates if g.value is not None
                                                  and math.isfinite(g.value)})
    status = "stopped" if result.stopped else "completed"
    verdict = "pass" if all_passed(gates) else "fail"
    writer.flush()
    store.finish_run(run_id, status=status, verdict=verdict,
                     message=f"{sum(g.passed for g in gates)}/{len(gates)} gates passed in {result.seconds:.0f}s")
    return TrainOutcome(run_id, checkpoint_id, gates, status, result.steps, result.seconds)


def _eval_row(g: GateVerdict) -> dict:
    return {"gate": g.name, "value": g.value, "threshold": g.threshold_text, "passed": g.passed,
            "detail": {"summary": g.summary, "items": g.detail}}
