"""The planner: goal bytes -> a plan of action intents, read off the goal where each step is written.

An Encoder reads the goal (LEFT-padded bytes), `step_layers` more blocks read its states, and a
head gives every byte a distribution over the plan vocabulary, where PAD is the CTC blank:

    goal bytes     c  a  r  g  o     c  l  e  a  n  ,     c  a  r  g  o     b  u  i  l  d
    greedy labels  _  _  _  _  _  _  _  _ clean _  _  _  _  _  _  _  _  _  _  _ build _  _

Collapsing repeats and dropping blanks gives the plan, in the order its steps are written:
[clean, build], rendered as STEP clean STEP build EOS. Trained with the CTC loss (Graves et al.,
2006), which sums over every placement of the steps, so no training line needs its step spans.

How many steps: a count head reads the goal's step count from the mean of its bytes' states
(a cross-entropy beside the CTC loss), and decoding takes the count and its most probable path
together (joint_count_path: the head's log-probability plus a share of the best path's with that
many runs of actions, Viterbi). Greedy decoding drops a step whose bytes all lean to the blank,
which is what a step phrased in words never trained does ("ok so refresh the lockfile and then
rg -l main" -> no step at all); told the count, the path places it where it is likeliest. The
head alone over-counts short unfamiliar goals, which the path's cost corrects.

Where the steps are and what each is (decode_plans with a reader, the brain's plans): the goal
is cut into pieces at its connectors ("," ";" "then" "and" ...), every cut and every count a
candidate, and the brain's policy, trained on every single-step phrasing, reads each piece. A
piece's action is the one the planner's strongest frame in it and the policy favour together,
and the cut kept is the one whose count, path and pieces score best (segment_steps). A CTC run
spikes anywhere inside its step's words, so cutting between the path's runs (the brain until
2026-12-03) split steps mid-word.

Why not a decoder that writes STEP a1 STEP a2 EOS token by token (the planner until 2026-12-03):
it had to learn both what each step is and how many there are from a pooled reading of the
whole goal, and on requests it was never trained on it dropped the later steps ("FORMAT AND
LINT" -> format; a fifth to a third of held-out plans came out too short). Here a step is
found where it is written, so a third step costs nothing more than a second, and a step's
intent is read from its own words, as the policy reads a request. Its step also costs half:
no decoder runs over the goal's positions again (benchmarks/generalisation.py, docs/benchmarks.md).

What the failure log asks of this model:
- no target class may dominate the loss (M-002): the targets are the actions alone (STEP and
  EOS are the plan's rendering, not targets), and the class_share gate checks their shares.
- nothing truncates: a goal or plan that does not fit is an error (M-008); a plan may have at
  most (plan_len - 2) // 2 steps, so that its rendering fits plan_len. (A goal of fewer bytes
  than its plan has steps cannot be aligned: its loss is zeroed, and its plan can only fail.)
- the bench is the decoded plans compared plan for plan, never the training loss, which is only
  reported beside it (M-014).
- THINK..ENDTHINK is stripped from an output before comparing plans (M-018).
- plan ids are range-checked against PLAN_VOCAB, the table they index (M-026).
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.config import PlannerConfig, TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import Bench, CorpusError
from navi_model.distributed import ONE_PROCESS, Ranks
from navi_model.events import CheckpointReady, EmitFn, LogLine, MetricsLogged
from navi_model.model import Block, Encoder, RMSNorm, _init_weights
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


class PlanOutputs(NamedTuple):
    frames: torch.Tensor  # (B, G, V): per goal byte, logits over the plan vocabulary (PAD = blank)
    counts: torch.Tensor | None  # (B, max_steps): logits of 1..max_steps steps; None without a count head


class PlannerModel(nn.Module):
    """Goal bytes -> per byte, logits over the plan vocabulary (PAD is the CTC blank), and the
    logits of the goal's step count."""

    def __init__(self, cfg: PlannerConfig, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        C, nh = cfg.encoder.d_model, cfg.encoder.n_heads
        self.encoder = Encoder(cfg.encoder)
        # bidirectional blocks over the encoder's states: where the encoder starts warm from the
        # policy's (which pools a whole request into one intent), these learn where a step begins
        self.blocks = nn.ModuleList(Block(C, nh) for _ in range(cfg.step_layers))
        self.norm = RMSNorm(C)
        self.head = nn.Linear(C, vocab_size)
        self.count_head = nn.Linear(C, cfg.max_steps) if cfg.count_head else None
        self.apply(_init_weights)

    def forward(self, goal_ids: torch.Tensor, goal_valid: torch.Tensor) -> PlanOutputs:
        G = goal_ids.shape[1]
        assert G <= self.cfg.encoder.seq_len, G
        x, _ = self.encoder(goal_ids, goal_valid)
        enc = self.encoder
        for block in self.blocks:
            x = block(x, enc.rope_cos[:G], enc.rope_sin[:G], attn_mask=goal_valid[:, None, None, :])
        h = self.norm(x)
        counts = None
        if self.count_head is not None:
            # the mean of the real bytes' states: how many steps is a reading of the whole goal
            m = goal_valid.unsqueeze(-1).to(h.dtype)
            counts = self.count_head((h * m).sum(1) / m.sum(1).clamp_min(1))
        return PlanOutputs(self.head(h), counts)


def plan_actions(plan_targets: torch.Tensor) -> torch.Tensor:
    """(N, P) targets [STEP a1 STEP a2 ... EOS PAD...] -> (N, P // 2) actions [a1 a2 ... PAD...]: the
    CTC targets, a strided view (no host sync inside a step). Actions sit at the odd positions, STEP
    and EOS at the even ones, PAD after."""
    return plan_targets[:, 1::2]


def action_shares(plan_targets: torch.Tensor, vocab: PlanVocab) -> dict[str, float]:
    """Each action's share of the CTC targets, and the largest (M-002: no class may dominate the
    loss). STEP and EOS are no targets: the plan's structure is the alignment's, not a token's.

    Runs once per data set: it reads counts back to the host."""
    acts = plan_actions(plan_targets).reshape(-1)
    counts = torch.bincount(acts[acts != PAD], minlength=vocab.size).double()
    total = max(float(counts.sum()), 1.0)
    stats = {f"share/{name}": float(counts[vocab.id(name)]) / total for name in vocab.actions}
    stats["share_max"] = max(stats.values(), default=0.0)
    stats["classes_present"] = float((counts > 0).sum())
    return stats


def plan_loss(outputs: PlanOutputs | torch.Tensor, goal_valid: torch.Tensor, plan_targets: torch.Tensor,
              denom: torch.Tensor | float | None = None) -> torch.Tensor:
    """CTC loss of each goal's plan per step of it, plus the cross-entropy of its step count where
    the model has a count head, summed over the rows and divided by denom (default: the rows here;
    under DDP the global batch's rows over world_size, so that DDP's gradient average gives the
    global batch's gradient). outputs: the model's, or frame logits alone (no count term).

    The goal is left-padded and CTC reads frames from the first: each row's bytes move to the
    front (a gather, no host sync), and its frame count is its number of bytes."""
    logits, counts = (outputs.frames, outputs.counts) if isinstance(outputs, PlanOutputs) else (outputs, None)
    B, G, V = logits.shape
    lengths = goal_valid.sum(dim=1)
    src = (torch.arange(G, device=logits.device)[None, :] + (G - lengths)[:, None]).clamp_max(G - 1)
    # at least float32 (bf16 under autocast loses the sums), never below the input: float64 stays
    # float64 for the grad_check gate
    dtype = torch.promote_types(logits.dtype, torch.float32)
    frames = logits.to(dtype).log_softmax(-1)
    frames = frames.gather(1, src[:, :, None].expand(-1, -1, V))
    actions = plan_actions(plan_targets)
    steps = (actions != PAD).sum(dim=1)
    per_row = F.ctc_loss(frames.transpose(0, 1), actions, lengths, steps, blank=PAD, reduction="none",
                         zero_infinity=True)
    per_row = per_row / steps.clamp_min(1)
    if counts is not None:
        # a plan longer than the head can say is refused before training (plan_len); clamp for safety
        want = (steps - 1).clamp(0, counts.shape[1] - 1)
        per_row = per_row + F.cross_entropy(counts.to(dtype), want, reduction="none")
    return per_row.sum() / (B if denom is None else denom)


def greedy_actions(logits: torch.Tensor, goal_valid: torch.Tensor) -> torch.Tensor:
    """(B, G, V) -> (B, G) greedy CTC labels compacted to the front, PAD after: the best label of each
    real byte, repeats collapsed, blanks dropped. Tensor ops only."""
    return _compact(logits.argmax(-1), goal_valid)


def counted_actions(logits: torch.Tensor, goal_valid: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """(B, G, V) frames and (B,) step counts -> (B, G) labels compacted to the front, PAD after:
    the runs of counted_path."""
    return _compact(counted_path(logits, goal_valid, steps), goal_valid)


def counted_path(logits: torch.Tensor, goal_valid: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """(B, G, V) frames and (B,) step counts -> (B, G) the label of every byte (PAD on pads) on the
    most probable CTC path with exactly steps[b] runs of actions (Viterbi; a run is a label
    repeated without a blank between, two runs of one label need a blank between them).

    Greedy decoding drops a step whose frames are all less sure than the blank (on requests never
    trained, "rg -l main" read as nothing); told the count, the path must place that step where it
    is likeliest. A count over the goal's bytes is cut to its bytes. Tensor ops over the batch, a
    loop over positions."""
    steps = torch.minimum(steps.clamp_min(1), goal_valid.sum(1))
    last, back = _viterbi(logits, goal_valid, int(steps.max()))
    return _backtrack(last, back, steps, goal_valid)


# how much the frames' path log-prob weighs against the count head's (a path sums a log-prob over
# every byte, the head gives one): any weight from 0.05 to 0.5 read the held-out-core plans' step
# counts best (0.975, tiny, seeds 1 and 2); 1 over-trusted the frames on terse goals
COUNT_PATH_WEIGHT = 0.2


def joint_count_path(logits: torch.Tensor, goal_valid: torch.Tensor, count_logits: torch.Tensor) -> torch.Tensor:
    """(B, G, V) frames and (B, M) count logits (1..M steps) -> (B, G) labels of every byte: the
    path of the step count k that maximises log P_count(k) + w log P(best CTC path with k runs),
    w = COUNT_PATH_WEIGHT.

    The count head alone reads the count from a pooled summary of the goal and over-counts short
    unfamiliar goals ("yarn install" -> 2 steps, the second forced into "ll"); a count whose best
    path must split a word into steps pays for it in the frames' log-probabilities. Tiny, seed 1:
    wild plans of the right length 0.85 -> 0.94, held-out-core plans 0.95 -> 0.975."""
    M = count_logits.shape[1]
    last, back = _viterbi(logits, goal_valid, M)
    best = last.max(-1).values  # (B, M + 1): the log-prob of the best path with k runs
    score = count_logits.float().log_softmax(-1) + COUNT_PATH_WEIGHT * best[:, 1:]
    score = score.masked_fill(torch.arange(1, M + 1, device=score.device) > goal_valid.sum(1, keepdim=True),
                              torch.finfo(torch.float32).min)
    return _backtrack(last, back, score.argmax(-1) + 1, goal_valid)


def _viterbi(logits: torch.Tensor, goal_valid: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Viterbi of counted_path over paths of up to K runs -> the last byte's scores (B, K + 1, V):
    the log-prob of the best path ending in (k runs, label), and the pointers (G, B, K + 1, V)."""
    B, G, V = logits.shape
    dev = logits.device
    lp = logits.float().log_softmax(-1)
    neg = torch.finfo(torch.float32).min / 4
    first = len(SPECIALS)  # only actions make runs; the head learns never to pick another special
    # a left pad is a blank for certain, so every row's path starts at the grid's first column
    pad_frame = torch.full((V,), neg, device=dev)
    pad_frame[PAD] = 0.0
    lp = torch.where(goal_valid[..., None], lp, pad_frame)
    dp = torch.full((B, K + 1, V), neg, device=dev)
    dp[:, 0, PAD] = lp[:, 0, PAD]
    dp[:, 1, first:] = lp[:, 0, first:]
    back = torch.zeros((G, B, K + 1, V), dtype=torch.long, device=dev)  # the state before: k * V + v
    same_k = torch.arange(K + 1, device=dev)[None, :] * V  # a blank keeps its run count
    prev_k = torch.arange(K, device=dev)[None, :, None]  # runs before a label's state at k = prev_k + 1
    labels = torch.arange(V, device=dev)
    for t in range(1, G):
        best, arg = dp.max(-1)  # (B, K+1): into a blank from anything with as many runs
        top2, idx2 = dp[:, :-1].topk(2, dim=-1)  # a new run at k from k-1 runs, of another label
        other = torch.where(idx2[..., :1] == labels, top2[..., 1:], top2[..., :1])  # (B, K, V)
        other_idx = torch.where(idx2[..., :1] == labels, idx2[..., 1:], idx2[..., :1])
        stay = dp[:, 1:]  # the same run goes on
        new_run = other > stay
        nd = torch.full_like(dp, neg)
        nd[:, :, PAD] = best + lp[:, t, None, PAD]
        nd[:, 1:, first:] = (torch.where(new_run, other, stay) + lp[:, t, None, :])[..., first:]
        bp = torch.zeros_like(back[0])
        bp[:, 1:] = torch.where(new_run, prev_k * V + other_idx, (prev_k + 1) * V + labels)
        bp[:, :, PAD] = same_k + arg  # after the runs' pointers, which filled every column
        back[t] = bp
        dp = nd
    return dp, back


def _backtrack(dp: torch.Tensor, back: torch.Tensor, steps: torch.Tensor, goal_valid: torch.Tensor) -> torch.Tensor:
    """The labels of the best path with steps[b] runs, read back from _viterbi's pointers."""
    B, G = goal_valid.shape
    V = dp.shape[-1]
    dev = dp.device
    rows = torch.arange(B, device=dev)
    state = steps * V + dp[rows, steps].argmax(-1)
    path = torch.empty((B, G), dtype=torch.long, device=dev)
    for t in range(G - 1, -1, -1):
        path[:, t] = state % V
        if t:
            state = back[t].view(B, -1)[rows, state]
    return torch.where(goal_valid, path, torch.full_like(path, PAD))


def _compact(best: torch.Tensor, goal_valid: torch.Tensor) -> torch.Tensor:
    """(B, G) per-byte labels -> runs' labels at the front, PAD after."""
    best = torch.where(goal_valid, best, torch.full_like(best, PAD))
    # left-padded: a pad before the first byte is PAD, so the first real label always counts as new
    prev = F.pad(best, (1, 0), value=PAD)[:, :-1]
    keep = (best != PAD) & (best != prev)
    slot = torch.cumsum(keep.long(), dim=1) - 1
    G = best.shape[1]
    out = torch.full((best.shape[0], G + 1), PAD, dtype=torch.long, device=best.device)
    out.scatter_(1, torch.where(keep, slot, G), torch.where(keep, best, PAD))
    return out[:, :G]


def decode_path(outputs: PlanOutputs, goal_valid: torch.Tensor) -> torch.Tensor:
    """The planner's reading of each goal's bytes, (B, G) labels (PAD on blanks and pads): the
    path of the jointly best count where the model has a count head (joint_count_path), else each
    byte's best label."""
    if outputs.counts is None:
        return outputs.frames.argmax(-1).masked_fill(~goal_valid, PAD)
    return joint_count_path(outputs.frames, goal_valid, outputs.counts)


def decode_actions(outputs: PlanOutputs, goal_valid: torch.Tensor) -> torch.Tensor:
    """The planner's reading of each goal, (B, G) actions compacted to the front (decode_path's
    runs)."""
    return _compact(decode_path(outputs, goal_valid), goal_valid)


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


def planner_loss(model: PlannerModel, data: PlanData, device: torch.device) -> LossFn:
    """A batch of row indices [, the loss denominator] -> (CTC loss, plans right, plans).

    "Plans right": rows whose greedy reading (greedy_actions) is their plan, the training accuracy
    reported beside the loss. Greedy, not the counted decoding the benches use: that one loops over
    the goal's bytes, too slow for every step. The denominator (see plan_loss) is given under DDP only."""
    use_bf16 = device.type == "cuda"
    # the all-pad goal columns go on the CPU (a CUDA step keeps its shapes for compile): CTC reads
    # only each row's own bytes, so nothing the model learns depends on them
    trim = device.type != "cuda"

    def loss_fn(idx: torch.Tensor, denom: torch.Tensor | None = None):
        targets = data.plan_targets[idx]
        goal_ids, goal_valid = data.goal_ids[idx], data.goal_valid[idx]
        if trim:
            goal_ids, goal_valid = drop_shared_left_padding(goal_ids, goal_valid)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            outputs = model(goal_ids, goal_valid)
        want = plan_actions(targets)
        got = F.pad(greedy_actions(outputs.frames.detach(), goal_valid), (0, want.shape[1]), value=PAD)
        S = want.shape[1]
        # right: the first S labels are the plan and nothing follows them
        right = ((got[:, :S] == want).all(dim=1) & (got[:, S:] == PAD).all(dim=1)).sum()
        return plan_loss(outputs, goal_valid, targets, denom), right, torch.ones_like(idx, dtype=torch.float).sum()

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

    Loss: the CTC loss of each goal's plan per step of it, the mean over the batch (plan_loss).
    resume: a payload this trainer emitted earlier; the run continues from its step to `steps`.
    ranks: under DDP, every rank draws the same global batch and trains on its shard; the loss is
    divided by the global batch's rows over world_size, which DDP's average undoes.
    """
    _check_vocab(model, vocab)
    ranks.check_batch(cfg.batch_size, "planner")
    # no CUDA graph: torch's CTC loss reads the lengths back to the host, which a capture forbids
    cfg = replace(cfg, cuda_graph=False)
    model.to(device).train()
    opt = make_optimizer(model, cfg, device)
    sampler = EpochSampler(data.n, cfg.batch_size, device, cfg.seed, data.goal_valid.sum(1), cfg.length_buckets)
    positions = data.goal_ids.shape[1]

    class_stats = action_shares(data.plan_targets, vocab)
    emit(MetricsLogged(0, "planner", class_stats))

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
    train_step = make_train_step(model, opt, planner_loss(ranks.wrap(model), data, device), cfg, device, ranks)
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
            train_step(lr, ranks.shard(idx), idx.numel() / ranks.world_size)
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
                "loss": mean_loss, "plan_acc": correct_sum / max(token_sum, 1.0), "lr": lr,
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


# A reader of plan steps: the texts of a goal's steps -> (N, actions) log-probabilities over the
# planner's actions, in PlanVocab.actions order (a row of zeros: no opinion on that text).
# navi_model/evaluate.policy_step_reader makes one of the brain's policy.
StepReader = Callable[[list[str]], torch.Tensor]


def label_runs(row: list[int]) -> list[tuple[int, int, int]]:
    """One goal's per-byte labels -> its runs (label, first column, last column), blanks dropped:
    a label repeated without a blank between is one run (one plan step)."""
    runs: list[tuple[int, int, int]] = []
    for t, v in enumerate(row):
        if v == PAD:
            continue
        if runs and runs[-1][0] == v and runs[-1][2] == t - 1:
            runs[-1] = (v, runs[-1][1], t)
        else:
            runs.append((v, t, t))
    return runs


# where one step's words end and the next one's begin: the catalog's connectors (catalog.PAIR_JOINS)
_CUT_MARKS = b",;"
_CUT_WORDS = (b"then", b"and", b"after", b"followed", b"first")
_EDGE_WORDS = ("and then", "after that", "followed by", "then", "and", "first")


def _connector_starts(b: bytes, lo: int, hi: int) -> list[int]:
    """Positions in b[lo..hi] where a connector begins: a comma or semicolon, or a connector word
    after a space ("then", "and", "after", ...; case-blind)."""
    low = b.lower()
    out = [j for j in range(lo, min(hi + 1, len(b))) if b[j] in _CUT_MARKS]
    for j in range(max(lo, 1), min(hi + 1, len(b))):
        if low[j - 1] == 32 and any(low.startswith(w, j) and _word_ends(low, j + len(w)) for w in _CUT_WORDS):
            out.append(j)
    return sorted(out)


def _word_ends(b: bytes, j: int) -> bool:
    return j == len(b) or not chr(b[j]).isalnum()


def _bare(text: str) -> str:
    """A step's text without the connectors and marks at its edges: "and then run lint," -> "run lint"."""
    text = text.strip(" ,;.")
    if text.lower() in _EDGE_WORDS:
        return ""
    changed = True
    while changed:
        changed = False
        low = text.lower()
        for w in _EDGE_WORDS:
            if low.startswith(w + " "):
                text, changed = text[len(w):].strip(" ,;."), True
                break
            if low.endswith(" " + w):
                text, changed = text[:-len(w)].strip(" ,;."), True
                break
    return text


def _path_cuts(b: bytes, runs: list[tuple[int, int, int]], off: int) -> list[int]:
    """The byte positions of b where step_texts cuts between the runs of a path (columns of a grid
    left-padded by off bytes)."""
    cuts = []
    for (_, _, end), (_, start, _) in zip(runs, runs[1:]):
        lo, hi = end + 1 - off, start - off
        mid = (lo + hi) // 2
        marks = _connector_starts(b, lo, hi) or [j for j in range(lo, hi + 1) if j < len(b) and b[j] == 32]
        cuts.append(min(marks, key=lambda j: abs(j - mid)) if marks else mid)
    return cuts


def _pieces(b: bytes, cuts: tuple[int, ...] | list[int]) -> list[str]:
    bounds = [0, *cuts, len(b)]
    return [_bare(b[a:c].decode("utf-8", "replace")) for a, c in zip(bounds, bounds[1:])]


def step_texts(goal: str, runs: list[tuple[int, int, int]], seq_len: int) -> list[str]:
    """The text of each run's step. Between two runs the goal is cut where a connector begins
    ("," ";" "then" "and" "after" ...), the one nearest the middle of the bytes between the runs;
    without one, at the space nearest that middle, else at the middle. Each text drops the
    connectors at its edges ("fmt the code | and then run lint" -> "fmt the code", "run lint").
    Columns are of the LEFT-padded grid of seq_len. A text left empty is read as no opinion."""
    b = bytes(text_bytes(goal))
    return _pieces(b, _path_cuts(b, runs, seq_len - len(b)))


def reread_steps(frames: torch.Tensor, runs: list[tuple[int, int, int]], read: torch.Tensor) -> list[int]:
    """Each action run's label, chosen by the CTC frames and a reader together: the run's mean
    log-probability of each action (among actions) plus the reader's for its step's text. Where
    the planner's reading of an unseen phrasing is unsure the policy, trained on every single-step
    phrasing, often is not (tiny, 2-core CPU, 3 seeds: held-out-core plans 0.683 -> 0.758, wild
    0.827 -> 0.809, where the policy itself misreads the step). frames: (G, V) logits of one goal;
    read: (len(runs), actions). A run of a special (a label the head should never pick) is kept
    as it came."""
    first = len(SPECIALS)
    lp = frames.float()[:, first:].log_softmax(-1)
    out = []
    for (v, t0, t1), r in zip(runs, read):
        out.append(v if v < first else first + int((lp[t0:t1 + 1].mean(0) + r.to(lp.device)).argmax()))
    return out


# how much the reading of a cut's pieces weighs against the count's and the path's scores (segment_steps).
# Read off the held-out-core plans of three tiny runs (0.1 and 0.3 alike, 1 over-trusted the pieces)
SEGMENT_WEIGHT = 0.1
# the most connector cuts tried for one count: a goal of many commas ("a,b,c,...") would otherwise
# try C(marks, k - 1) of them; past this, that count takes the cut between its path's runs
MAX_CUTS = 512


def segment_steps(outputs: PlanOutputs, goal_valid: torch.Tensor, goals: list[str],
                  reader: StepReader) -> list[list[int]]:
    """Each goal's steps, cut at its connectors and read -> its plan's action labels.

    The CTC path places a step's run anywhere inside the step's words, and two runs can spike in
    one step ("which files did i t|ouch"), so cutting between the path's runs split steps where no
    user would. The candidates here are, for every count k, every cut of the goal into k pieces at
    its connectors ("," ";" "then" "and" ...); where the connectors are too few for k pieces
    ("cargo clean cargo build"), or so many that their cuts are over MAX_CUTS, the cut between the
    runs of the best path with k runs.

    A piece's label is the action that maximises the planner's strongest frame for it inside the
    piece (full softmax, the blank included: a piece with no step in it has no spike) plus the
    reader's log-probability of the piece's text. The candidate kept maximises log P_count(k) +
    COUNT_PATH_WEIGHT * log P(best path with k runs) + SEGMENT_WEIGHT * the sum of its pieces'
    scores. A piece left empty by its connectors ("," of ", then") makes no candidate; a goal with
    none keeps its path's labels.

    Tiny, 2-core CPU, the three runs of the 80-plan bench (docs/benchmarks.md): held-out-core
    plans 0.76 -> 0.85, seen 0.94 -> 0.98, wild 0.85 -> 0.90.
    """
    first = len(SPECIALS)
    B, G, _ = outputs.frames.shape
    M = outputs.counts.shape[1]
    last, back = _viterbi(outputs.frames, goal_valid, M)
    base = (outputs.counts.float().log_softmax(-1) + COUNT_PATH_WEIGHT * last.max(-1).values[:, 1:]).cpu()
    dev = goal_valid.device
    paths = [_backtrack(last, back, torch.full((B,), k, device=dev), goal_valid).tolist() for k in range(1, M + 1)]
    spikes = outputs.frames.float().log_softmax(-1)[..., first:].cpu()  # (B, G, actions)
    cands: list[list[tuple[int, list[tuple[int, int]], list[str]]]] = []  # per goal: (k, spans, texts)
    for g, goal in enumerate(goals):
        b = bytes(text_bytes(goal))
        off = G - len(b)
        marks = _connector_starts(b, 1, len(b) - 1)
        mine = []
        for k in range(1, min(M, len(b)) + 1):
            few = math.comb(len(marks), k - 1) <= MAX_CUTS
            cuts = set(itertools.combinations(marks, k - 1)) if few else set()
            runs = label_runs(paths[k - 1][g])
            if not cuts and len(runs) == k:  # too few connectors for k steps: cut between the path's runs
                cuts.add(tuple(_path_cuts(b, runs, off)))
            for cut in sorted(cuts):
                bounds = [0, *cut, len(b)]
                if any(x >= y for x, y in zip(bounds, bounds[1:])):
                    continue
                texts = _pieces(b, cut)
                if all(texts):
                    mine.append((k, [(off + x, off + y) for x, y in zip(bounds, bounds[1:])], texts))
        cands.append(mine)
    unique = sorted({t for mine in cands for _, _, texts in mine for t in texts})
    read = dict(zip(unique, reader(unique).float())) if unique else {}
    out: list[list[int]] = []
    joint: list[list[int]] | None = None  # the jointly counted path, for a goal with no candidate
    for g, mine in enumerate(cands):
        best: tuple[float, list[int]] | None = None
        for k, spans, texts in mine:
            total, labels = float(base[g, k - 1]), []
            for (x, y), t in zip(spans, texts):
                score = spikes[g, x:y].max(0).values + read[t]
                labels.append(first + int(score.argmax()))
                total += SEGMENT_WEIGHT * float(score.max())
            if best is None or total > best[0]:
                best = (total, labels)
        if best is None:  # nothing to read: the path's own steps (decoded once for the batch)
            joint = joint if joint is not None else decode_path(outputs, goal_valid).tolist()
            best = (0.0, [v for v, _, _ in label_runs(joint[g])])
        out.append(best[1])
    return out


@torch.no_grad()
def decode_plans(model: PlannerModel, goals: list[str], vocab: PlanVocab, device: torch.device,
                 batch_size: int = 256, reader: StepReader | None = None) -> list[list[int]]:
    """The planner's decoding (decode_path: counted where it has a count head, else greedy) ->
    per goal [BOS, STEP, a1, STEP, a2, ..., EOS], the plan vocabulary's rendering. With a reader
    (the brain's plans), the goal is cut into its steps at its connectors and each piece read by the
    planner's frames and the reader together (segment_steps); without a count head, the greedy
    path's steps are each re-read (reread_steps). A label that is no action (a
    special the head should never pick) is kept as it came, so the plan it is in cannot match an
    expected one."""
    _check_vocab(model, vocab)
    model.eval()
    seq_len = model.cfg.encoder.seq_len
    out: list[list[int]] = []
    for i in range(0, len(goals), batch_size):
        chunk = goals[i:i + batch_size]
        ids, valid = encode_encoder_batch(chunk, seq_len)
        valid = valid.to(device)
        outputs = model(ids.to(device), valid)
        if reader is not None and outputs.counts is not None:
            labels = segment_steps(outputs, valid, chunk, reader)
        else:
            all_runs = [label_runs(row) for row in decode_path(outputs, valid).tolist()]
            if reader is None:
                labels = [[v for v, _, _ in runs] for runs in all_runs]
            else:  # no count head: the greedy path's steps, each re-read
                texts = [step_texts(goal, runs, seq_len) for goal, runs in zip(chunk, all_runs)]
                read = reader([t for ts in texts for t in ts]).split([len(ts) for ts in texts])
                labels = [reread_steps(f, runs, r) for f, runs, r in zip(outputs.frames, all_runs, read)]
        for row in labels:
            plan = [BOS]
            for t in row:
                plan += [STEP, t] if t >= len(SPECIALS) else [t]
            out.append(plan + [EOS])
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
                              f"{len(it['plan'])} actions render as {need} plan tokens, "
                              f"more than the planner's plan_len of {model.cfg.plan_len}")


def run_plan_bench(model: PlannerModel, bench: Bench, vocab: PlanVocab, device: torch.device,
                   reader: StepReader | None = None) -> list[dict]:
    """Plan bench -> [{"line", "goal", "expected", "predicted", "correct"}], decode_plans (with the
    reader where one is given: the brain's plans), exact match of the token names after stripping
    THINK..ENDTHINK (M-014, M-018)."""
    _check_plan_bench(model, bench, vocab)
    outputs = decode_plans(model, [it["goal"] for it in bench.items], vocab, device, reader=reader)
    results = []
    for it, ids in zip(bench.items, outputs):
        expected = vocab.plan_tokens(vocab.encode(it["plan"]))
        predicted = vocab.plan_tokens(ids)
        results.append({"line": it["line"], "goal": it["goal"], "expected": expected,
                        "predicted": predicted, "correct": predicted == expected})
    return results


@torch.no_grad()
def bench_loss(model: PlannerModel, bench: Bench, vocab: PlanVocab, device: torch.device) -> float:
    """The training loss (CTC, per step) on the bench's plans. Reported beside the bench, never
    instead of it: a loss can fall while the decoded plans stay wrong (M-014)."""
    _check_plan_bench(model, bench, vocab)
    model.eval()
    ids, valid = encode_encoder_batch([it["goal"] for it in bench.items], model.cfg.encoder.seq_len)
    _, targets = vocab.encode_batch([it["plan"] for it in bench.items], model.cfg.plan_len)
    valid = valid.to(device)
    return plan_loss(model(ids.to(device), valid), valid, targets.to(device)).item()


def planner_from_payload(payload: dict, device: torch.device) -> tuple[PlannerModel, PlanVocab]:
    vocab = PlanVocab(payload["actions"])
    if vocab.size != payload["vocab_size"]:
        raise ValueError(f"checkpoint: {len(vocab.actions)} actions make a PLAN_VOCAB of {vocab.size}, "
                         f"but the model was built for {payload['vocab_size']}")
    model = PlannerModel(PlannerConfig.from_dict(payload["model_args"]), payload["vocab_size"])
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), vocab
