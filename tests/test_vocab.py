"""Vocabularies: padding sides, BOS position, range errors.

    python -m pytest tests/test_vocab.py -q
"""

import pytest
import torch

from navi_model.vocab import (
    BYTE_PAD, BYTE_VOCAB, TALK_BOS, TALK_EOS, TALK_PAD, TALK_VOCAB, BYTE, TALK,
    TruncationError, VocabRangeError, check_ids, decode_talk, encode_decoder_batch, encode_encoder_batch,
)


def test_vocab_sizes():
    assert BYTE_VOCAB == 256
    assert (TALK_PAD, TALK_BOS, TALK_EOS, TALK_VOCAB) == (256, 257, 258, 259)


def test_encoder_batch_is_left_padded():
    ids, valid = encode_encoder_batch(["ab", "abcd"], seq_len=6)
    assert ids.tolist() == [[BYTE_PAD] * 4 + [97, 98], [BYTE_PAD] * 2 + [97, 98, 99, 100]]
    assert valid.tolist() == [[False] * 4 + [True] * 2, [False] * 2 + [True] * 4]


def test_encoder_uses_utf8_bytes():
    ids, valid = encode_encoder_batch(["é"], seq_len=3)
    assert ids[0, 1:].tolist() == [0xC3, 0xA9]
    assert valid[0].tolist() == [False, True, True]


def test_decoder_batch_is_right_padded_with_bos_at_zero():
    inputs, targets = encode_decoder_batch(["hi", "a"], seq_len=5)
    assert inputs.tolist() == [[TALK_BOS, 104, 105, TALK_EOS, TALK_PAD], [TALK_BOS, 97, TALK_EOS, TALK_PAD, TALK_PAD]]
    # targets are the inputs shifted left: predict each next token, PAD where nothing follows
    assert targets.tolist() == [[104, 105, TALK_EOS, TALK_PAD, TALK_PAD], [97, TALK_EOS, TALK_PAD, TALK_PAD, TALK_PAD]]
    assert (inputs[:, 0] == TALK_BOS).all()


def test_too_long_text_is_an_error_never_truncated():
    with pytest.raises(TruncationError, match="seq_len=4"):
        encode_encoder_batch(["hello"], seq_len=4)
    with pytest.raises(TruncationError, match="seq_len=5"):
        encode_decoder_batch(["hello"], seq_len=5)  # BOS + 5 bytes + EOS needs 6 inputs+targets


def test_empty_goal_is_an_error():
    with pytest.raises(ValueError, match="empty text"):
        encode_encoder_batch([""], seq_len=4)


def test_talk_id_fed_to_byte_vocab_names_the_vocabulary():
    # M-026: a TALK_VOCAB id (PAD=256) reaching the policy's BYTE_VOCAB embedding
    ids = torch.tensor([[1, 2, TALK_PAD]])
    with pytest.raises(VocabRangeError, match=r"token id 256 at position \(0, 2\) is outside BYTE_VOCAB"):
        check_ids(ids, BYTE, "policy input")


def test_negative_and_too_large_talk_ids():
    with pytest.raises(VocabRangeError, match="TALK_VOCAB"):
        check_ids(torch.tensor([259]), TALK)
    with pytest.raises(VocabRangeError, match="-1"):
        check_ids(torch.tensor([-1]), TALK)
    check_ids(torch.tensor([0, 258]), TALK)  # in range: no error


def test_decode_talk_stops_at_eos_and_skips_specials():
    assert decode_talk([TALK_BOS, 104, 105, TALK_EOS, 120]) == "hi"
