"""Training data as tensors resident on the training device: no per-step DataLoader, no
host-to-device copy on the hot path."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from navi_model.vocab import encode_encoder_batch


@dataclass
class PolicyData:
    ids: torch.Tensor  # (N, T) long, left-padded bytes
    valid: torch.Tensor  # (N, T) bool
    labels: torch.Tensor  # (N,) long, index into intents
    goal_index: torch.Tensor  # (N,) long, which unique goal each row is (for coverage)
    intents: list[str]
    n_unique: int

    @property
    def n(self) -> int:
        return self.labels.shape[0]


def build_policy_data(goals: list[dict], intents: list[str], seq_len: int, device: torch.device) -> PolicyData:
    """goals: [{"goal", "intent"}]. Raises TruncationError if a goal does not fit seq_len."""
    index = {name: i for i, name in enumerate(intents)}
    texts = [g["goal"] for g in goals]
    ids, valid = encode_encoder_batch(texts, seq_len)  # range-checked against BYTE_VOCAB once, here
    labels = torch.tensor([index[g["intent"]] for g in goals], dtype=torch.long)
    unique: dict[str, int] = {}
    # a noisy copy (navi_model/noise.py) counts as its clean source: coverage is of the goals
    goal_index = torch.tensor([unique.setdefault(g.get("source", g["goal"]), len(unique)) for g in goals],
                              dtype=torch.long)
    return PolicyData(
        ids=ids.to(device), valid=valid.to(device), labels=labels.to(device),
        goal_index=goal_index.to(device), intents=list(intents), n_unique=len(unique),
    )
