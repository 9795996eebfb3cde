"""Evaluate a stored run's checkpoints on benches of any kind, and record the results with the run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from navi_model import gates as G
from navi_model.brain import MODELS
from navi_model.config import GateThresholds, get_profile
from navi_model.corpus.load import BUNDLED_BENCHES, REQUIRED_BENCHES, Intent, load_bench
from navi_model.evaluate import policy_from_payload, run_intent_bench
from navi_model.gates import GateVerdict
from navi_model.planner import planner_from_payload, run_plan_bench
from navi_model.talker import (check_gallery_bench, concept_similarity, gallery_summary, prefix_use, run_gallery,
                                talker_from_payload)
from store import Store

from navi_tui.recorder import eval_row
from navi_tui.stored_checkpoint import load_stored_checkpoint

# which model answers each kind of bench
BENCH_MODEL = {"policy": "policy", "paraphrase": "policy", "plan": "planner", "gallery": "talker"}


class EvalUsageError(ValueError):
    """The request cannot be served as asked (no such run, no checkpoint, a bench it cannot run)."""


@dataclass
class EvalOutcome:
    run_id: int
    checkpoint_ids: dict[str, int]
    gates: list[GateVerdict]
    items: dict[str, list[dict]] = field(default_factory=dict)  # bench label -> per-item results


def _pick(store: Store, run_id: int | None, checkpoint_id: int | None) -> tuple[dict, dict[str, dict]]:
    """-> the run and, per model, the checkpoint to evaluate."""
    if checkpoint_id is not None:
        ckpt = store.get_checkpoint(checkpoint_id)
        if ckpt is None:
            raise EvalUsageError(f"no checkpoint {checkpoint_id} in {store.path}")
        if run_id is not None and ckpt["run_id"] != run_id:
            raise EvalUsageError(f"checkpoint {checkpoint_id} belongs to run {ckpt['run_id']}, not run {run_id}")
        return store.get_run(ckpt["run_id"]), {ckpt["model"]: ckpt}
    if run_id is not None:
        run = store.get_run(run_id)
        if run is None:
            raise EvalUsageError(f"no run {run_id} in {store.path}")
    else:
        # the newest run that has something to evaluate
        run = next((r for r in store.list_runs() if store.checkpoints(r["id"])), None)
        if run is None:
            raise EvalUsageError(f"no run with a checkpoint in {store.path}: train one first")
    ckpts = {m: c for m in MODELS if (c := store.latest_checkpoint(run["id"], m)) is not None}
    if not ckpts:
        raise EvalUsageError(f"run {run['id']} has no checkpoint to evaluate")
    return run, ckpts


def _intents(store: Store, run: dict, payloads: dict[str, dict]) -> list[Intent]:
    """The intent catalog the run was trained with, from its checkpoints (the data folder may have moved)."""
    if "policy" in payloads:
        return [Intent(i["name"], i["description"], i["meta"], i["action"]) for i in payloads["policy"]["intents"]]
    policy = store.latest_checkpoint(run["id"], "policy")
    if policy is not None:
        payload = load_stored_checkpoint(store, policy)
        return [Intent(i["name"], i["description"], i["meta"], i["action"]) for i in payload["intents"]]
    if "planner" in payloads:
        return [Intent(a, "", False, True) for a in payloads["planner"]["actions"]]
    return []


def evaluate_run(store: Store, *, run_id: int | None, checkpoint_id: int | None, bench_files: list[Path],
                 device: torch.device) -> EvalOutcome:
    run, ckpts = _pick(store, run_id, checkpoint_id)
    config = json.loads(run["config_json"] or "{}")
    # judge by the thresholds the run was trained under, else by its profile's current ones
    recorded = config.get("profile", {}).get("gates")
    th = GateThresholds(**recorded) if recorded else get_profile(run["profile"]).gates
    # CheckpointError (missing, checksum, unsafe, not a navi payload) names the checkpoint and
    # propagates before anything runs: the CLI turns it into exit 2
    payloads = {m: load_stored_checkpoint(store, c) for m, c in ckpts.items()}
    intents = _intents(store, run, payloads)

    if bench_files:
        benches = [(f"[{Path(p).name}]", load_bench(p, intents)) for p in bench_files]
    else:
        data = Path(config.get("data", ""))
        # the four required benches; the optional ones (unseen, seen, wild) are not wired to gates yet
        benches = [("", load_bench(data / BUNDLED_BENCHES[k][0], intents, BUNDLED_BENCHES[k][1]))
                   for k in REQUIRED_BENCHES if BENCH_MODEL[BUNDLED_BENCHES[k][1]] in ckpts]
    for _, bench in benches:
        model = BENCH_MODEL[bench.kind]
        if model not in ckpts:
            what = f"checkpoint {checkpoint_id}" if checkpoint_id is not None else f"run {run['id']}"
            raise EvalUsageError(f"{bench.path}: a {bench.kind} bench needs the {model}, which {what} does not have")

    models: dict[str, object] = {}
    gates_by_model: dict[str, list[GateVerdict]] = {}
    items: dict[str, list[dict]] = {}
    gallery_rows: list[dict] = []
    for suffix, bench in benches:
        m = BENCH_MODEL[bench.kind]
        if m not in models:
            models[m] = _load(m, payloads[m], device)
        label = f"{bench.kind}_bench{suffix}" if bench.kind != "gallery" else f"gallery{suffix}"
        if bench.kind in ("policy", "paraphrase"):
            names = [i["name"] for i in payloads["policy"]["intents"]]
            rows = run_intent_bench(models[m], bench, names, device)
            new = [G.bench_gate(label, rows, getattr(th, f"{bench.kind}_bench"))]
        elif bench.kind == "plan":
            planner, vocab = models[m]
            rows = run_plan_bench(planner, bench, vocab, device)
            new = [G.bench_gate(label, rows, th.plan_bench)]
        else:
            talker = models[m]
            check_gallery_bench(talker, bench)  # a text it cannot take whole: exit 2 naming the line
            rows = run_gallery(talker, bench.items, device)
            gallery_rows += rows
            true_loss, shuffled_loss = prefix_use(talker, bench.items, device)
            new = [*G.gallery_gates(gallery_summary(rows), rows, th),
                   G.concept_sim_gate(concept_similarity(talker, [it["prompt"] for it in bench.items], device),
                                      th.max_concept_sim),
                   G.prefix_use_gate(true_loss, shuffled_loss, th.min_prefix_use)]
            new = [GateVerdict(g.name + suffix, g.value, g.threshold, g.op, g.passed, g.summary, g.detail) for g in new]
        items[label] = rows
        gates_by_model.setdefault(m, []).extend(new)

    for m, gates in gates_by_model.items():
        store.add_evals(run["id"], ckpts[m]["id"], [eval_row(g, command="eval") for g in gates])
    if gallery_rows:
        store.add_gallery(run["id"], ckpts["talker"]["id"], gallery_rows)
    return EvalOutcome(run["id"], {m: c["id"] for m, c in ckpts.items()},
                       [g for gates in gates_by_model.values() for g in gates], items)


def _load(model: str, payload: dict, device: torch.device):
    if model == "policy":
        return policy_from_payload(payload, device)
    if model == "planner":
        return planner_from_payload(payload, device)
    return talker_from_payload(payload, device)
