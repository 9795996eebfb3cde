"""Preflight measurements: structural checks that run before step 0 and can fail a run.

- grad_check: autograd against central finite differences, float64 copies (M-001, M-009)
- grad_flow: every parameter gets a finite, non-zero gradient from a dummy loss (M-032)
- padding_gate: encoder batches left-padded, decoder batches right-padded, BOS at 0 (M-003)
- vocab_gate: every id inside the embedding table it indexes (M-026)

Each returns a GateVerdict built with gates.gate(). Tested by

    PYTHONPATH=. python -m pytest tests/test_preflight.py -q
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.config import GateThresholds, PlannerConfig, TalkerConfig
from navi_model.data import PolicyData
from navi_model.gates import GateVerdict, gate
from navi_model.model import EncoderConfig, PolicyModel
from navi_model.planner import BOS as PLAN_BOS
from navi_model.planner import EOS as PLAN_EOS
from navi_model.planner import PAD as PLAN_PAD
from navi_model.planner import SPECIALS as PLAN_SPECIALS
from navi_model.planner import PlanData, PlannerModel, PlanVocab, plan_loss
from navi_model.talker import TalkData, TalkerModel
from navi_model.vocab import BYTE, BYTE_VOCAB, TALK, TALK_BOS, TALK_EOS, TALK_PAD, TALK_VOCAB, Vocabulary

BATCH = 3  # rows of a dummy batch: enough for distinct lengths and batch statistics


# --- small models and their losses

def small_models(n_intents: int, n_actions_vocab: int) -> dict[str, nn.Module]:
    """Tiny float64 policy, planner and talker; n_actions_vocab is the planner's vocabulary size
    (PlanVocab.size: specials plus actions)."""
    # the encoder's every reading: case folding, small n-gram and word tables, as the profiles use them
    enc = dict(seq_len=24, d_model=16, n_layers=1, n_heads=2, fold_case=True, ngram_buckets=61, word_buckets=31)
    # seeded for the same models every time, in a forked generator so the caller's seed is untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = {
            # two members and a talker of two encoders: the ensembles' paths are checked too
            "policy": PolicyModel(EncoderConfig(**enc), n_intents, members=2),
            "planner": PlannerModel(PlannerConfig(encoder=EncoderConfig(**enc), step_layers=1, plan_len=8),
                                    n_actions_vocab),
            "talker": TalkerModel(TalkerConfig(encoder=EncoderConfig(**enc), dec_layers=1, prefix_k=2, memory_k=1,
                                               response_len=12, encoders=2)),
        }
    return {name: m.double() for name, m in models.items()}


def _encoder_batch(n: int, seq_len: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # random bytes, left-padded: each row's real bytes sit at the end, as encode_encoder_batch puts them
    ids = torch.randint(0, BYTE_VOCAB, (n, seq_len), generator=gen)
    lengths = torch.randint(1, seq_len + 1, (n,), generator=gen)
    valid = torch.arange(seq_len)[None, :] >= (seq_len - lengths)[:, None]
    return torch.where(valid, ids, torch.zeros_like(ids)), valid


def _decoder_batch(n: int, seq_len: int, vocab: int, pad: int, bos: int,
                   gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # right-padded: BOS at 0, random non-PAD tokens, PAD after each row's length; targets are
    # random non-PAD tokens where the input is real, PAD (ignored by the loss) elsewhere
    lengths = torch.randint(2, seq_len + 1, (n,), generator=gen)
    real = torch.arange(seq_len)[None, :] < lengths[:, None]
    tokens = torch.randint(0, vocab - 1, (n, seq_len), generator=gen)
    tokens = tokens + (tokens >= pad).long()  # skip PAD itself
    inputs = torch.where(real, tokens, torch.full_like(tokens, pad))
    inputs[:, 0] = bos
    targets = torch.randint(0, vocab - 1, (n, seq_len), generator=gen)
    targets = torch.where(real, targets + (targets >= pad).long(), torch.full_like(targets, pad))
    return inputs, targets


def dummy_batch(name: str, model: nn.Module, gen: torch.Generator) -> tuple:
    """A small batch for model `name` drawn from gen (the same seed gives the same batch)."""
    T = model.cfg.seq_len if name == "policy" else model.cfg.encoder.seq_len
    if name == "policy":
        ids, valid = _encoder_batch(BATCH, T, gen)
        return ids, valid, torch.randint(0, model.n_intents, (BATCH,), generator=gen)
    if name == "planner":
        ids, valid = _encoder_batch(BATCH, T, gen)
        # plans of 1 to 3 random actions of a vocabulary the model's size; at least 6 bytes a goal, so
        # each row has frames enough for its steps with a blank between repeats
        valid[:, -6:] = True
        ids = torch.where(valid, ids, torch.zeros_like(ids))
        vocab = PlanVocab([f"a{i}" for i in range(model.vocab_size - len(PLAN_SPECIALS))])
        actions = torch.randint(0, len(vocab.actions), (BATCH, 3), generator=gen)
        steps = torch.randint(1, 4, (BATCH,), generator=gen)
        plans = [[vocab.actions[a] for a in actions[i, : steps[i]].tolist()] for i in range(BATCH)]
        return ids, valid, vocab.encode_batch(plans, model.cfg.plan_len)[1]
    if name == "talker":
        K = model.cfg.memory_k
        ids, valid = _encoder_batch(BATCH * (K + 1), T, gen)
        prompt_ids, prompt_valid = ids[:BATCH], valid[:BATCH]
        mem_ids, mem_valid = ids[BATCH:].view(BATCH, K, T), valid[BATCH:].view(BATCH, K, T)
        # row 0 without memory, the others with: both paths of the prefix mask get exercised
        present = torch.ones(BATCH, K, dtype=torch.bool)
        present[0] = False
        inputs, targets = _decoder_batch(BATCH, model.cfg.response_len, TALK_VOCAB, TALK_PAD, TALK_BOS, gen)
        return prompt_ids, prompt_valid, mem_ids, mem_valid, present, inputs, targets
    raise ValueError(f"unknown model {name!r} (known: policy, planner, talker)")


def model_loss(name: str, model: nn.Module, batch: tuple) -> torch.Tensor:
    """The model's training loss on batch, in the model's dtype.

    talk_loss casts the logits to float32, which would bury a float64 finite difference in
    rounding noise; this is its formula (PAD targets ignored) without the cast. plan_loss keeps
    float64 as it is.
    """
    if name == "policy":  # as train.policy_loss: each member's cross-entropy, averaged
        ids, valid, labels = batch
        logits = model(ids, valid, per_member=True)
        return F.cross_entropy(logits.flatten(0, 1), labels.repeat(logits.shape[0]))
    if name == "planner":
        ids, valid, targets = batch
        return plan_loss(model(ids, valid), valid, targets)
    if name == "talker":
        *inputs, targets = batch
        logits = model(*inputs)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=TALK_PAD)
    raise ValueError(f"unknown model {name!r} (known: policy, planner, talker)")


def _loss_on_fixed_batch(name: str, model: nn.Module, seed: int = 0) -> torch.Tensor:
    # train mode: the talker's batch norm uses batch statistics there, as in training; it is
    # deterministic (no dropout anywhere), so repeated forwards agree to the last bit
    model.train()
    return model_loss(name, model, dummy_batch(name, model, torch.Generator().manual_seed(seed)))


@contextmanager
def _scratch(model: nn.Module):
    # every train-mode forward moves the batch norm's running statistics; a measurement should
    # leave the model's buffers and mode as it found them
    was_training = model.training
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        model.train(was_training)


# --- gradient gates

def _kind(param_name: str) -> str:
    for kind, keys in (("norm", ("norm",)), ("embedding", ("embed",)), ("attention", ("attn.",)),
                       ("mlp", ("mlp.",)), ("head", ("head",))):
        if any(k in param_name for k in keys):
            return kind
    return "other"


def _pick_entries(named_grads: list[tuple[str, torch.Tensor]], n: int) -> list[tuple[str, int]]:
    """Up to n (parameter, flat index) pairs, round-robin over parameter kinds so embedding,
    attention, mlp, norm and head tensors all get checked; in each tensor the entry with the
    largest gradient: deterministic, and the one whose finite difference stands furthest above
    the loss's rounding noise."""
    kinds: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, g in named_grads:
        kinds.setdefault(_kind(name), []).append((name, g))
    queues = list(kinds.values())
    picked: list[tuple[str, int]] = []
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                name, g = queue.pop(0)
                flat = g.reshape(-1).abs()
                i = int(flat.argmax())
                if flat[i] > 1e-6:  # a zero gradient has no relative error to speak of
                    picked.append((name, i))
    return picked


