"""The policy's training loop: helpers first, then one flat loop that steps, logs and saves.

The hot path has no host sync: the loss and accuracy accumulate on the device and are read
back once every `log_every` steps; coverage counts accumulate on the device too.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from navi_model.config import TrainConfig
from navi_model.control import TrainingControl
from navi_model.data import PolicyData
from navi_model.distributed import ONE_PROCESS, Ranks
from navi_model.events import CheckpointReady, EmitFn, LogLine, MetricsLogged
from navi_model.model import PolicyModel, compile_blocks
from navi_model.step import LossFn, TrainStep, load_optimizer_state, plain_optimizer_state
from navi_model.vocab import drop_shared_left_padding


def flushes_denormals_on_cpu(train_fn):
    """While a trainer runs on the CPU, flush denormal floats to zero: as the loss nears zero,
    gradients go denormal and CPU steps slow down several-fold. The flag is process-wide, so it
    is cleared again when the trainer returns (a test's float generator tripped over it)."""

    @functools.wraps(train_fn)
    def wrapper(*args, device: torch.device, **kwargs):
        if device.type != "cpu":
            return train_fn(*args, device=device, **kwargs)
        torch.set_flush_denormal(True)
        try:
            return train_fn(*args, device=device, **kwargs)
        finally:
            torch.set_flush_denormal(False)

    return wrapper


def steps_for_coverage(n_unique: int, cfg: TrainConfig) -> int:
    """Steps scale with the data (M-011): every unique goal seen passes_per_goal times on average."""
    return max(1, math.ceil(cfg.passes_per_goal * n_unique / cfg.batch_size))


def coverage(seen: torch.Tensor, unique_index: torch.Tensor, n_unique: int) -> tuple[float, float]:
    """(min, mean) samples seen per unique text, from per-row counts; duplicates count together."""
    per_unique = torch.zeros(n_unique, device=seen.device).index_add_(0, unique_index, seen)
    return per_unique.min().item(), per_unique.mean().item()


def get_lr(step: int, total: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    # decay the matrices only: norms and biases stay as they are; frozen parameters stay out
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for every parameter; capturable: the step may be captured in a CUDA graph
    # (navi_model.step), reading its step count and learning rate from device memory
    cuda = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=cuda, capturable=cuda)


def make_train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn, cfg: TrainConfig,
                    device: torch.device, ranks: Ranks = ONE_PROCESS) -> TrainStep:
    """The loop's one step, compiled and graph-captured on CUDA as the config asks, eager elsewhere
    (and under DDP, whose gradient hooks a graph would not replay)."""
    compiled = device.type == "cuda" and cfg.compile and compile_blocks(model) > 0
    return TrainStep(model, opt, loss_fn, grad_clip=cfg.grad_clip, device=device,
                     graph=None if cfg.cuda_graph else False, compiled=compiled, ranks=ranks)


def stop_asked(control: TrainingControl | None, ranks: Ranks, step: int, every: int) -> bool:
    """At a step boundary: should the loop stop? (Blocks while paused.) One process asks its
    control object every step. Under DDP every rank must stop at the same step, so the ranks
    agree every `every` steps (a log window: one small all-reduce there, none on other steps);
    a stop asked in between waits for the next agreement."""
    local = control is not None and control.checkpoint_between_steps()
    if not ranks.distributed:
        return local
    return step % every == 0 and ranks.any(local)


def announce_ready(step: TrainStep, phase: str, emit: EmitFn) -> None:
    """Once per loop, when its step runs at full speed: how long compiling and capturing took.
    The run's GPU monitor starts judging utilisation here, not during a one-off compile."""
    # an eager step is ready at once: nothing worth a line
    if step.became_ready and (step.compiled or step.graphed):
        how = ", ".join(w for w, on in (("compiled", step.compiled), ("graph-captured", step.graphed)) if on) or "eager"
        emit(LogLine("info", "warm", f"{phase}: step ready ({how}) after {step.ready_after:.1f}s",
                     {"phase": phase, "seconds": step.ready_after, "compiled": step.compiled,
                      "graphed": step.graphed}))


