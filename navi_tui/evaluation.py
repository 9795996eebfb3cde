"""Evaluate a stored run's checkpoints on benches of any kind, and record the results with the run."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from navi_model import bench_gates
from navi_model import gates as G
from navi_model.brain import MODELS
from navi_model.config import GateThresholds, get_profile
from navi_model.corpus.load import BUNDLED_BENCHES, REQUIRED_BENCHES, Intent, load_bench
from navi_model.evaluate import policy_from_payload, policy_step_reader, run_intent_bench
from navi_model.gates import GateVerdict
from navi_model.planner import StepReader, planner_from_payload, run_plan_bench
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


def _step_reader(store: Store, run: dict, payloads: dict[str, dict], actions: list[str],
                 device: torch.device) -> StepReader | None:
    """The brain's reader of plan steps: the policy evaluated beside the planner, else the run's
    newest policy (the one its planner was warm-started from), as train judges plans. None where the
    run has no policy or the policy cannot read the planner's actions: the planner decodes alone."""
    payload = payloads.get("policy")
    if payload is None:
        ckpt = store.latest_checkpoint(run["id"], "policy")
        if ckpt is None:
            return None
        payload = load_stored_checkpoint(store, ckpt)
    intents = [i["name"] for i in payload["intents"]]
    return policy_step_reader(policy_from_payload(payload, device), intents, actions, device)


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
        # (label suffix, bench, bundled name): a file of the user's has no bundled name, it is judged alone
        benches = [(f"[{Path(p).name}]", load_bench(p, intents), None) for p in bench_files]
        present: set[str] = set()
    else:
        data = Path(config.get("data", ""))
        # the run's corpus's benches, the optional ones (unseen, seen, wild) where the folder has them,
        # judged as train judged them (navi_model/bench_gates.py)
        names = [k for k in BUNDLED_BENCHES if k in REQUIRED_BENCHES or (data / BUNDLED_BENCHES[k][0]).exists()]
        loaded = {k: load_bench(data / BUNDLED_BENCHES[k][0], intents, BUNDLED_BENCHES[k][1]) for k in names}
        present = set(loaded)
        loaded = {k: b for k, b in loaded.items() if BENCH_MODEL[b.kind] in ckpts}
        benches = [("", b, k) for k, b in loaded.items()]
    for _, bench, _ in benches:
        model = BENCH_MODEL[bench.kind]
        if model not in ckpts:
            what = f"checkpoint {checkpoint_id}" if checkpoint_id is not None else f"run {run['id']}"
            raise EvalUsageError(f"{bench.path}: a {bench.kind} bench needs the {model}, which {what} does not have")

    models: dict[str, object] = {}

    @functools.cache
    def reader() -> StepReader | None:  # made once, when the first plan bench needs it
        return _step_reader(store, run, payloads, models["planner"][1].actions, device)

    gates_by_model: dict[str, list[GateVerdict]] = {}
    items: dict[str, list[dict]] = {}
    gallery_rows: list[dict] = []
    judged: dict[str, dict[str, list[dict]]] = {}  # model -> bundled bench name -> rows, judged together below
    for suffix, bench, name in benches:
        m = BENCH_MODEL[bench.kind]
        if m not in models:
            models[m] = _load(m, payloads[m], device)
        label = f"{bench.kind}_bench{suffix}" if bench.kind != "gallery" else f"gallery{suffix}"
        if name in bench_gates.BENCH_GATES:  # a bundled intent or plan bench: judged with its model's others
            if bench.kind == "plan":
                planner, vocab = models[m]
                rows = run_plan_bench(planner, bench, vocab, device, reader=reader())
            else:
                rows = run_intent_bench(models[m], bench, [i["name"] for i in payloads["policy"]["intents"]], device)
            judged.setdefault(m, {})[name] = items[bench_gates.BENCH_GATES[name][0]] = rows
            gates_by_model.setdefault(m, [])  # the model keeps its place in the order gates are shown
            continue
        if bench.kind in ("policy", "paraphrase"):
            names = [i["name"] for i in payloads["policy"]["intents"]]
            rows = run_intent_bench(models[m], bench, names, device)
            new = [G.bench_gate(label, rows, getattr(th, f"{bench.kind}_bench"))]
        elif bench.kind == "plan":
            planner, vocab = models[m]
            rows = run_plan_bench(planner, bench, vocab, device, reader=reader())
            new = [G.bench_gate(label, rows, th.plan_bench)]
        elif name == "gallery_wild":  # the hand-written prompts: the gallery's gates, named as train names them
            talker = models[m]
            check_gallery_bench(talker, bench)
            rows = run_gallery(talker, bench.items, device)
            label = "gallery_wild"
            new = G.wild_gallery_gates(gallery_summary(rows), rows, th)
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
            new = [G.renamed(g, g.name + suffix) for g in new]
        items[label] = rows
        gates_by_model.setdefault(m, []).extend(new)
    for m, results in judged.items():
        gates_by_model[m] = bench_gates.judge(results, present, th) + gates_by_model[m]

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
