"""Preflight gates: each passes on the real models and data, and catches the fault planted in it.

    PYTHONPATH=. python -m pytest tests/test_preflight.py -q
"""

from dataclasses import replace

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.config import TalkerConfig
from navi_model.corpus.load import load_corpus
from navi_model.data import build_policy_data
from navi_model.model import EncoderConfig, RMSNorm
from navi_model.planner import PlanVocab, build_plan_data
from navi_model.preflight import dummy_batch, grad_check, grad_flow, model_loss, padding_gate, small_models, vocab_gate
from navi_model.talker import build_talk_data

N_INTENTS, PLAN_VOCAB_SIZE = 5, 10


def models():
    return small_models(N_INTENTS, PLAN_VOCAB_SIZE)


def norm_keeps_float64() -> bool:
    # 1 + 1e-12 is 1 in float32: a norm that computes in float32 maps both entries to one value
    x = torch.tensor([[1.0, 1.0 + 1e-12]], dtype=torch.float64)
    y = RMSNorm(2).double()(x)
    return bool(y[0, 0] != y[0, 1])


class _ScaledBackward(torch.autograd.Function):
    """Identity forward; backward multiplies the true gradient by a constant (M-001, M-009)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class WrongBackwardNorm(RMSNorm):
    scale = 1e6

    def forward(self, x):
        return _ScaledBackward.apply(super().forward(x), self.scale)


def plant_wrong_norm(encoder, scale):
    # the final norm: every encoder parameter's gradient passes through it, no residual goes around
    new = WrongBackwardNorm(encoder.norm.weight.numel()).double()
    new.scale = scale
    new.load_state_dict(encoder.norm.state_dict())
    encoder.norm = new


# --- small models

def test_small_models_are_float64_and_their_losses_are_deterministic():
    ms = models()
    assert sorted(ms) == ["planner", "policy", "talker"]
    for name, m in ms.items():
        assert {p.dtype for p in m.parameters()} == {torch.float64}
        m.train()
        a = model_loss(name, m, dummy_batch(name, m, torch.Generator().manual_seed(0)))
        b = model_loss(name, m, dummy_batch(name, m, torch.Generator().manual_seed(0)))
        assert a.dtype == torch.float64 and torch.isfinite(a)
        assert a.item() == b.item()


# --- grad_check (M-001)

def test_grad_check_passes_on_the_small_models():
    # before RMSNorm kept float64, this measured 0.2 to 0.65: float32 rounding inside every norm
    assert norm_keeps_float64()
    v = grad_check(models(), threshold=1e-5)
    assert v.name == "grad_check" and v.op == "<="
    assert v.value < 1e-5
    assert v.passed
    assert all(len(d["entries"]) == 8 for d in v.detail.values())


def test_grad_check_spreads_entries_over_parameter_kinds():
    v = grad_check(models(), threshold=1e-5)
    params = [e["param"] for e in v.detail["planner"]["entries"]]
    assert len(set(params)) == 8
    for part in ("encoder.embed", "attn.", "mlp.", "norm", "head"):
        assert any(part in p for p in params), (part, params)


@pytest.mark.parametrize("scale", [1e6, -1.0])
def test_grad_check_fails_on_a_wrong_backward(scale):
    ms = models()
    plant_wrong_norm(ms["policy"].encoder, scale)
    v = grad_check(ms, threshold=1e-5)
    assert not v.passed
    assert v.value > 0.99
    assert v.summary.startswith("worst policy.encoder.")
    assert v.detail["policy"]["max_rel_err"] == v.value


def test_grad_check_restores_the_weights_and_buffers():
    ms = models()
    before = {n: {k: t.clone() for k, t in m.state_dict().items()} for n, m in ms.items()}
    grad_check(ms, threshold=1e-5)
    for n, m in ms.items():
        for k, t in m.state_dict().items():
            assert torch.equal(t, before[n][k]), (n, k)


# --- grad_flow (M-032)

def test_grad_flow_passes_on_the_small_models():
    v = grad_flow(models())
    assert (v.name, v.value, v.passed) == ("grad_flow", 0.0, True)
    assert v.summary == "every parameter of every model gets a finite, non-zero gradient"


def test_grad_flow_names_everything_behind_a_detached_final_norm(monkeypatch):
    ms = models()
    norm = ms["policy"].encoder.norm
    forward = norm.forward
    monkeypatch.setattr(norm, "forward", lambda x: forward(x).detach())
    v = grad_flow(ms)
    behind = [f"policy.{n}" for n, _ in ms["policy"].named_parameters() if n.startswith("encoder.")]
    assert v.detail["no_gradient"] == behind  # only the head still learns
    assert v.value == float(len(behind)) == 11.0  # the byte, n-gram and word tables, the block, the final norm
    assert not v.passed
    assert "policy.encoder.embed.weight" in v.summary and "policy.encoder.ngram.weight" in behind
    assert "policy.encoder.word.weight" in behind
    assert v.summary.startswith(f"11 of {sum(1 for m in ms.values() for _ in m.parameters())} parameters get no gradient")


def test_grad_flow_catches_a_detached_block_norm(monkeypatch):
    # the residual stream still carries gradient around the block: only the norm's own weight starves
    ms = models()
    norm = ms["planner"].encoder.blocks[0].attn_norm
    forward = norm.forward
    monkeypatch.setattr(norm, "forward", lambda x: forward(x).detach())
    v = grad_flow(ms)
    assert v.detail["no_gradient"] == ["planner.encoder.blocks.0.attn_norm.weight"]
    assert (v.value, v.passed) == (1.0, False)


# --- padding and vocab on the real bundled corpus (M-003, M-026)

@pytest.fixture(scope="module")
def real_data():
    corpus = load_corpus(corpus_dir())
    cpu = torch.device("cpu")
    vocab = PlanVocab([i.name for i in corpus.intents if i.action])
    policy = build_policy_data(corpus.goals, corpus.intent_names, 80, cpu)
    plan = build_plan_data(corpus.plans, vocab, 120, 16, cpu)
    talk = build_talk_data(corpus.dialogues, TalkerConfig(encoder=EncoderConfig(seq_len=120), memory_k=1,
                                                          response_len=56), cpu)
    return policy, plan, talk, vocab.size


def test_padding_gate_passes_on_the_real_data(real_data):
    policy, plan, talk, _ = real_data
    v = padding_gate(policy, plan, talk)
    assert (v.name, v.value, v.passed) == ("padding", 0.0, True)
    assert v.detail["talk decoder"] == {"rows": talk.n, "bad": 0}


def test_padding_gate_fails_on_a_left_padded_decoder_row(real_data):
    policy, plan, talk, _ = real_data
    dec = talk.dec_inputs.clone()
    dec[17] = dec[17].roll(1)  # a PAD comes first, BOS moves to position 1
    v = padding_gate(policy, plan, replace(talk, dec_inputs=dec))
    assert (v.value, v.passed) == (1.0, False)
    assert v.summary == "1 rows break a padding rule; first: talk decoder row 17: BOS not at 0"


def test_padding_gate_fails_on_a_right_padded_encoder_row(real_data):
    policy, plan, talk, _ = real_data
    valid = policy.valid.clone()
    valid[5] = valid[5].flip(0)
    v = padding_gate(replace(policy, valid=valid), plan, talk)
    assert (v.value, v.passed) == (1.0, False)
    assert v.summary == "1 rows break a padding rule; first: policy encoder row 5: not left-padded"


def test_vocab_gate_passes_on_the_real_data(real_data):
    policy, plan, talk, plan_size = real_data
    v = vocab_gate(policy, plan, talk, plan_size)
    assert (v.name, v.value, v.passed) == ("vocab", 0.0, True)


def test_vocab_gate_names_byte_vocab_for_an_id_256_in_a_policy_row(real_data):
    policy, plan, talk, plan_size = real_data
    ids = policy.ids.clone()
    ids[3, 79] = 256
    v = vocab_gate(replace(policy, ids=ids), plan, talk, plan_size)
    assert (v.value, v.passed) == (1.0, False)
    assert v.summary == ("1 ids outside their vocabulary; first: policy ids: id 256 at (3, 79) is outside "
                         "BYTE_VOCAB (valid 0..255)")


def test_vocab_gate_names_talk_vocab_for_an_id_259_in_a_talker_decoder_row(real_data):
    policy, plan, talk, plan_size = real_data
    dec = talk.dec_inputs.clone()
    dec[4, 2] = 259
    v = vocab_gate(policy, plan, replace(talk, dec_inputs=dec), plan_size)
    assert (v.value, v.passed) == (1.0, False)
    assert v.summary == ("1 ids outside their vocabulary; first: talk decoder inputs: id 259 at (4, 2) is outside "
                         "TALK_VOCAB (valid 0..258)")
