"""The talker: prompt (+ earlier dialogues as memory) -> response bytes.

An encoder-decoder without cross-attention: encoder(prompt) -> pooled concept vector ->
projector -> k prefix embeddings. Each memory dialogue goes the same way and sits before the
concept prefix. The decoder is a causal byte model over
[memory prefix][concept prefix][BOS response EOS PAD...], right-padded, BOS always at the same
position (M-003).

Training (SFT) replaces a growing share of decoder input bytes by PAD (quadratic up to 20%),
so local byte statistics alone cannot predict the response and the decoder must read the
prefix (M-029). Memory is present from step 0 (M-004). Examples are drawn half from epoch
permutations (every prompt seen evenly: coverage, M-011) and half with weights that grow with
the response length (M-007).
"""

from __future__ import annotations

import difflib
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.config import TalkerConfig, TalkerTrainConfig
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
from navi_model.vocab import (TALK_BOS, TALK_EOS, TALK_PAD, TALK_VOCAB, decode_talk, encode_decoder_batch,
                              encode_encoder_batch, text_bytes)


def memory_text(prompt: str, response: str) -> str:
    return f"{prompt}\n{response}"


class TalkerModel(nn.Module):
    def __init__(self, cfg: TalkerConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.encoder.d_model
        self.encoder = Encoder(cfg.encoder)
        # the encoders of an ensembled policy's other members (TalkerConfig.encoders), read beside
        # the first: a text's pooled vector is theirs side by side
        self.more_encoders = nn.ModuleList(Encoder(cfg.encoder) for _ in range(cfg.encoders - 1))
        pooled = C * cfg.encoders
        # batch-centred and scaled: a direction shared by every prompt carries nothing, so the
        # encoder gains nothing by growing one (measured: without this, 99.9% of the encoder's
        # variance went into one shared direction within 30 steps and concept_sim hit 0.9999)
        self.concept_norm = nn.BatchNorm1d(pooled, affine=False)
        self.to_concept = nn.Linear(pooled, C, bias=False)
        self.projector = nn.Linear(C, cfg.prefix_k * C)
        self.embed = nn.Embedding(TALK_VOCAB, C)
        self.blocks = nn.ModuleList(Block(C, cfg.encoder.n_heads) for _ in range(cfg.dec_layers))
        self.norm = RMSNorm(C)
        self.lm_head = nn.Linear(C, TALK_VOCAB, bias=False)
        self.prefix_len = (cfg.memory_k + 1) * cfg.prefix_k
        cos, sin = rotary_tables(self.prefix_len + cfg.response_len, C // cfg.encoder.n_heads, cfg.encoder.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(_init_weights)

    def all_encoders(self) -> list[Encoder]:
        return [self.encoder, *self.more_encoders]

    def pooled(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, encoders * C): every encoder's pooled vector of each text, side by side."""
        return torch.cat([enc(ids, valid)[1] for enc in self.all_encoders()], dim=-1)

    def warm_from(self, policy_encoders: list[Encoder]) -> None:
        """Every encoder from the trained policy's: encoder j from member j's (PolicyModel.member_encoders)."""
        if len(policy_encoders) < self.cfg.encoders:
            raise ValueError(f"a talker of {self.cfg.encoders} encoders needs a policy of as many members, "
                             f"not {len(policy_encoders)}")
        for enc, src in zip(self.all_encoders(), policy_encoders):
            enc.load_state_dict(src.state_dict())

    def freeze_encoders(self) -> None:
        for enc in self.all_encoders():
            enc.requires_grad_(False)

    def concepts(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.to_concept(self.concept_norm(self.pooled(ids, valid)))  # (B, C)

    def encode_prefix(self, prompt_ids, prompt_valid, mem_ids, mem_valid, mem_present):
        """-> prefix (B, P, C) and prefix_present (B, P); memory slots are right-aligned, newest last."""
        B, K, T = mem_ids.shape
        # prompts and memories through the encoder in one batch: one pass, one set of batch statistics
        pooled = self.pooled(torch.cat([prompt_ids, mem_ids.reshape(B * K, T)]),
                             torch.cat([prompt_valid, mem_valid.reshape(B * K, T)]))
        return self.prefix_from_pooled(pooled[:B], pooled[B:].view(B, K, -1), mem_present)

    def prefix_from_pooled(self, prompt_pooled, mem_pooled, mem_present, batch_pooled=None):
        """encode_prefix from the encoder's pooled vectors: prompt (B, C), memories (B, K, C).

        A frozen encoder gives every text the same pooled vector at every step, so training
        computes them once (EncoderCache) and starts here.
        batch_pooled: the pooled vectors (no gradient) of a whole batch these rows are a slice of,
        whose statistics the batch norm takes (under DDP: the global batch, see below).
        """
        B, K, C = mem_pooled.shape
        k = self.cfg.prefix_k
        pooled = torch.cat([prompt_pooled, mem_pooled.reshape(B * K, C)])
        normed = self.concept_norm(pooled) if batch_pooled is None else self._norm_as_batch(pooled, batch_pooled)
        both = self.to_concept(normed)
        concept, mem = both[:B], both[B:].view(B, K, -1)
        prefix = torch.cat([self.projector(mem).view(B, K * k, -1), self.projector(concept).view(B, k, -1)], dim=1)
        present = torch.cat([mem_present.repeat_interleave(k, dim=1),
                             torch.ones(B, k, dtype=torch.bool, device=mem_present.device)], dim=1)
        return prefix, present

    def _norm_as_batch(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """concept_norm in training mode, with the statistics of `batch` instead of x's own.

        Under DDP each rank holds a slice of the global batch; a batch norm of the slice alone
        would normalise by the slice's statistics, and the step would not be the one-process
        step. With the frozen encoder's cached vectors every rank has the global batch's pooled
        vectors at hand (constants: no gradient flows into them), so it normalises by those, and
        updates the running statistics exactly as one process would."""
        bn = self.concept_norm
        mean, var = batch.mean(0), batch.var(0, unbiased=False)
        if self.training and bn.track_running_stats:
            with torch.no_grad():
                n = batch.shape[0]
                bn.running_mean.mul_(1 - bn.momentum).add_(mean, alpha=bn.momentum)
                bn.running_var.mul_(1 - bn.momentum).add_(var * (n / max(n - 1, 1)), alpha=bn.momentum)
                bn.num_batches_tracked += 1
        return (x - mean) * torch.rsqrt(var + bn.eps)

    def decode(self, prefix: torch.Tensor, present: torch.Tensor, dec_inputs: torch.Tensor) -> torch.Tensor:
        B, P, _ = prefix.shape
        T = dec_inputs.shape[1]
        L = P + T
        x = torch.cat([prefix, self.embed(dec_inputs)], dim=1)  # (B, L, C)
        key_ok = torch.cat([present, torch.ones(B, T, dtype=torch.bool, device=x.device)], dim=1)
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        # a position always sees itself, so an absent memory slot never becomes an all-masked row (NaN)
        mask = (causal & key_ok[:, None, :]) | torch.eye(L, dtype=torch.bool, device=x.device)
        mask = mask[:, None]  # (B, 1, L, L)
        cos, sin = self.rope_cos[:L], self.rope_sin[:L]
        for block in self.blocks:
            x = block(x, cos, sin, attn_mask=mask)
        return self.lm_head(self.norm(x[:, P:]))  # (B, T, V)

    def forward(self, prompt_ids, prompt_valid, mem_ids, mem_valid, mem_present, dec_inputs):
        prefix, present = self.encode_prefix(prompt_ids, prompt_valid, mem_ids, mem_valid, mem_present)
        return self.decode(prefix, present, dec_inputs)


@dataclass
class TalkData:
    prompt_ids: torch.Tensor  # (N, T) left-padded bytes
    prompt_valid: torch.Tensor
    mem_ids: torch.Tensor  # (N, T): this turn as a memory for later turns of its conversation
    mem_valid: torch.Tensor
    earlier: torch.Tensor  # (N,) earlier turns available as memory, at most memory_k
    dec_inputs: torch.Tensor  # (N, R) [BOS response EOS PAD...]
    dec_targets: torch.Tensor
    resp_len: torch.Tensor  # (N,) float, response bytes: the length weights
    prompt_index: torch.Tensor  # (N,) unique prompt of each row, for coverage
    n_unique: int

    @property
    def n(self) -> int:
        return self.prompt_ids.shape[0]


def build_talk_data(dialogues: list[dict], cfg: TalkerConfig, device: torch.device) -> TalkData:
    """dialogues: rows of {conversation, turn, prompt, response}, turns of a conversation in order."""
    T, R, K = cfg.encoder.seq_len, cfg.response_len, cfg.memory_k
    prompt_ids, prompt_valid = encode_encoder_batch([d["prompt"] for d in dialogues], T)
    mem_ids, mem_valid = encode_encoder_batch([memory_text(d["prompt"], d["response"]) for d in dialogues], T)
    dec_inputs, dec_targets = encode_decoder_batch([d["response"] for d in dialogues], R)
    for i, d in enumerate(dialogues):
        # memory rows are found by position: the turns just before this one
        if d["turn"] > 0 and (i < d["turn"] or dialogues[i - d["turn"]]["conversation"] != d["conversation"]):
            raise ValueError(f"dialogue row {i}: turns of conversation {d['conversation']!r} are not consecutive")
    unique: dict[str, int] = {}
    to = dict(device=device)
    return TalkData(
        prompt_ids=prompt_ids.to(**to), prompt_valid=prompt_valid.to(**to),
        mem_ids=mem_ids.to(**to), mem_valid=mem_valid.to(**to),
        earlier=torch.tensor([min(d["turn"], K) for d in dialogues], dtype=torch.long, device=device),
        dec_inputs=dec_inputs.to(**to), dec_targets=dec_targets.to(**to),
        resp_len=torch.tensor([len(d["response"].encode()) for d in dialogues], dtype=torch.float, device=device),
        prompt_index=torch.tensor([unique.setdefault(d.get("source", d["prompt"]), len(unique)) for d in dialogues],
                                  device=device),
        n_unique=len(unique),
    )


def memory_rows(data: TalkData, idx: torch.Tensor, K: int, gen: torch.Generator | None = None):
    """Pick 1..available earlier turns at random for each row (none for a first turn), on the device.

    Returns rows (B, K), the data rows each memory slot reads, and present (B, K); slot K-1 is
    the newest turn. An absent slot's row is a placeholder, masked out of the decoder.
    """
    avail = data.earlier[idx]
    u = torch.rand(idx.shape[0], device=idx.device, generator=gen)
    m = torch.where(avail > 0, (u * avail).long() + 1, torch.zeros_like(avail))  # (B,) in [1, avail]
    back = torch.arange(K, 0, -1, device=idx.device)  # slot s holds the turn K - s back
    present = back[None, :] <= m[:, None]
    rows = (idx[:, None] - back[None, :]).clamp_min(0)
    return rows, present


def sample_memory(data: TalkData, idx: torch.Tensor, K: int, gen: torch.Generator | None = None):
    """memory_rows, gathered: mem_ids (B, K, T), mem_valid (B, K, T), present (B, K)."""
    rows, present = memory_rows(data, idx, K, gen)
    return data.mem_ids[rows], data.mem_valid[rows], present


def denoise_share(step: int, total: int, max_share: float) -> float:
    """Quadratic schedule: 0 at the start of SFT, max_share at its end."""
    return max_share * (step / max(1, total - 1)) ** 2


def pad_denoise(dec_inputs: torch.Tensor, share: float, gen: torch.Generator | None = None) -> torch.Tensor:
    """Replace a share of response bytes (never BOS, EOS or PAD) by PAD."""
    if share <= 0:
        return dec_inputs
    is_byte = dec_inputs < 256
    hit = torch.rand(dec_inputs.shape, device=dec_inputs.device, generator=gen) < share
    return torch.where(hit & is_byte, torch.full_like(dec_inputs, TALK_PAD), dec_inputs)


def talk_loss(logits: torch.Tensor, targets: torch.Tensor, denom: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over the non-PAD targets; with denom, the sum over them divided by denom
    (under DDP: the global batch's count of real targets over world_size, see navi_model.distributed)."""
    if denom is None:
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=TALK_PAD)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=TALK_PAD,
                           reduction="sum") / denom


# --- inference: gallery, concept similarity, prefix use

def encode_items(items: list[dict], cfg: TalkerConfig, device: torch.device):
    """items: {"prompt", "memory": [{"prompt", "response"}...]} -> model inputs for encode_prefix."""
    T, K = cfg.encoder.seq_len, cfg.memory_k
    prompt_ids, prompt_valid = encode_encoder_batch([it["prompt"] for it in items], T)
    texts, present = [], []
    for it in items:
        mem = [memory_text(m["prompt"], m["response"]) for m in it.get("memory", [])][-K:]
        # absent slots get a placeholder byte: they are masked out of the decoder's attention
        texts += ["."] * (K - len(mem)) + mem
        present.append([False] * (K - len(mem)) + [True] * len(mem))
    mem_ids, mem_valid = encode_encoder_batch(texts, T)
    B = len(items)
    to = dict(device=device)
    return (prompt_ids.to(**to), prompt_valid.to(**to), mem_ids.view(B, K, T).to(**to),
            mem_valid.view(B, K, T).to(**to), torch.tensor(present, dtype=torch.bool, device=device))


@torch.no_grad()
def generate(model: TalkerModel, items: list[dict], device: torch.device, max_len: int | None = None) -> list[str]:
    """Greedy decoding (temperature 0) from BOS; the prefix is computed once."""
    if not items:
        return []
    model.eval()
    max_len = max_len or model.cfg.response_len
    prefix, present = model.encode_prefix(*encode_items(items, model.cfg, device))
    dec = torch.full((len(items), 1), TALK_BOS, dtype=torch.long, device=device)
    done = torch.zeros(len(items), dtype=torch.bool, device=device)
    for _ in range(max_len - 1):
        nxt = model.decode(prefix, present, dec)[:, -1].argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, TALK_PAD), nxt)
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        done |= nxt == TALK_EOS
        if bool(done.all()):
            break
    return [decode_talk(row[1:]) for row in dec.tolist()]


def score_gallery(items: list[dict], outputs: list[str]) -> list[dict]:
    rows = []
    for it, out in zip(items, outputs):
        sim = difflib.SequenceMatcher(None, out, it["reference"], autojunk=False).ratio()
        rows.append({"line": it.get("line"), "prompt": it["prompt"], "memory": it.get("memory", []), "output": out,
                     "reference": it["reference"], "score": sim, "exact": out == it["reference"]})
    return rows


def check_gallery_bench(model: TalkerModel, bench: Bench) -> None:
    """CorpusError naming the bench line and field of the first text this talker cannot take whole:
    a prompt or memory text longer than its encoder, a reference longer than its decoder (M-008)."""
    if bench.kind != "gallery":
        raise ValueError(f"{bench.path}: a {bench.kind} bench is not a gallery")
    T, R, K = model.cfg.encoder.seq_len, model.cfg.response_len, model.cfg.memory_k
    for it in bench.items:
        n = len(text_bytes(it["prompt"]))
        if n > T:
            raise CorpusError(bench.path, it["line"], "prompt", f"{n} bytes do not fit the talker's seq_len of {T}")
        memory = it.get("memory", [])
        for j in range(max(0, len(memory) - K), len(memory)):  # the last memory_k turns are what it reads
            n = len(text_bytes(memory_text(memory[j]["prompt"], memory[j]["response"])))
            if n > T:
                raise CorpusError(bench.path, it["line"], f"memory[{j}]",
                                  f"prompt and response take {n} bytes, more than the talker's seq_len of {T}")
        n = len(text_bytes(it["reference"]))
        if n + 1 > R:
            raise CorpusError(bench.path, it["line"], "reference",
                              f"{n} bytes need {n + 1} decoder positions, more than the talker's response_len of {R}")


def run_gallery(model: TalkerModel, items: list[dict], device: torch.device) -> list[dict]:
    return score_gallery(items, generate(model, items, device))


def gallery_summary(rows: list[dict]) -> dict[str, float]:
    n = len(rows)
    distinct_refs = len({r["reference"] for r in rows})
    return {
        "gallery_similarity": sum(r["score"] for r in rows) / n if n else math.nan,
        "gallery_exact": sum(r["exact"] for r in rows) / n if n else math.nan,
        # distinct answers against distinct references: one answer for every prompt scores 1/refs
        "gallery_diversity": len({r["output"] for r in rows}) / distinct_refs if n else math.nan,
    }


@torch.no_grad()
def concept_similarity(model: TalkerModel, prompts: list[str], device: torch.device) -> float:
    """Mean pairwise cosine of the encoder's pooled concept vectors over distinct prompts (M-029:
    above 0.9 = collapse).

    Measured before the batch norm: the norm centres whatever it gets, so after it even a
    collapsed encoder (one vector for every prompt) would look diverse.
    """
    model.eval()
    prompts = sorted(set(prompts))
    ids, valid = encode_encoder_batch(prompts, model.cfg.encoder.seq_len)
    pooled = model.pooled(ids.to(device), valid.to(device))
    c = F.normalize(pooled.float(), dim=-1)
    sim = c @ c.T
    n = len(prompts)
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


@torch.no_grad()
def prefix_use(model: TalkerModel, items: list[dict], device: torch.device) -> tuple[float, float]:
    """Decoder loss on the references with the true prefixes, and with prefixes shuffled across items.

    A decoder that ignores its prefix scores the same on both (M-029).
    """
    model.eval()
    prefix, present = model.encode_prefix(*encode_items(items, model.cfg, device))
    dec_in, dec_tgt = encode_decoder_batch([it["reference"] for it in items], model.cfg.response_len)
    dec_in, dec_tgt = dec_in.to(device), dec_tgt.to(device)
    true_loss = talk_loss(model.decode(prefix, present, dec_in), dec_tgt).item()
    # pair each item with another whose reference differs, so a shuffle always misleads
    refs = [it["reference"] for it in items]
    perm = [next((j for j in (*range(i + 1, len(items)), *range(i)) if refs[j] != refs[i]), i) for i in range(len(items))]
    perm_t = torch.tensor(perm, device=device)
    shuffled_loss = talk_loss(model.decode(prefix[perm_t], present[perm_t], dec_in), dec_tgt).item()
    return true_loss, shuffled_loss


# --- training

@dataclass
class TalkerTrainResult:
    sft_steps: int
    da_steps: int
    stopped: bool
    final_loss: float
    coverage_min: float
    coverage_mean: float
    memory_share: float  # share of SFT samples that carried at least one memory dialogue
    seconds: float
    pre_da: dict | None = None  # gallery summary before DA
    post_da: dict | None = None  # gallery summary after DA
    rolled_back: bool = False
    gallery: list[dict] = field(default_factory=list)  # the final model's gallery rows


def checkpoint_payload(model: TalkerModel, opt: torch.optim.Optimizer, step: int, phase: str, extra: dict) -> dict:
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": plain_optimizer_state(opt),
        "model_args": asdict(model.cfg),
        "step": step,
        "phase": phase,
        **extra,
    }


def talker_from_payload(payload: dict, device: torch.device) -> TalkerModel:
    model = TalkerModel(TalkerConfig.from_dict(payload["model_args"]))
    model.load_state_dict(payload["model"])
    return model.to(device).eval()


@dataclass
class EncoderCache:
    """The frozen encoder's pooled vector of every prompt and every memory text of the data.

    A frozen encoder maps a text to the same vector at every step, so the talker's training
    computes each once instead of pushing (1 + memory_k) x batch texts through it per step: in
    the base profile that encoder pass was most of an SFT step's arithmetic. Computed in
    training mode under the loop's autocast, exactly as the step would have.
    """
    prompt: torch.Tensor  # (N, C)
    memory: torch.Tensor  # (N, C)

    @staticmethod
    @torch.no_grad()
    def build(model: TalkerModel, data: TalkData, device: torch.device, chunk: int = 512) -> "EncoderCache":
        use_bf16 = device.type == "cuda"
        out = []
        for ids, valid in ((data.prompt_ids, data.prompt_valid), (data.mem_ids, data.mem_valid)):
            parts = []
            for i in range(0, ids.shape[0], chunk):
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    parts.append(model.pooled(ids[i:i + chunk], valid[i:i + chunk]).float())
            out.append(torch.cat(parts))
        return EncoderCache(*out)


class TalkerStepLoss(nn.Module):
    """The talker's training loss as one module's forward:
    (rows, memory rows, memory present, decoder inputs[, DA cut][, denominator]) -> (loss, rows with memory).

    SFT: the decoder reads the given (PAD-denoised) inputs. DA (da_mix set): from each row's cut
    on, every input byte is the model's own greedy prediction of it, and the loss mixes that
    with the SFT loss on the denoised inputs. Randomness stays with the caller, so a captured
    step replays exactly what an eager one computes.

    A module, holding the talker, so that under DDP one wrapper serves SFT and DA (set da_mix
    between them) and each step is one forward of it, however many decoder passes DA makes.
    Under DDP only, three more inputs follow: the denominator (a device tensor, see talk_loss) and
    the global batch's rows and memory rows, whose cached vectors give the batch norm its statistics.
    """

    def __init__(self, model: TalkerModel, data: TalkData, cache: EncoderCache | None, device: torch.device,
                 da_mix: float | None = None):
        super().__init__()
        self.model = model
        # plain attributes, not buffers: DDP has no business with the data
        self.data, self.cache = data, cache
        self.use_bf16 = device.type == "cuda"
        self.device_type = device.type
        self.da_mix = da_mix

    def _forward(self, idx, mem_rows, present, dec_in, batch_rows=None):
        model, data, cache = self.model, self.data, self.cache
        if cache is not None:
            batch = None
            if batch_rows is not None:
                rows, mem = batch_rows
                batch = torch.cat([cache.prompt[rows], cache.memory[mem].flatten(0, 1)])
            prefix = model.prefix_from_pooled(cache.prompt[idx], cache.memory[mem_rows], present, batch)
            return model.decode(*prefix, dec_in)
        return model(data.prompt_ids[idx], data.prompt_valid[idx], data.mem_ids[mem_rows], data.mem_valid[mem_rows],
                     present, dec_in)

    def forward(self, idx, mem_rows, present, noisy, *rest):
        if self.da_mix is None:
            return self._sft(idx, mem_rows, present, noisy, *rest)
        return self._da(idx, mem_rows, present, noisy, *rest)

    def _sft(self, idx, mem_rows, present, noisy, denom=None, rows=None, mem=None):
        batch = None if rows is None else (rows, mem)
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.use_bf16):
            logits = self._forward(idx, mem_rows, present, noisy, batch)
        return talk_loss(logits, self.data.dec_targets[idx], denom), present.any(dim=1).sum()

    def _da(self, idx, mem_rows, present, noisy, cut, denom=None, rows=None, mem=None):
        batch = None if rows is None else (rows, mem)
        da_mix = self.da_mix
        dec_in, dec_tgt = self.data.dec_inputs[idx], self.data.dec_targets[idx]
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.use_bf16):
            with torch.no_grad():
                own = self._forward(idx, mem_rows, present, dec_in, batch).argmax(-1)  # the model's own next byte at every position
            pos = torch.arange(dec_in.shape[1], device=dec_in.device)[None, :]
            replace = (pos >= cut) & (pos > 0) & (dec_in < 256)
            mixed = torch.where(replace, torch.cat([dec_in[:, :1], own[:, :-1]], dim=1), dec_in)
            loss = ((1 - da_mix) * talk_loss(self._forward(idx, mem_rows, present, noisy, batch), dec_tgt, denom)
                    + da_mix * talk_loss(self._forward(idx, mem_rows, present, mixed, batch), dec_tgt, denom))
        return loss, present.any(dim=1).sum()


