"""Configuration as dataclasses, and the named profiles.

Thresholds of every gate live here, in the profile, never in the code that measures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from navi_model.model import EncoderConfig


@dataclass
class TrainConfig:
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * this
    weight_decay: float = 0.05
    warmup_steps: int = 30
    grad_clip: float = 1.0
    # steps scale with the data, never a fixed constant (M-011):
    # steps = ceil(passes_per_goal * unique goals / batch_size)
    passes_per_goal: float = 30.0
    log_every: int = 25  # read the loss back to the host every N steps, not every step
    seed: int = 1337


@dataclass
class GateThresholds:
    policy_bench: float = 1.0  # share of the policy bench that must be correct
    paraphrase_bench: float = 1.0  # every must-pass paraphrase
    min_coverage: float = 3.0  # samples seen by the least-seen unique goal (M-011)
    max_truncated: int = 0  # samples that do not fit seq_len (M-008)


@dataclass
class Profile:
    name: str
    description: str
    policy: EncoderConfig
    policy_train: TrainConfig
    gates: GateThresholds = field(default_factory=GateThresholds)

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="passes its gates on a 2-core CPU in minutes",
        policy=EncoderConfig(seq_len=80, d_model=96, n_layers=2, n_heads=4),
        policy_train=TrainConfig(batch_size=64, lr=3e-3, passes_per_goal=20.0),
    ),
    "base": Profile(
        name="base",
        description="a GPU: wider and deeper, larger batches",
        policy=EncoderConfig(seq_len=128, d_model=512, n_layers=6, n_heads=8),
        policy_train=TrainConfig(batch_size=256, lr=1e-3, passes_per_goal=150.0, warmup_steps=100,
                                       log_every=50),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})") from None
