"""The diagnose command: one batch through every stage of a stored run's talker (M-010, M-031)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from navi_model.corpus.load import BUNDLED_BENCHES, load_bench
from navi_model.diagnose import collapse_point, format_trace, trace_talker
from navi_model.talker import talker_from_payload
from store import Store

from navi_tui.evaluation import EvalUsageError
from navi_tui.stored_checkpoint import load_stored_checkpoint

BATCH = 16  # gallery items traced: enough pairs for a mean cosine, small enough for any device


def diagnose_run(store: Store, *, run_id: int | None, device: torch.device) -> tuple[str, bool]:
    """-> (the trace as text, whether a stage collapses)."""
    if run_id is not None:
        run = store.get_run(run_id)
        if run is None:
            raise EvalUsageError(f"no run {run_id} in {store.path}")
    else:
        run = next((r for r in store.list_runs() if store.latest_checkpoint(r["id"], "talker")), None)
        if run is None:
            raise EvalUsageError(f"no run with a talker checkpoint in {store.path}: train one first")
    ckpt = store.latest_checkpoint(run["id"], "talker")
    if ckpt is None:
        raise EvalUsageError(f"run {run['id']} has no talker checkpoint to diagnose")
    model = talker_from_payload(load_stored_checkpoint(store, ckpt), device)
    data = Path(json.loads(run["config_json"] or "{}").get("data", ""))
    items = load_bench(data / BUNDLED_BENCHES["gallery"][0], [], "gallery").items[:BATCH]
    rows = trace_talker(model, items, device)
    header = f"run {run['id']}, talker checkpoint {ckpt['id']} (step {ckpt['step']}, {ckpt['phase']}), {len(items)} gallery items"
    return f"{header}\n{format_trace(rows)}", collapse_point(rows) is not None
