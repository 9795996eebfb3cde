"""The two vocabularies of the brain, and encoding that checks its ranges.

Two embedding tables exist and they are not interchangeable (failure log M-026):
- BYTE_VOCAB = 256: raw UTF-8 bytes, what every encoder reads (goals, prompts). Encoder
  batches are LEFT-padded (M-003); padding positions are masked out of attention.
- TALK_VOCAB = 259: bytes 0..255 plus PAD, BOS, EOS, what the talker's decoder reads and
  writes. Decoder batches are RIGHT-padded with BOS at position 0, so the positions seen in
  training are the positions seen when generating from BOS (M-003).

Nothing here truncates: a text longer than the sequence length is an error, because a
silently truncated prompt is how 11 of 21 plan goals became indistinguishable (M-008).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BYTE_VOCAB = 256
TALK_PAD = 256
TALK_BOS = 257
TALK_EOS = 258
TALK_VOCAB = 259

# the encoder's pad id; it is masked out, so its value only has to be in range
BYTE_PAD = 0


class VocabRangeError(ValueError):
    """A token id outside the embedding table it is about to index."""


class TruncationError(ValueError):
    """A text that does not fit in the sequence length."""


@dataclass(frozen=True)
class Vocabulary:
    name: str
    size: int


BYTE = Vocabulary("BYTE_VOCAB", BYTE_VOCAB)
TALK = Vocabulary("TALK_VOCAB", TALK_VOCAB)


def check_ids(ids: torch.Tensor, vocab: Vocabulary, where: str = "input") -> None:
    """Raise VocabRangeError naming the vocabulary if any id falls outside [0, vocab.size).

    Called where tensors are built (once per corpus) and at inference entry points, never per
    training step: the comparison forces a host sync on a GPU.
    """
    if ids.numel() == 0:
        return
    bad = (ids < 0) | (ids >= vocab.size)
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0].tolist())
        value = int(ids[pos].item())
        raise VocabRangeError(
            f"{where}: token id {value} at position {pos} is outside {vocab.name} "
            f"(valid ids 0..{vocab.size - 1})"
        )


def text_bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def encode_encoder_batch(texts: list[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode texts as LEFT-padded byte ids for an encoder.

    Returns (ids, valid): ids (B, T) long in BYTE_VOCAB, valid (B, T) bool, True on real bytes.
    """
    B = len(texts)
    ids = torch.full((B, seq_len), BYTE_PAD, dtype=torch.long)
    valid = torch.zeros((B, seq_len), dtype=torch.bool)
    for i, text in enumerate(texts):
        b = text_bytes(text)
        if len(b) > seq_len:
            raise TruncationError(
                f"text of {len(b)} bytes does not fit the encoder's seq_len={seq_len}: {text[:60]!r}"
            )
        if not b:
            raise ValueError(f"empty text at batch index {i}: an encoder needs at least one byte")
        # left padding: the text ends at the last position, the pad fills the front
        ids[i, seq_len - len(b):] = torch.tensor(b, dtype=torch.long)
        valid[i, seq_len - len(b):] = True
    check_ids(ids, BYTE, "encoder batch")
    return ids, valid


def drop_shared_left_padding(ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A LEFT-padded batch without the leading columns that are padding in every row.

    The encoders mask pad keys and see positions only relative to each other (RoPE), so the real
    bytes come out the same; only the work on columns nobody reads goes. On the CPU, where a
    random batch of the bundled goals fills 51 of the policy's 80 columns on average (88 of the
    planner's 120), that is a third of a step. Reads the batch's longest row on the host: not for
    a captured CUDA step, whose shapes must not change.
    """
    start = int((~valid.any(dim=0)).sum())
    return ids[:, start:], valid[:, start:]


def encode_decoder_batch(texts: list[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode texts as RIGHT-padded TALK_VOCAB sequences: [BOS, bytes..., EOS, PAD...].

    Returns (inputs, targets), both (B, seq_len): targets are inputs shifted left by one, with
    PAD where there is nothing to predict (the loss ignores PAD targets).
    """
    B = len(texts)
    seq = torch.full((B, seq_len + 1), TALK_PAD, dtype=torch.long)
    for i, text in enumerate(texts):
        b = text_bytes(text)
        if len(b) + 2 > seq_len + 1:
            raise TruncationError(
                f"text of {len(b)} bytes needs {len(b) + 1} decoder positions, "
                f"more than seq_len={seq_len}: {text[:60]!r}"
            )
        row = [TALK_BOS, *b, TALK_EOS]
        seq[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    check_ids(seq, TALK, "decoder batch")
    return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def decode_talk(ids: list[int]) -> str:
    """Turn generated TALK_VOCAB ids back into text, stopping at EOS and skipping specials."""
    out = bytearray()
    for t in ids:
        if t == TALK_EOS:
            break
        if 0 <= t < BYTE_VOCAB:
            out.append(t)
    return out.decode("utf-8", errors="replace")
