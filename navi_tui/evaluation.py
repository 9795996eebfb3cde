"""Evaluate a stored run's checkpoint on benches, and record the result as evals of that run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from navi_model.config import GateThresholds, get_profile
from navi_model.corpus.load import BUNDLED_BENCHES, Bench, Intent, load_bench
from navi_model.evaluate import policy_from_payload, run_intent_bench
from navi_model.gates import GateVerdict, bench_gate
from store import Store, load_checkpoint


class EvalUsageError(ValueError):
    """The request cannot be served as asked (no such run, no checkpoint, a bench it cannot run)."""


@dataclass
class EvalOutcome:
    run_id: int
    checkpoint_id: int
    gates: list[GateVerdict]


def _pick_checkpoint(store: Store, run_id: int | None, checkpoint_id: int | None) -> tuple[dict, dict]:
    if checkpoint_id is not None:
        ckpt = store.get_checkpoint(checkpoint_id)
        if ckpt is None:
            raise EvalUsageError(f"no checkpoint {checkpoint_id} in {store.path}")
        if run_id is not None and ckpt["run_id"] != run_id:
            raise EvalUsageError(f"checkpoint {checkpoint_id} belongs to run {ckpt['run_id']}, not run {run_id}")
        return store.get_run(ckpt["run_id"]), ckpt
    if run_id is not None:
        run = store.get_run(run_id)
        if run is None:
            raise EvalUsageError(f"no run {run_id} in {store.path}")
    else:
        # the newest run that has something to evaluate
        run = next((r for r in store.list_runs() if store.latest_checkpoint(r["id"], "policy")), None)
        if run is None:
            raise EvalUsageError(f"no run with a checkpoint in {store.path}: train one first")
    ckpt = store.latest_checkpoint(run["id"], "policy")
    if ckpt is None:
        raise EvalUsageError(f"run {run['id']} has no checkpoint to evaluate")
    return run, ckpt


def evaluate_run(store: Store, *, run_id: int | None, checkpoint_id: int | None, bench_files: list[Path],
                 device: torch.device) -> EvalOutcome:
    run, ckpt = _pick_checkpoint(store, run_id, checkpoint_id)
    config = json.loads(run["config_json"] or "{}")
    # judge by the thresholds the run was trained under, else by its profile's current ones
    recorded = config.get("profile", {}).get("gates")
    thresholds = GateThresholds(**recorded) if recorded else get_profile(run["profile"]).gates
    # CheckpointError (missing, checksum, unsafe) propagates: the CLI turns it into exit 2
    payload = load_checkpoint(store.checkpoint_path(ckpt), ckpt["sha256"])
    intents = [Intent(i["name"], i["description"], i["meta"], i["action"]) for i in payload["intents"]]
    names = [i.name for i in intents]

    if bench_files:
        benches: list[tuple[str, Bench]] = []
        for path in bench_files:
            bench = load_bench(path, intents)
            benches.append((f"{bench.kind}_bench[{Path(path).name}]", bench))
    else:
        data = Path(config.get("data", ""))
        benches = [(f"{k}_bench", load_bench(data / BUNDLED_BENCHES[k], intents, k)) for k in ("policy", "paraphrase")]

    model = policy_from_payload(payload, device)
    gates = []
    for name, bench in benches:
        if bench.kind not in ("policy", "paraphrase"):
            raise EvalUsageError(f"{bench.path}: a {bench.kind} bench needs the "
                                 f"{'planner' if bench.kind == 'plan' else 'talker'}, which run {run['id']} does not have")
        items = run_intent_bench(model, bench, names, device)
        gates.append(bench_gate(name, items, getattr(thresholds, f"{bench.kind}_bench")))
    store.add_evals(run["id"], ckpt["id"], [
        {"gate": g.name, "value": g.value, "threshold": g.threshold_text, "passed": g.passed,
         "detail": {"summary": g.summary, "items": g.detail, "command": "eval"}} for g in gates])
    return EvalOutcome(run["id"], ckpt["id"], gates)
