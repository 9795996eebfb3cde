"""What the hardware allows, to hold navi's trainers against: FLOPs per step, MFU, and the
minimal reference loop (the nanoGPT-style minimum: forward, loss, backward, AdamW step).

FLOPs are counted from the models' own layers, per training step:
- a linear layer costs 2 * rows * in * out forward; trained, its backward costs twice that
  (input and weight gradients), so 6 * rows * in * out in all: the "6 N" of a token;
- attention costs 4 * T^2 * C per sequence and layer forward (scores and the weighted sum),
  12 * T^2 * C trained;
- a frozen encoder runs forward only (2x), and with the talker's encoder cache not at all;
- embeddings, norms and elementwise work count nothing, as in the usual MFU.
MFU = those FLOPs per second over the device's dense bf16 peak, from a small table of known
GPUs; elsewhere the peak, and so MFU, is unknown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.model import Block, compile_blocks

# dense bf16 tensor-core peak, FLOP/s, by the vendors' datasheets (SXM parts); matched by name
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak or None when the device is not in the table)."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_FLOPS.items():
        if key in name:
            return name, peak
    return name, None


def _linear_flops(module: nn.Module, rows: int) -> int:
    """Forward FLOPs of every nn.Linear inside module applied to `rows` rows."""
    return sum(2 * rows * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def _attention_flops(blocks: Sequence[Block], seqs: int, length: int) -> int:
    return sum(4 * seqs * length * length * b.attn.proj.in_features for b in blocks)


def _stack_flops(blocks: Sequence[Block], seqs: int, length: int) -> int:
    return sum(_linear_flops(b, seqs * length) for b in blocks) + _attention_flops(blocks, seqs, length)


@dataclass(frozen=True)
class StepFlops:
    trained_forward: int  # forward FLOPs of layers that also run backward
    frozen_forward: int  # forward FLOPs of layers that run forward only

    @property
    def total(self) -> int:
        # backward of a trained layer: the input and the weight gradients, twice its forward
        return 3 * self.trained_forward + self.frozen_forward


def policy_step_flops(model, batch: int, seq_len: int) -> StepFlops:
    enc = model.encoder  # every member of an ensembled policy is alike: one's cost times their count
    return StepFlops(model.members * (_stack_flops(enc.blocks, batch, seq_len) + _linear_flops(model.head, batch)), 0)


def planner_step_flops(model, batch: int, goal_len: int) -> StepFlops:
    trained = (_stack_flops(model.encoder.blocks, batch, goal_len) + _stack_flops(model.blocks, batch, goal_len)
               + _linear_flops(model.head, batch * goal_len))
    return StepFlops(trained, 0)


def talker_step_flops(model, batch: int, encoder_cached: bool, decoder_passes: int = 1,
                      no_grad_passes: int = 0) -> StepFlops:
    """An SFT step is one decoder pass; a DA step two trained passes and one without gradients."""
    cfg = model.cfg
    texts = batch * (cfg.memory_k + 1)  # prompt and memories
    encoder = 0 if encoder_cached else cfg.encoders * _stack_flops(model.encoder.blocks, texts, cfg.encoder.seq_len)
    L = model.prefix_len + cfg.response_len
    head = (_linear_flops(model.to_concept, texts) + _linear_flops(model.projector, texts)
            + _stack_flops(model.blocks, batch, L) + _linear_flops(model.lm_head, batch * cfg.response_len))
    frozen_encoder = not any(p.requires_grad for enc in model.all_encoders() for p in enc.parameters())
    enc_trained, enc_frozen = (0, encoder) if frozen_encoder else (encoder, 0)
    return StepFlops(decoder_passes * (enc_trained + head),
                     decoder_passes * enc_frozen + no_grad_passes * (encoder + head))


def mfu(flops_per_step: int, step_seconds: float, peak: float | None) -> float | None:
    if not peak or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / peak


# --- the reference loop

def reference_loop(model: nn.Module, forward_loss: Callable[[], torch.Tensor], *, lr: float, device: torch.device,
                   steps: int, warmup: int = 5, compile: bool = False) -> dict:
    """The minimum a training loop must do on one fixed batch: forward, loss, backward, AdamW step.

    Same dtype (bf16 autocast on CUDA, inside forward_loss), the fused AdamW navi uses on CUDA,
    and navi's compile setting. No sampling, no clipping, no statistics, no events, no store.
    Returns step_ms (mean over `steps` after `warmup`) and the compile/first-step seconds.
    """
    model.to(device).train()
    if compile and device.type == "cuda":
        compile_blocks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), fused=device.type == "cuda")

    def one() -> None:
        loss = forward_loss()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    one()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        one()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"step_ms": 1000.0 * seconds / steps, "first_step_s": first, "steps": steps}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class SpeedCase:
    """One trainer's batch, for the reference loop, with what each side computes per step."""
    phase: str  # policy, planner or sft: the phase whose tokens/s it is held against
    model: nn.Module
    forward_loss: Callable[[], torch.Tensor]
    lr: float
    tokens_per_step: int  # counted as the trainer counts them (its tokens_per_s)
    navi_flops: StepFlops  # what navi's own step computes (the talker's encoder cached when frozen)
    reference_flops: StepFlops  # what the minimal loop computes (the talker's encoder every step)