def grad_check(models: dict[str, nn.Module], threshold: float = GateThresholds().max_grad_check_error,
               n_entries: int = 8, eps: float = 1e-5) -> GateVerdict:
    """Autograd's gradient against (f(x+eps) - f(x-eps)) / 2eps on n_entries scalars per model.

    Relative error per entry: |a - n| / max(|a| + |n|, 1e-12). It is symmetric and bounded by 1,
    so a backward off by 10^6 (M-001) or of the wrong sign reads as ~1. Models are cast to
    float64 in place (small_models already are): float32 rounding alone exceeds the threshold.

    eps 1e-5, not 1e-6: the smallest gradients checked (norm weights, ~2e-5 at init) sit near
    the rounding noise of the loss divided by 2eps; measured over 8 batches the worst entry
    was 2.8e-5 at eps 1e-6 (above the 1e-5 threshold), 2.7e-6 at 1e-5, 1.6e-5 at 1e-4.
    """
    per_model: dict[str, dict] = {}
    worst = (-1.0, "", "", 0)  # error, model, parameter, index
    for mname, model in models.items():
        model.double()
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        with _scratch(model):
            loss = _loss_on_fixed_batch(mname, model)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            named = {n: g for n, g in zip(params, grads) if g is not None}
            entries = []
            for pname, i in _pick_entries(list(named.items()), n_entries):
                flat = params[pname].data.view(-1)
                a = float(named[pname].reshape(-1)[i])
                x = flat[i].item()
                with torch.no_grad():
                    flat[i] = x + eps
                    f_plus = _loss_on_fixed_batch(mname, model).item()
                    flat[i] = x - eps
                    f_minus = _loss_on_fixed_batch(mname, model).item()
                    flat[i] = x  # the exact old value: the check leaves the weights as it found them
                num = (f_plus - f_minus) / (2 * eps)
                err = abs(a - num) / max(abs(a) + abs(num), 1e-12)
                err = err if math.isfinite(err) else math.inf  # a NaN or inf gradient is the worst error
                entries.append({"param": pname, "index": i, "autograd": a, "numeric": num, "rel_err": err})
                if err > worst[0]:
                    worst = (err, mname, pname, i)
        top = max(entries, key=lambda e: e["rel_err"], default=None)
        per_model[mname] = {"max_rel_err": top["rel_err"] if top else None, "worst": top["param"] if top else None,
                            "entries": entries}
    empty = [m for m, d in per_model.items() if not d["entries"]]
    if empty:
        # nothing measured proves nothing: the gate fails rather than pass on no entries
        return gate("grad_check", None, threshold, "<=",
                    f"no parameter of {', '.join(empty)} has a gradient above 1e-6 to check", per_model)
    err, mname, pname, i = worst
    maxima = ", ".join(f"{m} {d['max_rel_err']:.1e}" for m, d in per_model.items())
    summary = f"worst {mname}.{pname}[{i}] relative error {err:.2e} (per model: {maxima})"
    return gate("grad_check", err, threshold, "<=", summary, per_model)