class PeriodicCheckpoints:
    """When a loop writes a checkpoint before its phase ends: every `every_s` seconds of it.

    The phase's last step writes one anyway; `last_step` tells the loop whether a periodic one
    already holds that step, so no step is saved twice under one name.
    """

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.last_step: int | None = None
        self._since = time.perf_counter()

    def due(self) -> bool:
        return self.every_s > 0 and time.perf_counter() - self._since >= self.every_s

    def mark(self, step: int) -> None:
        self.last_step, self._since = step, time.perf_counter()


class EpochSampler:
    """Batches from a fresh permutation per epoch, on the device: every goal is seen once per
    epoch, so coverage grows evenly instead of leaving some goals unseen by chance.

    With lengths and bucket > 0, each epoch's permutation is cut into windows of `bucket` rows,
    each window sorted by length, and the batches cut from them drawn in a random order: a batch
    then holds rows of about one length, and a step on the CPU, which drops the columns that are
    padding in every row, reads fewer of them (tiny's policy: 35 of 58 on average). fairseq and
    ESPnet batch by length for the same reason. Every row is still seen once per epoch."""

    def __init__(self, n: int, batch_size: int, device: torch.device, seed: int,
                 lengths: torch.Tensor | None = None, bucket: int = 0):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.gen = torch.Generator(device="cpu").manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long, device=device)
        self.pos = 0
        self.lengths = lengths.detach().cpu() if lengths is not None and bucket > 0 else None
        self.bucket = bucket

    def _epoch(self) -> torch.Tensor:
        fresh = torch.randperm(self.n, generator=self.gen)
        if self.lengths is None:
            return fresh
        order = torch.cat([w[torch.sort(self.lengths[w], stable=True).indices] for w in fresh.split(self.bucket)])
        whole = order.numel() // self.batch_size
        batches = order[:whole * self.batch_size].view(whole, self.batch_size)
        shuffled = batches[torch.randperm(whole, generator=self.gen)].reshape(-1)
        return torch.cat([shuffled, order[whole * self.batch_size:]])

    def next(self) -> torch.Tensor:
        if self.pos + self.batch_size > self.perm.numel():
            rest = self.perm[self.pos:]
            fresh = self._epoch().to(self.device, non_blocking=True)
            self.perm, self.pos = torch.cat([rest, fresh]), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        """Plain values (perm on the CPU): a resumed run draws the very batches this one would have."""
        return {"n": self.n, "batch_size": self.batch_size, "perm": self.perm.detach().cpu().clone(),
                "pos": self.pos, "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        # a permutation of other data or another batch size would silently skew coverage
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise ValueError(f"sampler state for {state['n']} rows in batches of {state['batch_size']} does not fit "
                             f"{self.n} rows in batches of {self.batch_size}")
        self.perm = state["perm"].to(self.device)
        self.pos = int(state["pos"])
        self.gen.set_state(state["gen"])


class MemberSampler:
    """One EpochSampler per member of an ensembled policy (model.PolicyModel), each from its own
    seed, so that the members see the rows in different orders: members trained on shared batches
    differ only by their random start, and their errors overlap more (three tiny members of 5
    passes, 3 seeds, 2-core CPU: unseen / wild intents 0.953 / 0.971 on shared batches, 0.962 /
    0.976 on batches of their own).

    next(): one member, the batch as EpochSampler gives it; k members, a (batch, k) tensor whose
    column j is member j's batch, so that a rank's shard of its rows is a shard of every member's
    batch. Member 0 draws with the seed itself: a one-member policy draws what it always drew.
    """

    SEED_STRIDE = 7919  # member j draws with seed + j * SEED_STRIDE

    def __init__(self, members: int, n: int, batch_size: int, device: torch.device, seed: int,
                 lengths: torch.Tensor | None = None, bucket: int = 0):
        self.samplers = [EpochSampler(n, batch_size, device, seed + j * self.SEED_STRIDE, lengths, bucket)
                         for j in range(members)]

    def next(self) -> torch.Tensor:
        if len(self.samplers) == 1:
            return self.samplers[0].next()
        return torch.stack([s.next() for s in self.samplers], dim=1)

    def state_dict(self) -> dict:
        """Member 0's state, as a one-member policy's checkpoint holds it, and the others' beside."""
        state = self.samplers[0].state_dict()
        if len(self.samplers) > 1:
            state["members"] = [s.state_dict() for s in self.samplers[1:]]
        return state

    def load_state_dict(self, state: dict) -> None:
        others = state.get("members", [])
        if len(others) != len(self.samplers) - 1:
            raise ValueError(f"sampler state for {len(others) + 1} policy members does not fit {len(self.samplers)}")
        for sampler, part in zip(self.samplers, [state, *others]):
            sampler.load_state_dict(part)


def training_state(sampler: EpochSampler | MemberSampler, seen: torch.Tensor, gen: torch.Generator | None = None) -> dict:
    """What a resume needs beside weights and optimizer, as plain CPU values for a payload.

    seen is cloned: on the CPU .cpu() would hand out the live tensor that later steps keep adding to.
    """
    state = {"sampler": sampler.state_dict(), "seen": seen.detach().cpu().clone()}
    if gen is not None:
        state["gen_state"] = gen.get_state()
    return state


def restore_training_state(resume: dict, *, model: torch.nn.Module, opt: torch.optim.Optimizer | None,
                           sampler: EpochSampler | MemberSampler, seen: torch.Tensor, gen: torch.Generator | None = None) -> int:
    """Load a payload a trainer emitted (see training_state) into a freshly set-up loop; returns
    the step to continue from. Call it after the model is on the device and opt is built, so the
    optimizer state lands on the parameters' device. opt=None leaves the optimizer fresh."""
    model.load_state_dict(resume["model"])
    if opt is not None:
        load_optimizer_state(opt, resume["optimizer"])
    sampler.load_state_dict(resume["sampler"])
    if resume["seen"].shape != seen.shape:
        raise ValueError(f"coverage counts for {resume['seen'].numel()} rows do not fit data of {seen.numel()} rows")
    # restored, not restarted: the coverage gate judges the whole run, not just the part after the resume
    seen.copy_(resume["seen"])
    if gen is not None:
        gen.set_state(resume["gen_state"])
    return int(resume["step"])


@dataclass
class PolicyTrainResult:
    steps: int  # steps actually taken
    planned_steps: int
    stopped: bool  # ended early by the control object
    final_loss: float
    coverage_min: float  # samples seen by the least-seen unique goal
    coverage_mean: float
    seconds: float


def checkpoint_payload(model: PolicyModel, opt: torch.optim.Optimizer, step: int, extra: dict) -> dict:
    """A plain dict (model, optimizer, model_args, step, ...): loads with weights_only=True."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": plain_optimizer_state(opt),
        "model_args": asdict(model.cfg),
        "n_intents": model.n_intents,
        "members": model.members,
        "step": step,
        **extra,
    }


def policy_loss(model: PolicyModel, data: PolicyData, device: torch.device, label_smoothing: float = 0.0) -> LossFn:
    """A batch of row indices -> (cross-entropy, correct answers): the step gathers its own batch."""
    use_bf16 = device.type == "cuda"
    # a CUDA step keeps its shapes (graph, compile); elsewhere the all-pad columns go
    trim = device.type != "cuda"

    def loss_fn(idx: torch.Tensor):
        # (B,) for one member; (B, members) from MemberSampler: member j reads column j
        rows = [idx] if idx.dim() == 1 else list(idx.T)
        labels = torch.stack([data.labels[r] for r in rows])  # (members, B)
        ids, valid = [data.ids[r] for r in rows], [data.valid[r] for r in rows]
        if trim:
            ids, valid = map(list, zip(*(drop_shared_left_padding(i, v) for i, v in zip(ids, valid))))
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(ids, valid, per_member=True).float()  # (members, B, n_intents)
        # each member learns on its own: the mean of their losses, not the loss of their mean,
        # which would let one member lean on the others. Each member reads rows of its own, so
        # the answers right are counted per member and averaged: train_acc is the members' mean
        K = logits.shape[0]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), label_smoothing=label_smoothing)
        return loss, (logits.detach().argmax(-1) == labels).sum() / K

    return loss_fn


@flushes_denormals_on_cpu
def train_policy(
    model: PolicyModel,
    data: PolicyData,
    cfg: TrainConfig,
    *,
    steps: int,
    device: torch.device,
    emit: EmitFn,
    control: TrainingControl | None = None,
    checkpoint_extra: dict | None = None,
    resume: dict | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> PolicyTrainResult:
    """Train for `steps` steps (fewer if the control object stops it); always ends with a checkpoint.

    checkpoint_extra: plain values stored in the checkpoint beside the weights (intents, profile).
    resume: a payload this trainer emitted earlier; the run continues from its step to `steps`.
    ranks: under DDP, every rank draws the same global batch and trains on its shard of it; the
    policy's mean cross-entropy over an even shard is already its share of the global mean.
    """
    ranks.check_batch(cfg.batch_size, "policy")
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    sampler = MemberSampler(model.members, data.n, cfg.batch_size, device, cfg.seed, data.valid.sum(1),
                            cfg.length_buckets)
    T = data.ids.shape[1]

    seen = torch.zeros(data.n, device=device)
    ones = torch.ones(cfg.batch_size, device=device)
    window_steps, window_t0, t0 = 0, time.perf_counter(), time.perf_counter()
    last_loss = float("nan")
    stopped = False
    emit(LogLine("info", "phase", f"policy: {steps} steps over {data.n_unique} unique goals, batch {cfg.batch_size}"))
    start = 0
    if resume is not None:
        start = restore_training_state(resume, model=model, opt=opt, sampler=sampler, seen=seen)
        emit(LogLine("info", "resume", f"policy: continuing from step {start} of {steps}"))
    # built after the restore: a graph must see the optimizer state it will update in place
    train_step = make_train_step(model, opt, policy_loss(ranks.wrap(model), data, device, cfg.label_smoothing), cfg,
                                 device, ranks)
    periodic = PeriodicCheckpoints(cfg.checkpoint_every_s)

    def checkpoint() -> CheckpointReady:
        return CheckpointReady(steps_done, "policy", "policy", f"policy_{steps_done:06d}",
                               checkpoint_payload(model, opt, steps_done,
                                                  {**(checkpoint_extra or {}), **training_state(sampler, seen)}))

    # counted, not taken from the loop variable: the loop may run no step at all
    steps_done = start
    for step in range(start, steps):
        if stop_asked(control, ranks, step, cfg.log_every):
            stopped = True
            break
        last_step = step == steps - 1
        lr = get_lr(step, steps, cfg)
        idx = sampler.next()
        train_step(lr, ranks.shard(idx))
        announce_ready(train_step, "policy", emit)
        steps_done = step + 1
        # member 0's rows: every member's sampler walks whole epochs of the same rows alike
        first = idx if idx.dim() == 1 else idx[:, 0]
        seen.index_add_(0, first, ones[: first.numel()])
        window_steps += 1
        if periodic.due() and not last_step:
            emit(checkpoint())
            periodic.mark(steps_done)

        if (step + 1) % cfg.log_every == 0 or last_step:
            # the one host sync of the window
            loss_sum, correct_sum = train_step.take()
            now = time.perf_counter()
            dt = max(now - window_t0, 1e-9)
            mean_loss = loss_sum / window_steps
            emit(MetricsLogged(step + 1, "policy", {
                "loss": mean_loss, "train_acc": correct_sum / (window_steps * cfg.batch_size), "lr": lr,
                "tokens_per_s": window_steps * cfg.batch_size * model.members * T / dt,  # every member reads a batch
                "step_ms": 1000.0 * dt / window_steps,
            }))
            last_loss = mean_loss
            window_steps, window_t0 = 0, now

    if stopped and window_steps:
        last_loss = train_step.take()[0] / window_steps
    train_step.close()
    cov_min, cov_mean = coverage(seen, data.goal_index, data.n_unique)
    emit(MetricsLogged(steps_done, "policy", {"coverage_min": cov_min, "coverage_mean": cov_mean}))
    if periodic.last_step != steps_done:
        emit(checkpoint())
    return PolicyTrainResult(steps_done, steps, stopped, last_loss, cov_min, cov_mean, time.perf_counter() - t0)
