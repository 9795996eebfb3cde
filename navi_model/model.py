"""The transformer blocks of the brain, and the models as thin compositions of them.

Every block is written with plain tensor ops and torch.nn, so autograd sees the whole chain
(the failure log's M-032 was a framework norm that silently cut the gradient; the grad_flow
gate checks every parameter anyway).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.vocab import BYTE_VOCAB


@dataclass
class EncoderConfig:
    vocab_size: int = BYTE_VOCAB  # the encoder reads raw bytes (M-026)
    seq_len: int = 96  # bytes of context; the truncation gate checks the corpus fits
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    rope_base: float = 10000.0
    # read A-Z as a-z: case never changes what a request means, and a model that sees case has to
    # learn every word twice (it failed "BUILD PLZ" after learning "build pls")
    fold_case: bool = False
    # hashed byte n-grams (2, 3 and 4 bytes ending at each position) added to the byte's embedding,
    # in a table of this many rows (0: bytes only). A word's pieces then carry meaning from the first
    # layer, as fastText's do, and one typo changes a few n-grams instead of the whole reading
    ngram_buckets: int = 0
    # each byte of a word (a run of letters and digits) also reads its whole word, hashed into a table
    # of this many rows (0: none). The n-grams alone read "trailing" as half "train", and a short
    # request's word drowned in its punctuation ("build!!!" -> greet); fastText pairs words with
    # n-grams for the same reason
    word_buckets: int = 0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in at least float32 even under autocast (the mean of squares loses bits in bf16),
        # and never below the input: float64 stays float64, or the grad_check gate measures rounding
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        # F.rms_norm: one fused kernel on CUDA where the written-out formula took four (measured
        # 0.33 ms against 0.75 ms forward and backward for 32768 x 512 on an H200); autograd sees it whole
        xf = F.rms_norm(xf, (xf.shape[-1],), eps=self.eps)
        return xf.type_as(x) * self.weight


def rotary_tables(seq_len: int, head_dim: int, base: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    t = torch.arange(seq_len, device=device).float()
    freqs = torch.outer(t, inv_freq)  # (T, hs/2)
    return freqs.cos(), freqs.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, nh, hs), before the heads move forward: the rotation then reads and writes each
    # head's bytes contiguously (on the (B, nh, T, hs) view its fused backward was 12% of a policy
    # step on an H200, at strided addresses); rotate the two halves of each head as a pair
    x1, x2 = x.chunk(2, dim=-1)
    cos = cos[None, :, None, :].to(x.dtype)
    sin = sin[None, :, None, :].to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        assert d_model % n_heads == 0, "d_model must be divisible by n_heads"
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, cos, sin, attn_mask: torch.Tensor | None = None, causal: bool = False):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        hs = C // self.n_heads
        q = apply_rotary(q.view(B, T, self.n_heads, hs), cos, sin).transpose(1, 2)  # (B, nh, T, hs)
        k = apply_rotary(k.view(B, T, self.n_heads, hs), cos, sin).transpose(1, 2)
        v = v.view(B, T, self.n_heads, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        # 8/3 keeps the parameter count of a 4x GELU MLP; round to a multiple of 8 for kernels
        hidden = 8 * ((int(8 * d_model / 3) + 7) // 8)
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.attn_norm = RMSNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.mlp_norm = RMSNorm(d_model)
        self.mlp = SwiGLU(d_model)
        self._compiled = None  # set by compile_blocks: the training forward, fused by torch.compile

    def forward(self, x, cos, sin, attn_mask=None, causal=False):
        # compiled only for training steps: their shapes never change, while evaluation and greedy
        # decoding see a new length at every token and would recompile each time
        if self._compiled is not None and self.training and torch.is_grad_enabled():
            return self._compiled(x, cos, sin, attn_mask, causal)
        return self._forward(x, cos, sin, attn_mask, causal)

    def _forward(self, x, cos, sin, attn_mask, causal):
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask, causal)
        x = x + self.mlp(self.mlp_norm(x))
        return x


def compile_blocks(model: nn.Module) -> int:
    """torch.compile every Block's training forward (regional compilation: the blocks share one
    code object, so a model compiles once per distinct batch shape, not once per layer).

    Why: an eager step of these narrow models spends most of its GPU time in small elementwise
    kernels (norms, rotary, SwiGLU, casts: 60% of the policy's step on an H200); fused, the step
    takes half the time (benchmarks/step_variants.py). Returns the number of blocks compiled.
    """
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    for b in blocks:
        if b._compiled is None:
            b._compiled = torch.compile(b._forward, dynamic=False)
    return len(blocks)


NGRAM_ORDERS = (2, 3, 4)


def hashed_ngrams(ids: torch.Tensor, buckets: int) -> list[torch.Tensor]:
    """(B, T) byte ids -> per order of NGRAM_ORDERS, (B, T) rows of a table of `buckets`: the hash
    of the n bytes ending at each position. A left pad reads as byte 0, so a text's first n-grams
    are marked as its start; no vocabulary is built or shipped."""
    T = ids.shape[1]
    h, rows = ids, []
    for order in NGRAM_ORDERS:
        earlier = F.pad(ids, (order - 1, 0))[:, :T]  # the byte order-1 places back, 0 before the text
        h = h * 257 + earlier
        rows.append((h + order * 7919) % buckets)  # each order at its own offset: "ab" and "\0ab" land apart
    return rows


WORD_BYTES = 16  # a word's hash reads at most its last this many bytes


def _word_bytes(ids: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the byte is a letter or a digit (either case), so part of a word."""
    lower = (ids >= ord("a")) & (ids <= ord("z"))
    upper = (ids >= ord("A")) & (ids <= ord("Z"))
    return lower | upper | ((ids >= ord("0")) & (ids <= ord("9")))


def hashed_words(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """(B, T) byte ids -> (B, T) rows of a table of buckets + 1: at each byte of a word, 1 + the hash of
    the whole word (its last WORD_BYTES bytes); 0 (no word) at spaces, punctuation and pads.

    Plain tensor ops over the whole batch, no Python loop over bytes: the hash of the word so far is
    built by WORD_BYTES shifted reads, then each word's final hash is spread back over its bytes.
    """
    B, T = ids.shape
    inword = _word_bytes(ids)
    starts = inword & ~F.pad(inword, (1, 0))[:, :T]
    word = torch.cumsum(starts.long(), dim=1)  # the word each byte belongs to, counted from 1 per row
    h = torch.zeros_like(ids)
    for k in range(WORD_BYTES - 1, -1, -1):  # the earliest byte first; bytes before the word add nothing
        same = F.pad(inword, (k, 0))[:, :T] & (F.pad(word, (k, 0))[:, :T] == word)
        h = (h * 257 + torch.where(same, F.pad(ids, (k, 0))[:, :T] + 1, 0)) % 2147483647
    ends = inword & ~F.pad(inword, (0, 1))[:, 1:]
    slot = word + torch.arange(B, device=ids.device)[:, None] * (T + 1)  # a row per word of the batch
    # the hash at the word's last byte, at all its bytes: one end per word, so a sum over the word's
    # bytes with every other byte masked to 0 is that hash (no boolean indexing: it would read a count
    # back to the host, which a CUDA graph cannot capture)
    whole = torch.zeros(B * (T + 1), dtype=h.dtype, device=ids.device)
    whole = whole.scatter_add(0, slot.flatten(), torch.where(ends, h, 0).flatten())[slot]
    return torch.where(inword, whole % buckets + 1, 0)


class Encoder(nn.Module):
    """Bidirectional encoder over LEFT-padded bytes; returns per-position states and a pooled vector.

    RoPE makes attention depend on relative positions only, and pads are masked from the keys,
    so a left-padded goal sees the same relations as an unpadded one.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.ngram = nn.Embedding(cfg.ngram_buckets, cfg.d_model) if cfg.ngram_buckets else None
        # row 0 is "no word": it stays zero and adds nothing
        self.word = nn.Embedding(cfg.word_buckets + 1, cfg.d_model, padding_idx=0) if cfg.word_buckets else None
        fold = torch.arange(cfg.vocab_size)
        if cfg.fold_case:
            fold[ord("A"):ord("Z") + 1] += ord("a") - ord("A")
        self.register_buffer("fold", fold, persistent=False)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model)
        cos, sin = rotary_tables(cfg.seq_len, cfg.d_model // cfg.n_heads, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = ids.shape
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        # (B, 1, 1, T): every query may attend to every real key, none to a pad
        key_mask = valid[:, None, None, :]
        x = self.embed_bytes(ids)
        for block in self.blocks:
            x = block(x, cos, sin, attn_mask=key_mask)
        x = self.norm(x)  # (B, T, C)
        w = valid.unsqueeze(-1).to(x.dtype)
        pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (B, C)
        return x, pooled

    def embed_bytes(self, ids: torch.Tensor) -> torch.Tensor:
        """Each (case-folded) byte's embedding, plus its hashed n-grams' and its word's when the config
        has those tables."""
        ids = self.fold[ids]
        x = self.embed(ids)
        if self.ngram is not None:
            for rows in hashed_ngrams(ids, self.cfg.ngram_buckets):
                x = x + self.ngram(rows)
        if self.word is not None:
            x = x + self.word(hashed_words(ids, self.cfg.word_buckets))
        return x


class PolicyModel(nn.Module):
    """Goal bytes -> one intent of the catalog.

    members > 1: an ensemble of that many encoders and heads, each from its own random start and
    each trained on batches of its own (train.MemberSampler, train.policy_loss); it answers with
    the mean of their probabilities. A single policy misreads some unseen phrasings by accidents
    of its own training, and its members seldom share them: three tiny members of 4 passes each
    read unseen / wild requests 0.964 / 0.968 where one policy of 10 passes read 0.948 / 0.950
    (3 seeds, 2-core CPU; docs/benchmarks.md, 2026-12-03 fifth session). Member 0 is `encoder`
    and `head`, so a one-member policy keeps the state-dict keys of every earlier checkpoint, and
    the planner warm-starts from member 0's encoder.
    """

    def __init__(self, cfg: EncoderConfig, n_intents: int, members: int = 1):
        super().__init__()
        if members < 1:
            raise ValueError(f"a policy needs at least one member, not {members}")
        self.cfg = cfg
        self.n_intents = n_intents
        self.members = members
        self.encoder = Encoder(cfg)
        self.head = nn.Linear(cfg.d_model, n_intents)
        self.others = nn.ModuleList(_PolicyMember(cfg, n_intents) for _ in range(members - 1))
        self.apply(_init_weights)

    def member_encoders(self) -> list[Encoder]:
        """Each member's encoder, member 0's first."""
        return [self.encoder, *(m.encoder for m in self.others)]

    def member_logits(self, ids, valid) -> torch.Tensor:
        """(members, B, n_intents): each member's own logits, what each member is trained on.
        ids (B, T) are read by every member; a list of one (B, T_j) per member gives member j rows
        of its own (of its own width: a CPU step drops each batch's own padding)."""
        own = isinstance(ids, (list, tuple))
        rows = (lambda j: (ids[j], valid[j])) if own else (lambda j: (ids, valid))
        _, pooled = self.encoder(*rows(0))
        return torch.stack([self.head(pooled), *(m(*rows(j + 1)) for j, m in enumerate(self.others))])

    def forward(self, ids, valid, per_member: bool = False) -> torch.Tensor:
        """(B, n_intents): one member's logits; an ensemble's log of its members' mean probability.
        per_member: member_logits instead, through forward so that a DDP wrapper sees the call."""
        logits = self.member_logits(ids, valid)
        if per_member:
            return logits
        if self.members == 1:
            return logits[0]
        return torch.logsumexp(torch.log_softmax(logits.float(), -1), dim=0) - math.log(self.members)


class _PolicyMember(nn.Module):
    """Member 1 and on of an ensembled policy: an encoder and a head of its own."""

    def __init__(self, cfg: EncoderConfig, n_intents: int):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.head = nn.Linear(cfg.d_model, n_intents)

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(ids, valid)[1])


def payload_members(payload: dict) -> int:
    """The members of the policy a checkpoint payload holds: 1 where the key is absent (written
    before ensembles, 2026-12-03)."""
    members = payload.get("members", 1)
    if type(members) is not int or members < 1:
        raise ValueError(f"key 'members': expected an int >= 1, got {members!r}")
    return members


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:  # a row that must add nothing (the encoder's "no word")
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
