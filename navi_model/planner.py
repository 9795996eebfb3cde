"""The planner (Plan-LM): goal bytes -> a plan of action intents, one STEP at a time.

An Encoder reads the goal (LEFT-padded bytes); its per-position states, projected, are the
prefix of a prefix-LM decoder over plan tokens:

    [goal state 0 .. goal state T-1][BOS STEP a1 STEP a2 ... EOS PAD...]

Every query sees the valid (non-pad) goal positions; plan positions also see the plan
positions at or before them. Plan sequences are RIGHT-padded with BOS at position 0 and the
goal always ends right before BOS, so training positions are generation positions (M-003).

What the failure log asks of this model:
- STEP is about a third of the targets; an unweighted loss is dominated by it (M-002), so the
  loss weighs each target class by inverse frequency (every class present holds an equal share).
- nothing truncates: a goal or plan that does not fit is an error (M-008).
- the bench is greedy autoregressive decoding compared plan for plan, never the teacher-forced
  loss or accuracy, which is only reported beside it (M-014).
- THINK..ENDTHINK is stripped from an output before comparing plans (M-018).
- plan ids are range-checked against PLAN_VOCAB, the table they index (M-026).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.config import PlannerConfig, TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import Bench, CorpusError
from navi_model.distributed import ONE_PROCESS, Ranks
from navi_model.events import CheckpointReady, EmitFn, LogLine, MetricsLogged
from navi_model.model import Block, Encoder, RMSNorm, _init_weights, rotary_tables
from navi_model.step import LossFn, plain_optimizer_state
from navi_model.train import (
    EpochSampler, PeriodicCheckpoints, announce_ready, coverage, flushes_denormals_on_cpu, get_lr, make_optimizer,
    make_train_step, restore_training_state, stop_asked, training_state,
)
from navi_model.vocab import (
    TruncationError, Vocabulary, check_ids, drop_shared_left_padding, encode_encoder_batch, text_bytes,
)

PAD, BOS, EOS, STEP, THINK, ENDTHINK = range(6)
SPECIALS = ("PAD", "BOS", "EOS", "STEP", "THINK", "ENDTHINK")


class PlanVocab:
    """Special tokens 0..5, then one token per action, in the order given."""

    def __init__(self, actions: list[str]):
        self.actions = list(actions)
        self.names = [*SPECIALS, *self.actions]  # id -> name
        self.size = len(self.names)
        self._ids = {name: i for i, name in enumerate(self.names)}
        if len(self._ids) != self.size:
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"plan vocabulary: duplicate or reserved action names {dup}")
        self.vocabulary = Vocabulary("PLAN_VOCAB", self.size)

    def id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise ValueError(f"unknown plan token {name!r} (actions: {', '.join(self.actions)})") from None

    def check(self, ids: torch.Tensor, where: str = "plan ids") -> None:
        """VocabRangeError naming PLAN_VOCAB if an id would fall outside the plan embedding."""
        check_ids(ids, self.vocabulary, where)

    def encode(self, plan: list[str]) -> list[int]:
        """[BOS, STEP, a1, STEP, a2, ..., EOS]."""
        out = [BOS]
        for action in plan:
            if action not in self.actions:  # a special name is not an action either
                raise ValueError(f"unknown action {action!r} (actions: {', '.join(self.actions)})")
            out += [STEP, self._ids[action]]
        return out + [EOS]

    def encode_batch(self, plans: list[list[str]], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """RIGHT-padded (inputs, targets), both (B, seq_len); targets are inputs shifted left by one.

        PAD targets are ignored by the loss. A plan needing more than seq_len inputs is an error.
        """
        seq = torch.full((len(plans), seq_len + 1), PAD, dtype=torch.long)
        for i, plan in enumerate(plans):
            row = self.encode(plan)
            if len(row) > seq_len + 1:
                raise TruncationError(
                    f"plan {i} of {len(plan)} actions needs {len(row) - 1} decoder positions, "
                    f"more than plan_len={seq_len}: {plan}"
                )
            seq[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        self.check(seq, "plan batch")
        return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()

    @staticmethod
    def strip_cot(ids: list[int]) -> list[int]:
        """Drop THINK .. matching ENDTHINK (nested pairs count); an unmatched THINK drops to the end.

        A stray ENDTHINK with no THINK before it is kept: it is a malformed output and must
        fail the comparison, not vanish.
        """
        out, depth = [], 0
        for t in ids:
            if t == THINK:
                depth += 1
            elif t == ENDTHINK and depth > 0:
                depth -= 1
            elif depth == 0:
                out.append(t)
        return out

    def plan_tokens(self, ids: list[int]) -> list[str]:
        """Token names of the plan in ids: reasoning stripped, cut after the first EOS (kept),
        BOS and PAD dropped. Ids outside the vocabulary show as '<id N>' so a comparison fails."""
        out = []
        for t in self.strip_cot(list(ids)):
            if t in (BOS, PAD):
                continue
            out.append(self.names[t] if 0 <= t < self.size else f"<id {t}>")
            if t == EOS:
                break
        return out


class PlannerModel(nn.Module):
    def __init__(self, cfg: PlannerConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        C, nh = cfg.encoder.d_model, cfg.encoder.n_heads
        self.encoder = Encoder(cfg.encoder)
        self.goal_proj = nn.Linear(C, C)  # encoder states -> the decoder's input space
        self.embed = nn.Embedding(vocab_size, C)
        self.blocks = nn.ModuleList(Block(C, nh) for _ in range(cfg.dec_layers))
        self.norm = RMSNorm(C)
        self.lm_head = nn.Linear(C, vocab_size, bias=False)
        # one position axis over goal + plan: the goal always ends right before BOS
        cos, sin = rotary_tables(cfg.encoder.seq_len + cfg.plan_len, C // nh, cfg.encoder.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_weights)

    @staticmethod
    def attn_mask(goal_valid: torch.Tensor, plan_len: int) -> torch.Tensor:
        """(B, 1, L, L) bool, True = may attend. Valid goal keys are open to every query; plan
        keys are open to plan queries at or after them (causal); pad goal keys to none."""
        B, G = goal_valid.shape
        L = G + plan_len
        dev = goal_valid.device
        is_plan = torch.arange(L, device=dev) >= G
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        plan_keys = is_plan[:, None] & is_plan[None, :] & causal  # (L, L)
        goal_keys = torch.cat([goal_valid, torch.zeros(B, plan_len, dtype=torch.bool, device=dev)], dim=1)
        return (plan_keys[None] | goal_keys[:, None, :])[:, None]

    def forward(self, goal_ids: torch.Tensor, goal_valid: torch.Tensor, plan_inputs: torch.Tensor) -> torch.Tensor:
        G, T = goal_ids.shape[1], plan_inputs.shape[1]
        assert G <= self.cfg.encoder.seq_len and T <= self.cfg.plan_len, (G, T)
        states, _ = self.encoder(goal_ids, goal_valid)
        x = torch.cat([self.goal_proj(states), self.embed(plan_inputs)], dim=1)  # (B, G+T, C)
        mask = self.attn_mask(goal_valid, T)
        cos, sin = self.rope_cos[: G + T], self.rope_sin[: G + T]
        for block in self.blocks:
            x = block(x, cos, sin, attn_mask=mask)
        return self.lm_head(self.norm(x[:, G:]))  # (B, T, V): plan positions only


def class_weights(targets: torch.Tensor, vocab: PlanVocab) -> tuple[torch.Tensor, dict[str, float]]:
    """Inverse-frequency weight per target class, so each class present holds an equal share of
    the weighted targets (M-002: STEP alone was 27% of the loss). Absent classes (and PAD) get 0.

    Runs once per data set: it reads counts back to the host.
    """
    t = targets.reshape(-1)
    counts = torch.bincount(t[t != PAD], minlength=vocab.size).double()
    total = counts.sum()
    present = counts > 0
    n_present = int(present.sum())
    weights = torch.where(present, total / (max(n_present, 1) * counts.clamp_min(1.0)), torch.zeros_like(counts))
    weighted = weights * counts
    share = (counts / total.clamp_min(1.0)).tolist()
    wshare = (weighted / weighted.sum().clamp_min(1e-12)).tolist()
    stats: dict[str, float] = {}
    for i, name in enumerate(vocab.names):
        # STEP, EOS and every action always show (an absent action is worth seeing); other
        # specials only when they occur
        if i == PAD or (i in (BOS, THINK, ENDTHINK) and not present[i]):
            continue
        stats[f"share/{name}"] = share[i]
        stats[f"weighted_share/{name}"] = wshare[i]
    stats["weighted_share_max"] = max(wshare)
    stats["classes_present"] = float(n_present)
    return weights.float(), stats


def plan_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
              denom: torch.Tensor | None = None) -> torch.Tensor:
    """sum(w[y] * ce) / sum(w[y]) over the non-PAD targets: cross_entropy with a class weight and
    mean reduction divides by the summed weights of the targets it kept.

    denom: divide the weighted sum by this instead (under DDP: the whole global batch's summed
    weights over world_size, so that DDP's gradient average gives the global batch's gradient)."""
    if denom is None:
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), weight=weights, ignore_index=PAD)
    total = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), weight=weights, ignore_index=PAD,
                            reduction="sum")
    return total / denom


@dataclass
class PlanData:
    goal_ids: torch.Tensor  # (N, G) long, left-padded bytes
    goal_valid: torch.Tensor  # (N, G) bool
    plan_inputs: torch.Tensor  # (N, P) long, right-padded [BOS STEP a1 ... EOS PAD...]
    plan_targets: torch.Tensor  # (N, P) long, inputs shifted left, PAD = ignored
    goal_index: torch.Tensor  # (N,) long, unique goal of each row (coverage)
    n_unique: int

    @property
    def n(self) -> int:
        return self.goal_ids.shape[0]


def build_plan_data(plans: list[dict], vocab: PlanVocab, enc_seq_len: int, plan_len: int,
                    device: torch.device) -> PlanData:
    """plans: [{"goal", "plan"}]. TruncationError if a goal or plan does not fit (M-008)."""
    texts = [p["goal"] for p in plans]
    goal_ids, goal_valid = encode_encoder_batch(texts, enc_seq_len)  # range-checked against BYTE_VOCAB
    inputs, targets = vocab.encode_batch([p["plan"] for p in plans], plan_len)  # against PLAN_VOCAB
    unique: dict[str, int] = {}
    # a noisy copy (navi_model/noise.py) counts as its clean source: coverage is of the goals
    goal_index = torch.tensor([unique.setdefault(p.get("source", p["goal"]), len(unique)) for p in plans],
                              dtype=torch.long)
    return PlanData(goal_ids.to(device), goal_valid.to(device), inputs.to(device), targets.to(device),
                    goal_index.to(device), len(unique))


@dataclass
class PlannerTrainResult:
    steps: int  # steps actually taken
    planned_steps: int
    stopped: bool  # ended early by the control object
    final_loss: float
    coverage_min: float  # samples seen by the least-seen unique goal
    coverage_mean: float
    seconds: float
    class_stats: dict[str, float]


def _check_vocab(model: PlannerModel, vocab: PlanVocab) -> None:
    # the ids of one vocabulary must never index the table of another (M-026)
    if model.vocab_size != vocab.size:
        raise ValueError(f"PLAN_VOCAB of {vocab.size} tokens does not match the model's {model.vocab_size}")


def planner_payload(model: PlannerModel, opt: torch.optim.Optimizer, vocab: PlanVocab, step: int,
                    extra: dict) -> dict:
    """A plain dict: loads with weights_only=True, rebuilds with planner_from_payload."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": plain_optimizer_state(opt),
        "model_args": asdict(model.cfg),
        "vocab_size": model.vocab_size,
        "actions": list(vocab.actions),
        "step": step,
        **extra,
    }