def talker_step_loss(model: TalkerModel, data: TalkData, cache: EncoderCache | None, device: torch.device,
                     da_mix: float | None = None) -> LossFn:
    """The step's loss for SFT (da_mix None) or DA: see TalkerStepLoss."""
    return TalkerStepLoss(model, data, cache, device, da_mix)


def real_targets(data: TalkData, idx: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The loss denominator under DDP: the global batch's real (non-PAD) targets over world_size."""
    return (data.dec_targets[idx] != TALK_PAD).sum() / ranks.world_size


def sft_sampler_batch(cfg: TalkerTrainConfig) -> int:
    """Rows of each SFT batch drawn evenly by the epoch sampler; the rest are drawn by response length."""
    return cfg.batch_size - int(cfg.batch_size * cfg.length_weighted_share)


@flushes_denormals_on_cpu
def train_talker(
    model: TalkerModel,
    data: TalkData,
    cfg: TalkerTrainConfig,
    *,
    steps: int,
    device: torch.device,
    emit: EmitFn,
    gallery: list[dict],
    control: TrainingControl | None = None,
    checkpoint_extra: dict | None = None,
    resume: dict | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> TalkerTrainResult:
    """SFT for `steps` steps, then (if cfg.da_steps) DA with an automatic rollback on a gallery regression.

    resume: a payload this trainer emitted earlier. From an "sft" payload SFT continues from its
    step and the rest runs as usual; from a "da" payload SFT is skipped and the rest of DA runs.
    ranks: under DDP, every rank draws the same global batch (rows, memory, noise) and trains on
    its shard, the loss divided by the global batch's real targets (times world_size, which DDP's
    average undoes). The gallery, the DA regression check and the rollback run on rank 0 alone;
    the other ranks' weights are the same, and nothing trains after them.
    """
    ranks.check_batch(cfg.batch_size, "talker sft")
    ranks.check_batch(sft_sampler_batch(cfg), "talker da")
    extra = checkpoint_extra or {}
    model.to(device).train()
    if cfg.freeze_encoder:
        model.freeze_encoders()
    opt = make_optimizer(model, cfg, device)
    sampler = EpochSampler(data.n, sft_sampler_batch(cfg), device, cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    seen = torch.zeros(data.n, device=device)
    t0 = time.perf_counter()

    from_da = resume is not None and resume["phase"] == "da"
    start = 0
    if resume is not None:
        # a DA payload carries DA's fresh optimizer: nothing for SFT to continue with
        start = restore_training_state(resume, model=model, opt=None if from_da else opt, sampler=sampler,
                                       seen=seen, gen=gen)
    # after the restore, so a resumed run caches the weights it continues with
    cache = EncoderCache.build(model, data, device) if cfg.freeze_encoder else None
    # one loss module and one DDP wrapper for SFT and DA: the talker's trained parameters are the
    # same in both, so every one of them gets a gradient at every step of either
    step_loss = TalkerStepLoss(model, data, cache, device)
    wrapped = ranks.wrap(step_loss)
    if from_da:
        sft_steps, stopped, last_loss = int(resume["sft_steps"]), False, math.nan
        da_start = start - sft_steps
        emit(LogLine("info", "resume", f"talker da: continuing from step {da_start} of {cfg.da_steps}"))
    else:
        emit(LogLine("info", "phase", f"talker sft: {steps} steps over {data.n_unique} unique prompts, batch {cfg.batch_size}"))
        if resume is not None:
            emit(LogLine("info", "resume", f"talker sft: continuing from step {start} of {steps}"))
        sft_steps, stopped, last_loss, saved_at = _train_sft(model, data, wrapped, cfg, opt, sampler, gen, seen,
                                                             start, steps, device, emit, gallery, control, extra,
                                                             ranks)
        da_start = 0

    # coverage and memory share over the whole of SFT, from the counts (restored after a resume);
    # every row past turn 0 carries memory
    cov_min, cov_mean = coverage(seen, data.prompt_index, data.n_unique)
    memory_share = float((data.earlier[None, :] > 0).float().mul(seen).sum() / seen.sum().clamp_min(1))
    emit(MetricsLogged(sft_steps, "sft", {"coverage_min": cov_min, "coverage_mean": cov_mean,
                                          "memory_share_total": memory_share}))

    sft_name = f"talker_sft_{sft_steps:06d}"
    if from_da:
        # the pre-DA gallery ran before that payload was written: its summary stays the yardstick
        pre, rows = dict(resume["pre_da"]), []
    elif not ranks.is_main:
        pre, rows = {}, []
    else:
        rows = run_gallery(model, gallery, device)
        model.train()
        pre = gallery_summary(rows)
        emit(MetricsLogged(sft_steps, "sft", pre))
        # the SFT-only checkpoint is always kept: it is what a DA regression rolls back to (M-039);
        # a periodic checkpoint of SFT's last step is that checkpoint already
        if saved_at != sft_steps:
            emit(_sft_checkpoint(model, opt, sft_steps, extra, sampler, seen, gen))
    result = TalkerTrainResult(sft_steps, 0, stopped, last_loss, cov_min, cov_mean, memory_share,
                               time.perf_counter() - t0, pre_da=pre, gallery=rows)
    # a DA payload always goes on: its model is a DA model, to be judged against pre_da
    if stopped or (cfg.da_steps <= 0 and not from_da):
        return result

    # the pre-DA weights to roll back to; after a resume from a DA payload they are not in memory
    sft_state = None if from_da else {k: v.detach().clone() for k, v in model.state_dict().items()}
    step_loss.da_mix = cfg.da_mix
    da_done, da_loss = _train_da(model, data, wrapped, cfg, device, emit, control, gen, sampler, sft_steps, da_start, ranks)
    result.da_steps, result.final_loss = da_done, da_loss
    if not ranks.is_main:
        # judged on rank 0, on these same weights
        result.seconds = time.perf_counter() - t0
        return result
    rows_after = run_gallery(model, gallery, device)
    post = gallery_summary(rows_after)
    result.post_da = post
    emit(MetricsLogged(sft_steps + da_done, "da", post))
    da_opt = make_optimizer(model, cfg, device)  # a fresh, empty state: DA's optimizer is not resumable
    # sft_steps and pre_da let a resume from this payload find its DA step and judge DA honestly
    da_extra = {**extra, **training_state(sampler, seen, gen), "sft_steps": sft_steps, "pre_da": pre}
    emit(CheckpointReady(sft_steps + da_done, "da", "talker", f"talker_da_{sft_steps + da_done:06d}",
                         checkpoint_payload(model, da_opt, sft_steps + da_done, "da", da_extra)))
    regressed = (post["gallery_similarity"] < pre["gallery_similarity"] - cfg.da_tolerance
                 or post["gallery_exact"] < pre["gallery_exact"] - cfg.da_tolerance)
    if regressed and sft_state is not None:
        model.load_state_dict(sft_state)
        result.rolled_back = True
        emit(LogLine("warn", "rollback",
                     f"DA regressed the gallery (similarity {pre['gallery_similarity']:.3f} -> "
                     f"{post['gallery_similarity']:.3f}, exact {pre['gallery_exact']:.3f} -> {post['gallery_exact']:.3f}); "
                     f"rolled back to the pre-DA checkpoint {sft_name}",
                     {"restore": sft_name, "model": "talker", "pre": pre, "post": post}))
    else:
        if regressed:
            # resumed from a DA payload: the pre-DA weights are not in memory, so there is nothing to
            # roll back to. the DA model stays, rolled_back stays False, and the caller's da_regression
            # gate (pre against post) fails instead of a rollback hiding the regression
            emit(LogLine("warn", "da",
                         f"DA regressed the gallery (similarity {pre['gallery_similarity']:.3f} -> "
                         f"{post['gallery_similarity']:.3f}, exact {pre['gallery_exact']:.3f} -> "
                         f"{post['gallery_exact']:.3f}); no rollback after a resume from a DA checkpoint",
                         {"model": "talker", "pre": pre, "post": post}))
        result.gallery = rows_after
    result.seconds = time.perf_counter() - t0
    return result


def _sft_checkpoint(model, opt, step: int, extra: dict, sampler, seen, gen) -> CheckpointReady:
    return CheckpointReady(step, "sft", "talker", f"talker_sft_{step:06d}",
                           checkpoint_payload(model, opt, step, "sft", {**extra, **training_state(sampler, seen, gen)}))


def _train_sft(model, data, step_loss, cfg, opt, sampler, gen, seen, start, steps, device, emit, gallery, control,
               extra, ranks) -> tuple[int, bool, float, int | None]:
    """SFT steps start..steps-1 -> (steps done in all, stopped by the control object, last logged loss,
    the step of the last periodic checkpoint)."""
    K = model.cfg.memory_k
    n_weighted = int(cfg.batch_size * cfg.length_weighted_share)
    train_step = make_train_step(model, opt, step_loss, cfg, device, ranks)
    periodic = PeriodicCheckpoints(cfg.checkpoint_every_s)
    window, t_window = 0, time.perf_counter()
    last_loss, stopped = math.nan, False
    # counted, not taken from the loop variable: the loop may run no step at all
    steps_done = start

    for step in range(start, steps):
        if stop_asked(control, ranks, step, cfg.log_every):
            stopped = True
            break
        lr = get_lr(step, steps, cfg)
        idx = sampler.next()
        if n_weighted:
            idx = torch.cat([idx, torch.multinomial(data.resp_len, n_weighted, replacement=True, generator=gen)])
        mem_rows, present = memory_rows(data, idx, K, gen)
        noisy = pad_denoise(data.dec_inputs[idx], denoise_share(step, steps, cfg.denoise_max), gen)
        if ranks.distributed:
            train_step(lr, *map(ranks.shard, (idx, mem_rows, present, noisy)), real_targets(data, idx, ranks),
                       idx, mem_rows)
        else:
            train_step(lr, idx, mem_rows, present, noisy)
        announce_ready(train_step, "sft", emit)
        steps_done = step + 1
        seen.index_add_(0, idx, torch.ones_like(idx, dtype=seen.dtype))
        window += 1
        if periodic.due() and step < steps - 1:
            emit(_sft_checkpoint(model, opt, steps_done, extra, sampler, seen, gen))
            periodic.mark(steps_done)
        # a person asked for the gallery now (the console's g key): all of it, at this step boundary;
        # samples are rank 0's to take (the other ranks hold the same weights and go on stepping)
        asked = gallery and ranks.is_main and control is not None and control.take("gallery")
        if asked or (gallery and ranks.is_main and cfg.sample_every and (step + 1) % cfg.sample_every == 0 and step < steps - 1):
            _sample(model, gallery, device, step + 1, emit, n=len(gallery) if asked else 3)
        if (step + 1) % cfg.log_every == 0 or step == steps - 1:
            loss_sum, mem_rows_sum = train_step.take()
            now = time.perf_counter()
            dt = max(now - t_window, 1e-9)
            tokens = window * idx.numel() * (model.cfg.encoder.seq_len * (K + 1) + model.cfg.response_len)
            last_loss = loss_sum / window
            emit(MetricsLogged(step + 1, "sft", {
                "loss": last_loss, "lr": lr, "memory_share": mem_rows_sum / (window * idx.numel()),
                "denoise_share": denoise_share(step, steps, cfg.denoise_max),
                "tokens_per_s": tokens / dt, "step_ms": 1000.0 * dt / window,
            }))
            window, t_window = 0, now
    train_step.close()
    return steps_done, stopped, last_loss, periodic.last_step


def _sample(model: TalkerModel, gallery: list[dict], device: torch.device, step: int, emit: EmitFn,
            n: int = 3) -> None:
    """Mid-training look: is the encoder collapsing (M-029), does greedy output make sense (M-039)?"""
    sim = concept_similarity(model, [it["prompt"] for it in gallery], device)
    rows = run_gallery(model, gallery[:n], device)
    model.train()
    emit(MetricsLogged(step, "sft", {"concept_sim": sim}))
    for r in rows:
        emit(LogLine("info", "sample", f"step {step}: {r['prompt']!r} -> {r['output']!r}",
                     {"step": step, "prompt": r["prompt"], "output": r["output"], "reference": r["reference"]}))


def _train_da(model, data, step_loss, cfg, device, emit, control, gen, sampler, start_step, first=0, ranks=ONE_PROCESS
              ) -> tuple[int, float]:
    """DA: whole sequences whose decoder input, from a random point on, is the model's own greedy
    prediction of each byte, trained against the true response and mixed with the SFT loss.

    Runs DA steps first..cfg.da_steps-1 (first > 0 after a resume) -> (DA steps done in all, last logged loss).
    step_loss: the TalkerStepLoss (or its DDP wrapper) with da_mix set.
    """
    model.train()
    opt = make_optimizer(model, cfg, device)
    K = model.cfg.memory_k
    train_step = make_train_step(model, opt, step_loss, cfg, device, ranks)
    window, last, t_window = 0, math.nan, time.perf_counter()
    tokens_per_row = model.cfg.encoder.seq_len * (K + 1) + model.cfg.response_len  # as SFT counts them
    emit(LogLine("info", "phase", f"talker da: {cfg.da_steps} steps at lr {cfg.da_lr:g}, mix {cfg.da_mix}"))
    done = first  # counted: after a resume the loop may run no step at all
    for step in range(first, cfg.da_steps):
        if stop_asked(control, ranks, step, cfg.log_every):
            break
        idx = sampler.next()
        mem_rows, present = memory_rows(data, idx, K, gen)
        R = data.dec_inputs.shape[1]
        # the same random draws, in the same order, as before the step was captured: memory, cut, noise
        cut = (torch.rand(idx.shape[0], 1, device=device, generator=gen) * R).long()
        noisy = pad_denoise(data.dec_inputs[idx], cfg.denoise_max, gen)
        if ranks.distributed:
            train_step(cfg.da_lr, *map(ranks.shard, (idx, mem_rows, present, noisy, cut)),
                       real_targets(data, idx, ranks), idx, mem_rows)
        else:
            train_step(cfg.da_lr, idx, mem_rows, present, noisy, cut)
        announce_ready(train_step, "da", emit)
        done = step + 1
        window += 1
        if (step + 1) % cfg.log_every == 0 or step == cfg.da_steps - 1:
            last = train_step.take()[0] / window
            now = time.perf_counter()
            dt = max(now - t_window, 1e-9)
            emit(MetricsLogged(start_step + step + 1, "da", {
                "loss": last, "lr": cfg.da_lr, "tokens_per_s": window * idx.numel() * tokens_per_row / dt,
                "step_ms": 1000.0 * dt / window}))
            window, t_window = 0, now
    train_step.close()
    return done, last
