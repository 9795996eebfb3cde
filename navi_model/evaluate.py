"""Evaluation of a trained policy on benches: per-item results, computed greedily, on any device."""

from __future__ import annotations

import torch

from navi_model.corpus.load import Bench, CorpusError
from navi_model.model import EncoderConfig, PolicyModel, payload_members
from navi_model.planner import StepReader
from navi_model.vocab import encode_encoder_batch, text_bytes


@torch.no_grad()
def predict_intents(model: PolicyModel, goals: list[str], intents: list[str], device: torch.device,
                    batch_size: int = 256) -> list[str]:
    model.eval()
    out: list[str] = []
    for i in range(0, len(goals), batch_size):
        ids, valid = encode_encoder_batch(goals[i:i + batch_size], model.cfg.seq_len)
        logits = model(ids.to(device), valid.to(device))
        out.extend(intents[j] for j in logits.argmax(-1).tolist())
    return out


def run_intent_bench(model: PolicyModel, bench: Bench, intents: list[str], device: torch.device) -> list[dict]:
    """Policy or paraphrase bench -> [{"line", "goal", "expected", "predicted", "correct"}]."""
    if bench.kind not in ("policy", "paraphrase"):
        raise ValueError(f"{bench.path}: a {bench.kind} bench is not an intent bench")
    for it in bench.items:
        n = len(text_bytes(it["goal"]))
        if n > model.cfg.seq_len:
            raise CorpusError(bench.path, it["line"], "goal",
                              f"{n} bytes do not fit the policy's seq_len of {model.cfg.seq_len}")
        if it["intent"] not in intents:
            raise CorpusError(bench.path, it["line"], "intent",
                              f"unknown intent {it['intent']!r}: this model knows {', '.join(intents)}")
    predicted = predict_intents(model, [it["goal"] for it in bench.items], intents, device)
    return [
        {"line": it["line"], "goal": it["goal"], "expected": it["intent"], "predicted": p, "correct": p == it["intent"]}
        for it, p in zip(bench.items, predicted)
    ]


def policy_from_payload(payload: dict, device: torch.device) -> PolicyModel:
    model = PolicyModel(EncoderConfig(**payload["model_args"]), payload["n_intents"], payload_members(payload))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


def policy_step_reader(model: PolicyModel, intents: list[str], actions: list[str], device: torch.device,
                       batch_size: int = 256) -> StepReader | None:
    """The policy as a reader of plan steps (navi_model/planner.StepReader): a step's text -> the
    policy's log-probabilities of the planner's actions. None where an action is no intent of the
    policy's (a user's corpus may plan with actions the policy never routes to). A text the
    policy cannot take (empty, or longer than its seq_len) gets a row of zeros: no opinion, the
    planner's frames decide that step alone."""
    if any(a not in intents for a in actions):
        return None
    cols = torch.tensor([intents.index(a) for a in actions], device=device)

    @torch.no_grad()
    def read(texts: list[str]) -> torch.Tensor:
        model.eval()
        out = torch.zeros(len(texts), len(actions))
        fit = [i for i, t in enumerate(texts) if 0 < len(text_bytes(t)) <= model.cfg.seq_len]
        for i in range(0, len(fit), batch_size):
            rows = fit[i:i + batch_size]
            ids, valid = encode_encoder_batch([texts[j] for j in rows], model.cfg.seq_len)
            logits = model(ids.to(device), valid.to(device)).float().log_softmax(-1)
            out[rows] = logits[:, cols].cpu()
        return out

    return read
