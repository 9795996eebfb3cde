"""The talker's data-flow trace: stages in order, logits equal to the model's own, the model left
untouched, and a planted collapse found where it was planted (M-010, M-029, M-031).

    cd /work/main && PYTHONPATH=/work/main python -m pytest tests/test_diagnose.py -q
"""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from navi_model.assets import corpus_dir
from navi_model.corpus.load import load_corpus
from navi_model.diagnose import StageRow, collapse_point, diversity, format_trace, trace_talker, trace_tensors
from navi_model.model import EncoderConfig
from navi_model.talker import TalkerConfig, TalkerModel, encode_items
from navi_model.vocab import encode_decoder_batch

CFG = TalkerConfig(encoder=EncoderConfig(seq_len=120, d_model=32, n_layers=1, n_heads=4), dec_layers=1, prefix_k=2,
                   memory_k=1, response_len=56)
CPU = torch.device("cpu")
STAGES = ["input", "embedding", "encoder layer 0", "encoder norm", "pooled", "concept", "prefix", "decoder layer 0",
          "logits"]
ENCODER_STAGES = ["embedding", "encoder layer 0", "encoder norm", "pooled", "concept"]


@pytest.fixture(scope="module")
def items():
    gallery = load_corpus(corpus_dir()).benches["gallery"].items
    with_memory = [it for it in gallery if it["memory"]]
    chosen = [it for it in gallery if not it["memory"]][:9] + with_memory[:3]
    assert len({it["prompt"] for it in chosen}) == 12
    return chosen


def fresh_model() -> TalkerModel:
    torch.manual_seed(0)
    return TalkerModel(CFG)


def model_logits(model: TalkerModel, items: list[dict]) -> torch.Tensor:
    dec_in, _ = encode_decoder_batch([it["reference"] for it in items], CFG.response_len)
    with torch.no_grad():
        return model(*encode_items(items, CFG, CPU), dec_in)