def grad_flow(models: dict[str, nn.Module]) -> GateVerdict:
    """One dummy loss per model; every trainable parameter must get a finite gradient that is not
    all zero. The embedding table counts as a whole: rows of bytes absent from the batch rightly
    get none."""
    dead: list[str] = []
    frozen = 0
    for mname, model in models.items():
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        frozen += sum(1 for p in model.parameters() if not p.requires_grad)
        with _scratch(model):
            loss = _loss_on_fixed_batch(mname, model)
            # autograd.grad instead of backward(): no .grad left behind on the caller's models
            grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        for (pname, _), g in zip(params, grads):
            if g is None or not bool(torch.isfinite(g).all()) or not bool(g.any()):
                dead.append(f"{mname}.{pname}")
    n_params = sum(1 for m in models.values() for _ in m.parameters())
    if dead:
        shown = ", ".join(dead[:5]) + (f" and {len(dead) - 5} more" if len(dead) > 5 else "")
        summary = f"{len(dead)} of {n_params} parameters get no gradient: {shown}"
    else:
        summary = "every parameter of every model gets a finite, non-zero gradient"
    if frozen:
        summary += f" ({frozen} frozen parameters not checked)"
    return gate("grad_flow", float(len(dead)), 0.0, "<=", summary, {"no_gradient": dead})


# --- data gates

def _left_padded(valid: torch.Tensor) -> torch.Tensor:
    # a row is False...True... with at least one True: never True before False, and ends True
    return (valid[:, 1:] >= valid[:, :-1]).all(dim=1) & valid[:, -1]


