"""Data-flow diagnostic of the talker: one batch traced stage by stage (failure log M-010, M-029, M-031).

Twelve blind training runs once kept a concept similarity of 0.9591 because the encoder never
learned (M-031, M-032). What was needed was a trace of one batch through every stage showing
where the samples stop differing and where the gradient dies. `trace_talker` is that trace:

    input -> embedding -> encoder layer 0.. -> encoder norm -> pooled -> concept -> prefix
          -> decoder layer 0.. -> logits

For every stage it reports the diversity (mean pairwise cosine across the batch's samples of the
stage's per-sample vector: 1.0 means every sample looks the same) and the L2 norm of the gradient
of the decoder loss (talk_loss on the references) with respect to the stage's tensor.
`collapse_point` names the stage where diversity is lost; `format_trace` prints the table.

    cd /work/main && PYTHONPATH=/work/main python -m pytest tests/test_diagnose.py -q

Per-sample vectors, for a batch of B items:
- encoder stages (input, embedding, encoder layers, encoder norm): the B prompts' rows, mean-pooled
  over their valid (non-pad) positions; "input" is the bytes one-hot, i.e. each prompt's byte
  histogram. The encoder batch also holds the memory texts (absent slots are "." placeholders),
  so diversity is taken over the prompts only, the gradient over the whole encoder batch;
- pooled, concept: the B prompts' rows;
- prefix: the prompt's own prefix_k embeddings (the last ones of the prefix), flattened;
- decoder layers and logits: the response positions, mean-pooled over those the loss counts
  (target not PAD).

Note: in train mode the concept stage follows a batch norm that centres the batch, so a concept's
mean pairwise cosine sits near -1/(n-1) whatever the encoder does; an encoder collapse shows at
"pooled" and before (which is also where talker.concept_similarity measures it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from navi_model.talker import TalkerModel, encode_items, talk_loss
from navi_model.vocab import BYTE_VOCAB, TALK_PAD, encode_decoder_batch


@dataclass
class StageRow:
    stage: str
    diversity: float  # mean pairwise cosine across the batch's samples; 1.0 = all alike
    grad_norm: float | None  # ||d talk_loss / d stage tensor||_2; None where no gradient is defined
    shape: tuple


def diversity(vectors: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of the rows of `vectors` (n, ...), in float64.

    Two zero vectors count as the same (cosine 1), a zero and a non-zero one as unrelated (0),
    so a stage that maps every sample to zero reads as collapsed. NaN for fewer than 2 rows.
    """
    v = vectors.detach().double().reshape(vectors.shape[0], -1)
    n = v.shape[0]
    if n < 2:
        return math.nan
    norms = v.norm(dim=1)
    zero = norms <= 1e-12 * norms.max()
    u = v / torch.where(zero, torch.ones_like(norms), norms)[:, None]
    sim = u @ u.T
    sim = torch.where(zero[:, None] & zero[None, :], torch.ones_like(sim), sim)
    mean = (sim.sum() - sim.diagonal().sum()) / (n * (n - 1))
    return float(mean.clamp(-1.0, 1.0))


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(n, T, C) averaged over the positions where mask (n, T) is True -> (n, C)."""
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def trace_tensors(model: TalkerModel, items: list[dict], device, *, train: bool = True) -> dict:
    """Run one batch through the talker stage by stage, keeping every intermediate tensor.

    items: gallery rows {"prompt", "reference", "memory": [...]}; prompts (with their memory) go
    through the encoder, references are the decoder's inputs and targets (no denoising).
    The forward pass is the model's own (TalkerModel.encode_prefix + decode) re-written with its
    submodules. train: the mode the pass runs in (train = batch statistics in the batch norm, as
    in training). The model's weights, its buffers (batch-norm running statistics included), its
    modes and its parameters' .grad are left as they were.

    Returns {"stages": [(name, tensor, per-sample vectors (B, d))], "grads": [tensor or None],
    "logits": (B, R, V), "loss": float}.
    """
    device = torch.device(device)
    cfg = model.cfg
    prompt_ids, prompt_valid, mem_ids, mem_valid, mem_present = encode_items(items, cfg, device)
    dec_in, dec_tgt = encode_decoder_batch([it["reference"] for it in items], cfg.response_len)
    dec_in, dec_tgt = dec_in.to(device), dec_tgt.to(device)
    B, K, T = mem_ids.shape
    k = cfg.prefix_k

    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train(train)
        with torch.enable_grad():
            # --- encoder: prompts and memories in one batch, as in encode_prefix
            enc = model.encoder
            ids = torch.cat([prompt_ids, mem_ids.reshape(B * K, T)])
            valid = torch.cat([prompt_valid, mem_valid.reshape(B * K, T)])
            cos, sin = enc.rope_cos[:T], enc.rope_sin[:T]
            key_mask = valid[:, None, None, :]
            # a leaf from the embedding on: every later stage gets a gradient even with a frozen
            # encoder; the gradient with respect to an activation does not depend on what precedes it
            x = enc.embed_bytes(ids).detach().requires_grad_(True)
            stages = [("embedding", x, _masked_mean(x[:B], prompt_valid))]
            for i, block in enumerate(enc.blocks):
                x = block(x, cos, sin, attn_mask=key_mask)
                stages.append((f"encoder layer {i}", x, _masked_mean(x[:B], prompt_valid)))
            x = enc.norm(x)
            stages.append(("encoder norm", x, _masked_mean(x[:B], prompt_valid)))
            w = valid.unsqueeze(-1).to(x.dtype)
            pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
            # the other encoders of an ensembled policy, beside the first, as TalkerModel.pooled
            pooled = torch.cat([pooled, *(e(ids, valid)[1] for e in model.more_encoders)], dim=-1)
            stages.append(("pooled", pooled, pooled[:B]))
            both = model.to_concept(model.concept_norm(pooled))
            stages.append(("concept", both, both[:B]))
            concept, mem = both[:B], both[B:].view(B, K, -1)
            prefix = torch.cat([model.projector(mem).view(B, K * k, -1), model.projector(concept).view(B, k, -1)],
                               dim=1)
            stages.append(("prefix", prefix, prefix[:, -k:].reshape(B, -1)))
            present = torch.cat([mem_present.repeat_interleave(k, dim=1),
                                 torch.ones(B, k, dtype=torch.bool, device=device)], dim=1)

            # --- decoder, as in TalkerModel.decode
            P, R = prefix.shape[1], dec_in.shape[1]
            L = P + R
            loss_pos = dec_tgt != TALK_PAD
            x = torch.cat([prefix, model.embed(dec_in)], dim=1)
            key_ok = torch.cat([present, torch.ones(B, R, dtype=torch.bool, device=device)], dim=1)
            causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
            mask = ((causal & key_ok[:, None, :]) | torch.eye(L, dtype=torch.bool, device=device))[:, None]
            dcos, dsin = model.rope_cos[:L], model.rope_sin[:L]
            for i, block in enumerate(model.blocks):
                x = block(x, dcos, dsin, attn_mask=mask)
                stages.append((f"decoder layer {i}", x, _masked_mean(x[:, P:], loss_pos)))
            logits = model.lm_head(model.norm(x[:, P:]))
            stages.append(("logits", logits, _masked_mean(logits, loss_pos)))

            loss = talk_loss(logits, dec_tgt)
            # autograd.grad, not backward: no parameter's .grad is touched
            grads = list(torch.autograd.grad(loss, [t for _, t, _ in stages], allow_unused=True))
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for m, mode in modes:
            m.training = mode

    onehot = F.one_hot(prompt_ids, BYTE_VOCAB).to(torch.float32)
    stages.insert(0, ("input", ids, _masked_mean(onehot, prompt_valid)))
    grads.insert(0, None)  # byte ids: no gradient
    return {"stages": stages, "grads": grads, "logits": logits.detach(), "loss": float(loss.detach())}


def trace_talker(model: TalkerModel, items: list[dict], device, *, train: bool = True) -> list[StageRow]:
    """One batch of items through the talker: a StageRow per stage, in the order of the data flow."""
    t = trace_tensors(model, items, device, train=train)
    return [StageRow(name, diversity(vec), None if g is None else float(g.detach().double().norm()),
                     tuple(tensor.shape))
            for (name, tensor, vec), g in zip(t["stages"], t["grads"])]


def collapse_point(rows: list[StageRow], threshold: float = 0.9) -> StageRow | None:
    """The first stage whose diversity reaches `threshold` while the stage before it was below it:
    the stage where the samples stop differing. None if there is no such stage."""
    for before, row in zip(rows, rows[1:]):
        if row.diversity >= threshold and before.diversity < threshold:
            return row
    return None


def format_trace(rows: list[StageRow], threshold: float = 0.9) -> str:
    """A table of stage, diversity, gradient norm and shape; the collapse point marked with an arrow."""
    point = collapse_point(rows, threshold)
    width = max([len("stage")] + [len(r.stage) for r in rows])
    lines = [f"   {'stage':<{width}}  diversity  grad norm   shape"]
    for r in rows:
        mark = "-> " if r is point else "   "
        grad = "-" if r.grad_norm is None else f"{r.grad_norm:.3e}"
        shape = "x".join(str(s) for s in r.shape)
        lines.append(f"{mark}{r.stage:<{width}}  {r.diversity:9.4f}  {grad:>9}   {shape}")
    if point is None:
        lines.append(f"no collapse: no stage's diversity rises to {threshold:g} or above from below it.")
    else:
        before = rows[rows.index(point) - 1]
        lines.append(f"diversity is lost at stage '{point.stage}': mean pairwise cosine {point.diversity:.4f} "
                     f"(>= {threshold:g}) after {before.diversity:.4f} at '{before.stage}'.")
    dead = [r.stage for r in rows if r.grad_norm is not None and not (r.grad_norm > 0 and math.isfinite(r.grad_norm))]
    if dead:
        lines.append(f"the gradient is zero or not finite at: {', '.join(dead)}.")
    return "\n".join(lines)