def snapshot(model: TalkerModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- the trace of a healthy model

def test_trace_has_every_stage_in_order_with_bounded_diversity_and_finite_encoder_gradients(items):
    rows = trace_talker(fresh_model(), items, CPU)
    assert [r.stage for r in rows] == STAGES
    # 12 prompts + 12 memory slots (memory_k 1) in the encoder batch; prefix (memory_k + 1) * prefix_k = 4
    assert [r.shape for r in rows] == [(24, 120), (24, 120, 32), (24, 120, 32), (24, 120, 32), (24, 32), (24, 32),
                                       (12, 4, 32), (12, 60, 32), (12, 56, 259)]
    assert all(-1.0 <= r.diversity <= 1.0 for r in rows)
    assert rows[0].grad_norm is None  # byte ids
    grads = {r.stage: r.grad_norm for r in rows}
    for stage in ENCODER_STAGES + ["prefix", "decoder layer 0", "logits"]:
        assert math.isfinite(grads[stage]) and grads[stage] > 0, stage


def test_traced_logits_equal_the_models_own_forward_in_eval_and_in_train_mode(items):
    model = fresh_model().eval()
    traced = trace_tensors(model, items, CPU, train=False)["logits"]
    assert torch.equal(traced, model_logits(model, items))

    model = fresh_model()
    traced = trace_tensors(model, items, CPU, train=True)["logits"]
    model.train()  # batch statistics in the batch norm, as in the trace
    assert torch.equal(traced, model_logits(model, items))


def test_trace_leaves_weights_running_stats_modes_and_grads_unchanged(items):
    model = fresh_model().eval()
    before = snapshot(model)
    assert before["concept_norm.num_batches_tracked"].item() == 0
    trace_talker(model, items, CPU, train=True)
    after = snapshot(model)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert not any(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_trace_gives_gradients_with_a_frozen_encoder_under_no_grad(items):
    model = fresh_model()
    model.encoder.requires_grad_(False)
    with torch.no_grad():
        rows = trace_talker(model, items, CPU)
    assert all(r.grad_norm is not None and r.grad_norm > 0 for r in rows[1:])
    assert torch.is_grad_enabled()


def test_healthy_model_has_no_collapse_and_a_diverse_concept(items):
    rows = trace_talker(fresh_model(), items, CPU)
    concept = next(r for r in rows if r.stage == "concept")
    assert concept.diversity < 0.9
    assert collapse_point(rows) is None
    text = format_trace(rows)
    assert "->" not in text
    assert text.splitlines()[-1] == "no collapse: no stage's diversity rises to 0.9 or above from below it."


# --- planted faults: the collapse point moves with the fault

def test_embedding_plant_collapses_at_the_embedding(items):
    model = fresh_model()
    with torch.no_grad():  # every byte the same vector: every prompt is the same after the embedding
        table = model.encoder.embed.weight
        table.copy_(table[65].expand_as(table))
    rows = trace_talker(model, items, CPU)
    point = collapse_point(rows)
    assert point is not None and point.stage == "embedding"
    div = {r.stage: r.diversity for r in rows}
    assert div["input"] < 0.9  # the prompts differed before
    for stage in ["embedding", "encoder layer 0", "encoder norm", "pooled"]:
        assert div[stage] == pytest.approx(1.0, abs=1e-6), stage
    text = format_trace(rows)
    assert "-> embedding " in text
    assert "diversity is lost at stage 'embedding'" in text.splitlines()[-1]


def test_concept_plant_collapses_at_the_concept(items):
    model = fresh_model()
    C = CFG.encoder.d_model
    gen = torch.Generator().manual_seed(1)
    u, v = F.normalize(torch.randn(C, generator=gen), dim=0), F.normalize(torch.randn(C, generator=gen), dim=0)
    # rank-1 u v^T plus a shared offset along u: every concept points along +u. (A rank-1 weight alone
    # gives +-u: the batch norm before it centres the batch, so the signs mix and the cosine stays low.)
    planted = nn.Linear(C, C, bias=True)
    with torch.no_grad():
        planted.weight.copy_(torch.outer(u, v))
        planted.bias.copy_(100.0 * u)
    model.to_concept = planted
    rows = trace_talker(model, items, CPU)
    point = collapse_point(rows)
    assert point is not None and point.stage == "concept"
    div = {r.stage: r.diversity for r in rows}
    assert div["pooled"] < 0.9 and div["concept"] == pytest.approx(1.0, abs=1e-6)
    grads = {r.stage: r.grad_norm for r in rows}
    # the encoder's gradient dies behind the collapsed concept: ||u v^T|| = 1 against a bias of 100
    assert grads["pooled"] < 1e-6 * grads["prefix"]
    text = format_trace(rows)
    assert "-> concept " in text
    assert "diversity is lost at stage 'concept'" in text.splitlines()[-1]


def test_rank_one_concept_weight_alone_does_not_read_as_collapse_after_the_batch_norm(items):
    model = fresh_model()
    gen = torch.Generator().manual_seed(1)
    u, v = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    with torch.no_grad():
        model.to_concept.weight.copy_(torch.outer(u, v))
    concept = next(r for r in trace_talker(model, items, CPU) if r.stage == "concept")
    assert concept.diversity < 0.9  # +-u across a centred batch: the limit of a cosine measure


# --- the pieces

def test_diversity_is_the_mean_pairwise_cosine():
    assert diversity(torch.ones(4, 3)) == 1.0
    assert diversity(torch.eye(3)) == 0.0
    assert diversity(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == -1.0
    assert diversity(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1 / 3)
    assert diversity(torch.zeros(3, 5)) == 1.0  # every sample mapped to zero: collapsed
    assert diversity(torch.tensor([[0.0, 0.0], [1.0, 0.0]])) == 0.0
    assert math.isnan(diversity(torch.ones(1, 4)))


def test_collapse_point_is_the_first_rise_through_the_threshold():
    def rows(*divs):
        return [StageRow(f"s{i}", d, None, ()) for i, d in enumerate(divs)]

    assert collapse_point(rows(0.5, 0.95, 0.2, 0.99)).stage == "s1"
    assert collapse_point(rows(0.5, 0.8, 0.9)).stage == "s2"  # >= threshold
    assert collapse_point(rows(0.95, 0.99)) is None  # alike from the input on: nothing lost in the model
    assert collapse_point(rows(0.5, 0.8)) is None
    assert collapse_point(rows(0.5, 0.8), threshold=0.7).stage == "s1"
    assert collapse_point([]) is None


def test_format_trace_marks_the_collapse_with_an_arrow():
    rows = [StageRow("input", 0.5, None, (2, 3)), StageRow("embedding", 0.95, 1.5e-3, (2, 3, 4)),
            StageRow("logits", 0.3, 0.0, (2, 5))]
    assert format_trace(rows) == "\n".join([
        "   stage      diversity  grad norm   shape",
        "   input         0.5000          -   2x3",
        "-> embedding     0.9500  1.500e-03   2x3x4",
        "   logits        0.3000  0.000e+00   2x5",
        "diversity is lost at stage 'embedding': mean pairwise cosine 0.9500 (>= 0.9) after 0.5000 at 'input'.",
        "the gradient is zero or not finite at: logits.",
    ])