def planner_loss(model: PlannerModel, data: PlanData, weights: torch.Tensor, device: torch.device) -> LossFn:
    """A batch of row indices [, the loss denominator] -> (class-weighted loss, correct targets, real targets).

    The denominator (a device tensor, see plan_loss) is given under DDP only: one process keeps
    the step it always had, and its CUDA graph the same static inputs."""
    use_bf16 = device.type == "cuda"
    # a CUDA step keeps its shapes (graph, compile); elsewhere the all-pad goal columns go: the
    # goal still ends right before BOS, so every relative position the decoder sees is the same
    trim = device.type != "cuda"

    def loss_fn(idx: torch.Tensor, denom: torch.Tensor | None = None):
        targets = data.plan_targets[idx]
        goal_ids, goal_valid = data.goal_ids[idx], data.goal_valid[idx]
        if trim:
            goal_ids, goal_valid = drop_shared_left_padding(goal_ids, goal_valid)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(goal_ids, goal_valid, data.plan_inputs[idx])
        real = targets != PAD
        correct = ((logits.detach().argmax(-1) == targets) & real).sum()
        return plan_loss(logits, targets, weights, denom), correct, real.sum()

    return loss_fn


@flushes_denormals_on_cpu
def train_planner(
    model: PlannerModel,
    data: PlanData,
    cfg: TrainConfig,
    *,
    steps: int,
    device: torch.device,
    emit: EmitFn,
    vocab: PlanVocab,
    control: TrainingControl | None = None,
    checkpoint_extra: dict | None = None,
    resume: dict | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> PlannerTrainResult:
    """Train for `steps` steps (fewer if the control object stops it); always ends with a checkpoint.

    Loss: class-weighted mean cross-entropy over the non-PAD targets (weights from class_weights).
    resume: a payload this trainer emitted earlier; the run continues from its step to `steps`.
    ranks: under DDP, every rank draws the same global batch and trains on its shard; the loss is
    divided by the global batch's summed class weights (times world_size, which DDP's average undoes).
    """
    _check_vocab(model, vocab)
    ranks.check_batch(cfg.batch_size, "planner")
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    sampler = EpochSampler(data.n, cfg.batch_size, device, cfg.seed)
    positions = data.goal_ids.shape[1] + data.plan_inputs.shape[1]

    weights, class_stats = class_weights(data.plan_targets, vocab)
    weights = weights.to(device)
    emit(MetricsLogged(0, "planner", {
        **class_stats, **{f"weight/{n}": w for n, w in zip(vocab.names, weights.tolist()) if w > 0},
    }))

    seen = torch.zeros(data.n, device=device)
    ones = torch.ones(cfg.batch_size, device=device)
    window_steps, window_t0, t0 = 0, time.perf_counter(), time.perf_counter()
    last_loss = float("nan")
    stopped = False
    emit(LogLine("info", "phase", f"planner: {steps} steps over {data.n_unique} unique goals, batch {cfg.batch_size}"))
    start = 0
    if resume is not None:
        # same size, other order would load without complaint and scramble every action id
        if list(resume["actions"]) != vocab.actions:
            raise ValueError(f"resume: the checkpoint's actions {resume['actions']} "
                             f"are not this vocabulary's {vocab.actions}")
        start = restore_training_state(resume, model=model, opt=opt, sampler=sampler, seen=seen)
        emit(LogLine("info", "resume", f"planner: continuing from step {start} of {steps}"))
    # built after the restore: a graph must see the optimizer state it will update in place
    train_step = make_train_step(model, opt, planner_loss(ranks.wrap(model), data, weights, device), cfg, device,
                                 ranks)
    periodic = PeriodicCheckpoints(cfg.checkpoint_every_s)

    def checkpoint() -> CheckpointReady:
        return CheckpointReady(steps_done, "planner", "planner", f"planner_{steps_done:06d}",
                               planner_payload(model, opt, vocab, steps_done,
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
        if ranks.distributed:
            # the global batch's summed weights, on the device: every rank holds the whole batch's rows
            train_step(lr, ranks.shard(idx), weights[data.plan_targets[idx]].sum() / ranks.world_size)
        else:
            train_step(lr, idx)
        announce_ready(train_step, "planner", emit)
        steps_done = step + 1
        seen.index_add_(0, idx, ones[: idx.numel()])
        window_steps += 1
        if periodic.due() and not last_step:
            emit(checkpoint())
            periodic.mark(steps_done)

        if (step + 1) % cfg.log_every == 0 or last_step:
            # the one host sync of the window
            loss_sum, correct_sum, token_sum = train_step.take()
            now = time.perf_counter()
            dt = max(now - window_t0, 1e-9)
            mean_loss = loss_sum / window_steps
            emit(MetricsLogged(step + 1, "planner", {
                "loss": mean_loss, "tf_acc": correct_sum / max(token_sum, 1.0), "lr": lr,
                "tokens_per_s": window_steps * cfg.batch_size * positions / dt,
                "step_ms": 1000.0 * dt / window_steps,
            }))
            last_loss = mean_loss
            window_steps, window_t0 = 0, now

    if stopped and window_steps:
        last_loss = train_step.take()[0] / window_steps
    train_step.close()
    cov_min, cov_mean = coverage(seen, data.goal_index, data.n_unique)
    emit(MetricsLogged(steps_done, "planner", {"coverage_min": cov_min, "coverage_mean": cov_mean}))
    if periodic.last_step != steps_done:
        emit(checkpoint())
    return PlannerTrainResult(steps_done, steps, stopped, last_loss, cov_min, cov_mean,
                              time.perf_counter() - t0, class_stats)


@torch.no_grad()
def greedy_plans(model: PlannerModel, goals: list[str], vocab: PlanVocab, device: torch.device,
                 max_len: int | None = None, batch_size: int = 256) -> list[list[int]]:
    """Greedy decoding from BOS, no teacher forcing -> per goal [BOS, ..., EOS] (cut after EOS).

    A row that never emits EOS stops after max_len tokens (default cfg.plan_len) and comes
    back without EOS, so it can never match an expected plan.
    """
    _check_vocab(model, vocab)
    model.eval()
    max_len = model.cfg.plan_len if max_len is None else min(max_len, model.cfg.plan_len)
    out: list[list[int]] = []
    for i in range(0, len(goals), batch_size):
        ids, valid = encode_encoder_batch(goals[i:i + batch_size], model.cfg.encoder.seq_len)
        ids, valid = ids.to(device), valid.to(device)
        B = ids.shape[0]
        seq = torch.full((B, 1), BOS, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        # plans are a handful of tokens: recompute the whole prefix each step, no kv cache
        for _ in range(max_len):
            nxt = model(ids, valid, seq)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        for row in seq.tolist():
            out.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return out


def _check_plan_bench(model: PlannerModel, bench: Bench, vocab: PlanVocab) -> None:
    if bench.kind != "plan":
        raise ValueError(f"{bench.path}: a {bench.kind} bench is not a plan bench")
    _check_vocab(model, vocab)
    for it in bench.items:
        n = len(text_bytes(it["goal"]))
        if n > model.cfg.encoder.seq_len:
            raise CorpusError(bench.path, it["line"], "goal",
                              f"{n} bytes do not fit the planner's seq_len of {model.cfg.encoder.seq_len}")
        for j, action in enumerate(it["plan"]):
            if action not in vocab.actions:
                raise CorpusError(bench.path, it["line"], f"plan[{j}]",
                                  f"unknown action {action!r}: this planner knows {', '.join(vocab.actions)}")
        need = 2 * len(it["plan"]) + 1
        if need > model.cfg.plan_len:
            raise CorpusError(bench.path, it["line"], "plan",
                              f"{len(it['plan'])} actions need {need} decoder positions, "
                              f"more than the planner's plan_len of {model.cfg.plan_len}")


def run_plan_bench(model: PlannerModel, bench: Bench, vocab: PlanVocab, device: torch.device) -> list[dict]:
    """Plan bench -> [{"line", "goal", "expected", "predicted", "correct"}], greedy decoding, exact
    match of the token names after stripping THINK..ENDTHINK (M-014, M-018)."""
    _check_plan_bench(model, bench, vocab)
    outputs = greedy_plans(model, [it["goal"] for it in bench.items], vocab, device)
    results = []
    for it, ids in zip(bench.items, outputs):
        expected = vocab.plan_tokens(vocab.encode(it["plan"]))
        predicted = vocab.plan_tokens(ids)
        results.append({"line": it["line"], "goal": it["goal"], "expected": expected,
                        "predicted": predicted, "correct": predicted == expected})
    return results


@torch.no_grad()
def teacher_forced_accuracy(model: PlannerModel, bench: Bench, vocab: PlanVocab, device: torch.device) -> float:
    """Share of non-PAD targets predicted right under teacher forcing. Reported beside the bench,
    never instead of it: a model can score 1.0 here and still derail when fed its own output."""
    _check_plan_bench(model, bench, vocab)
    model.eval()
    ids, valid = encode_encoder_batch([it["goal"] for it in bench.items], model.cfg.encoder.seq_len)
    inputs, targets = vocab.encode_batch([it["plan"] for it in bench.items], model.cfg.plan_len)
    logits = model(ids.to(device), valid.to(device), inputs.to(device))
    targets = targets.to(device)
    real = targets != PAD
    return ((logits.argmax(-1) == targets) & real).sum().item() / max(1, real.sum().item())


def planner_from_payload(payload: dict, device: torch.device) -> tuple[PlannerModel, PlanVocab]:
    vocab = PlanVocab(payload["actions"])
    if vocab.size != payload["vocab_size"]:
        raise ValueError(f"checkpoint: {len(vocab.actions)} actions make a PLAN_VOCAB of {vocab.size}, "
                         f"but the model was built for {payload['vocab_size']}")
    model = PlannerModel(PlannerConfig.from_dict(payload["model_args"]), payload["vocab_size"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), vocab