def _right_padded(ids: torch.Tensor, pad: int) -> torch.Tensor:
    # after the first PAD only PAD: the pad mask never goes from True back to False
    is_pad = ids == pad
    return (is_pad[:, 1:] >= is_pad[:, :-1]).all(dim=1)


def padding_gate(policy_data: PolicyData, plan_data: PlanData, talk_data: TalkData) -> GateVerdict:
    """The real training tensors: encoders left-padded, decoders right-padded with BOS at 0 (M-003).

    value = rows that break a rule, each row counted once per tensor group.
    """
    p, t = plan_data, talk_data
    # (tensor group, [(rule, ok mask per row)]), in the order the summary reports them
    groups = [
        ("policy encoder", [("not left-padded", _left_padded(policy_data.valid))]),
        ("plan encoder", [("not left-padded", _left_padded(p.goal_valid))]),
        ("talk prompt encoder", [("not left-padded", _left_padded(t.prompt_valid))]),
        ("talk memory encoder", [("not left-padded", _left_padded(t.mem_valid))]),
        ("plan decoder", [("BOS not at 0", p.plan_inputs[:, 0] == PLAN_BOS),
                          ("input not right-padded", _right_padded(p.plan_inputs, PLAN_PAD)),
                          ("target not right-padded", _right_padded(p.plan_targets, PLAN_PAD)),
                          ("no EOS in target", (p.plan_targets == PLAN_EOS).any(dim=1))]),
        ("talk decoder", [("BOS not at 0", t.dec_inputs[:, 0] == TALK_BOS),
                          ("input not right-padded", _right_padded(t.dec_inputs, TALK_PAD)),
                          ("target not right-padded", _right_padded(t.dec_targets, TALK_PAD)),
                          ("no EOS in target", (t.dec_targets == TALK_EOS).any(dim=1))]),
    ]
    bad_rows, first, detail = 0, None, {}
    for group, rules in groups:
        bad = ~torch.stack([ok for _, ok in rules]).all(dim=0)
        n_bad = int(bad.sum())
        detail[group] = {"rows": int(bad.numel()), "bad": n_bad}
        bad_rows += n_bad
        if n_bad and first is None:
            row = int(bad.nonzero()[0])
            rule = next(r for r, ok in rules if not bool(ok[row]))
            first = f"{group} row {row}: {rule}"
    if first is None:
        n_rows = sum(d["rows"] for d in detail.values())
        summary = f"{n_rows} rows: encoders left-padded, decoders right-padded with BOS at 0"
    else:
        summary = f"{bad_rows} rows break a padding rule; first: {first}"
    return gate("padding", float(bad_rows), 0.0, "<=", summary, detail)


def vocab_gate(policy_data: PolicyData, plan_data: PlanData, talk_data: TalkData, plan_vocab_size: int) -> GateVerdict:
    """Every id of the real training tensors inside the embedding it feeds (M-026)."""
    plan = Vocabulary("PLAN_VOCAB", plan_vocab_size)
    checks = [
        ("policy ids", policy_data.ids, BYTE),
        ("plan goal ids", plan_data.goal_ids, BYTE),
        ("talk prompt ids", talk_data.prompt_ids, BYTE),
        ("talk memory ids", talk_data.mem_ids, BYTE),
        ("plan inputs", plan_data.plan_inputs, plan),
        ("plan targets", plan_data.plan_targets, plan),
        ("talk decoder inputs", talk_data.dec_inputs, TALK),
        ("talk decoder targets", talk_data.dec_targets, TALK),
    ]
    n_bad, first, detail = 0, None, {}
    for where, ids, vocab in checks:
        bad = (ids < 0) | (ids >= vocab.size)
        count = int(bad.sum())
        detail[where] = {"vocab": vocab.name, "size": vocab.size, "bad": count,
                         "min": int(ids.min()) if ids.numel() else None, "max": int(ids.max()) if ids.numel() else None}
        n_bad += count
        if count and first is None:
            pos = tuple(int(i) for i in bad.nonzero()[0])
            first = (f"{where}: id {int(ids[pos])} at {pos} is outside {vocab.name} "
                     f"(valid 0..{vocab.size - 1})")
    if first is None:
        summary = f"every id inside its vocabulary: BYTE_VOCAB {BYTE.size}, PLAN_VOCAB {plan.size}, TALK_VOCAB {TALK.size}"
    else:
        summary = f"{n_bad} ids outside their vocabulary; first: {first}"
    return gate("vocab", float(n_bad), 0.0, "<=", summary, detail)