def speed_cases(profile, data, device: torch.device) -> list[SpeedCase]:
    """The policy, planner and talker SFT steps of a profile on fixed batches of the real data
    (navi_model.brain.BrainData on the device), each with a fresh model."""
    from navi_model.model import PolicyModel
    from navi_model.planner import PlannerModel, plan_loss
    from navi_model.talker import TalkerModel, memory_rows, pad_denoise, talk_loss

    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    cases = []

    pd, B = data.policy, profile.policy_train.batch_size
    policy = PolicyModel(profile.policy, len(pd.intents), profile.policy_members).to(device)
    ids, valid, labels = pd.ids[:B], pd.valid[:B], pd.labels[:B]

    def policy_loss():  # each member of an ensembled policy reads a batch and has a loss of its own
        with torch.autocast(**autocast):
            logits = policy(ids, valid, per_member=True)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.repeat(policy.members))

    T = pd.ids.shape[1]
    f = policy_step_flops(policy, B, T)
    cases.append(SpeedCase("policy", policy, policy_loss, profile.policy_train.lr, B * T * policy.members, f, f))

    plan, B = data.plan, profile.planner_train.batch_size
    planner = PlannerModel(profile.planner, data.vocab.size).to(device)
    g_ids, g_valid, p_tgt = plan.goal_ids[:B], plan.goal_valid[:B], plan.plan_targets[:B]

    def planner_loss():
        with torch.autocast(**autocast):
            logits = planner(g_ids, g_valid)
        return plan_loss(logits, g_valid, p_tgt)

    G = plan.goal_ids.shape[1]
    f = planner_step_flops(planner, B, G)
    cases.append(SpeedCase("planner", planner, planner_loss, profile.planner_train.lr, B * G, f, f))

    talk, B, tcfg = data.talk, profile.talker_train.batch_size, profile.talker
    talker = TalkerModel(tcfg).to(device)
    if profile.talker_train.freeze_encoder:
        talker.freeze_encoders()
    gen = torch.Generator(device=device).manual_seed(0)
    idx = torch.arange(B, device=device) % talk.n
    rows, present = memory_rows(talk, idx, tcfg.memory_k, gen)
    inputs = (talk.prompt_ids[idx], talk.prompt_valid[idx], talk.mem_ids[rows], talk.mem_valid[rows], present,
              pad_denoise(talk.dec_inputs[idx], 0.1, gen))
    targets = talk.dec_targets[idx]

    def talker_loss():
        with torch.autocast(**autocast):
            logits = talker(*inputs)
        return talk_loss(logits, targets)

    tokens = B * (tcfg.encoder.seq_len * (tcfg.memory_k + 1) + tcfg.response_len)
    cases.append(SpeedCase("sft", talker, talker_loss, profile.talker_train.lr, tokens,
                           talker_step_flops(talker, B, encoder_cached=profile.talker_train.freeze_encoder),
                           talker_step_flops(talker, B, encoder_cached=False)))
    return cases
