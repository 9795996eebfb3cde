"""The talker: padding and BOS, memory from step 0, the denoise schedule, the DA rollback.

    python -m pytest tests/test_talker.py -q
"""

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.corpus.load import load_corpus
from navi_model.events import CheckpointReady, LogLine, MetricsLogged
from navi_model.model import EncoderConfig
from navi_model.talker import (
    TalkerConfig, TalkerModel, TalkerTrainConfig, build_talk_data, concept_similarity, denoise_share, encode_items,
    gallery_summary, generate, pad_denoise, prefix_use, sample_memory, score_gallery, train_talker,
)
from navi_model.vocab import TALK_BOS, TALK_EOS, TALK_PAD

CFG = TalkerConfig(encoder=EncoderConfig(seq_len=120, d_model=32, n_layers=1, n_heads=4), dec_layers=1, prefix_k=2,
                   memory_k=2, response_len=56)


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(corpus_dir())


@pytest.fixture(scope="module")
def data(corpus):
    return build_talk_data(corpus.dialogues[:120], CFG, torch.device("cpu"))


def model():
    torch.manual_seed(0)
    return TalkerModel(CFG)


def test_decoder_rows_are_right_padded_with_bos_at_zero(data):
    assert (data.dec_inputs[:, 0] == TALK_BOS).all()
    row = data.dec_inputs[0].tolist()
    n = int(data.resp_len[0])
    assert row[n + 1] == TALK_EOS and set(row[n + 2:]) == {TALK_PAD}


def test_encoder_rows_are_left_padded(data):
    valid = data.prompt_valid[0].tolist()
    assert valid[-1] and not valid[0] and valid == sorted(valid)  # pads first, then the prompt


def test_memory_is_the_turns_just_before_and_present_from_step_0(corpus, data):
    rows = corpus.dialogues[:120]
    idx = torch.tensor([i for i, d in enumerate(rows) if d["turn"] >= 2][:8] + [0])
    mem_ids, mem_valid, present = sample_memory(data, idx, K=2, gen=torch.Generator().manual_seed(0))
    assert not present[-1].any()  # a first turn has no memory
    assert present[:-1, -1].all()  # every later turn carries at least the turn just before it
    # slot K-1 holds the previous turn's text
    assert torch.equal(mem_ids[0, -1], data.mem_ids[idx[0] - 1])


def test_memory_prefix_share_is_counted_from_the_first_sft_step(data):
    events = []
    cfg = TalkerTrainConfig(batch_size=8, log_every=1, length_weighted_share=0.5)
    train_talker(model(), data, cfg, steps=3, device=torch.device("cpu"), emit=events.append, gallery=[])
    first = next(e for e in events if isinstance(e, MetricsLogged) and "memory_share" in e.values)
    assert first.step == 1 and first.values["memory_share"] > 0


def test_denoise_schedule_is_quadratic_up_to_its_max():
    assert denoise_share(0, 101, 0.2) == 0.0
    assert denoise_share(50, 101, 0.2) == pytest.approx(0.05)
    assert denoise_share(100, 101, 0.2) == pytest.approx(0.2)


def test_pad_denoise_touches_only_response_bytes():
    x = torch.tensor([[TALK_BOS] + [65] * 2000 + [TALK_EOS, TALK_PAD]])
    y = pad_denoise(x, 0.2, torch.Generator().manual_seed(0))
    assert y[0, 0] == TALK_BOS and y[0, -2] == TALK_EOS
    share = (y[0, 1:2001] == TALK_PAD).float().mean().item()
    assert 0.17 < share < 0.23


def test_absent_memory_slots_do_not_change_the_output():
    m = model().eval()
    item = {"prompt": "build it", "memory": []}
    inputs = encode_items([item], CFG, torch.device("cpu"))
    other = list(inputs)
    other[2] = torch.randint(0, 256, other[2].shape)  # different bytes in the masked-out slots
    dec = torch.tensor([[TALK_BOS, 65, 66]])
    a = m.decode(*m.encode_prefix(*inputs), dec)
    b = m.decode(*m.encode_prefix(*other), dec)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


def test_gallery_scores_and_diversity():
    items = [{"prompt": "a", "reference": "Starting the build."}, {"prompt": "b", "reference": "Checking disk usage."}]
    rows = score_gallery(items, ["Starting the build.", "Starting the build."])
    assert [r["exact"] for r in rows] == [True, False]
    s = gallery_summary(rows)
    assert s["gallery_exact"] == 0.5 and s["gallery_diversity"] == 0.5  # one answer for two different references


def test_an_untrained_talker_shows_no_prefix_use(corpus):
    # the gate's measurement on a model that cannot use its prefix: shuffled and true losses are close
    items = corpus.benches["gallery"].items[:20]
    true_loss, shuffled_loss = prefix_use(model(), items, torch.device("cpu"))
    assert shuffled_loss / true_loss < 1.2
    assert -1.0 <= concept_similarity(model(), [it["prompt"] for it in items], torch.device("cpu")) <= 1.0


def test_every_parameter_gets_a_gradient(data):
    m = model()
    idx = torch.arange(8)
    mem_ids, mem_valid, present = sample_memory(data, idx + 40, K=2)
    logits = m(data.prompt_ids[idx], data.prompt_valid[idx], mem_ids, mem_valid, present, data.dec_inputs[idx])
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.dec_targets[idx].reshape(-1),
                                      ignore_index=TALK_PAD).backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0 or not torch.isfinite(p.grad).all()]
    assert dead == []


def test_pre_da_checkpoint_and_rollback_on_a_planted_regression(corpus, data):
    # plant the regression: a DA learning rate so high it wrecks the decoder (M-039 at its worst)
    gallery = [{"prompt": d["prompt"], "reference": d["response"], "memory": []} for d in corpus.dialogues[:120:10]]
    events = []
    cfg = TalkerTrainConfig(batch_size=16, lr=3e-3, warmup_steps=5, log_every=20, da_steps=15, da_lr=1.0)
    m = model()
    result = train_talker(m, data, cfg, steps=60, device=torch.device("cpu"), emit=events.append, gallery=gallery)
    ckpts = [e for e in events if isinstance(e, CheckpointReady)]
    assert [c.phase for c in ckpts] == ["sft", "da"]  # the SFT-only checkpoint is saved before DA
    assert result.rolled_back
    assert any(isinstance(e, LogLine) and e.kind == "rollback" and e.data["restore"] == ckpts[0].name for e in events)
    # after the rollback the model is the SFT model again: same weights, same gallery
    sft_weights = ckpts[0].payload["model"]
    assert all(torch.equal(v, sft_weights[k]) for k, v in m.state_dict().items() if k in sft_weights)
    assert generate(m, gallery, torch.device("cpu")) == [r["output"] for r in result.gallery]


def test_da_that_does_not_regress_is_kept(corpus, data):
    gallery = [{"prompt": d["prompt"], "reference": d["response"], "memory": []} for d in corpus.dialogues[:120:10]]
    cfg = TalkerTrainConfig(batch_size=16, lr=3e-3, warmup_steps=5, log_every=20, da_steps=2, da_lr=0.0, da_tolerance=0.0)
    result = train_talker(model(), data, cfg, steps=20, device=torch.device("cpu"), emit=lambda e: None, gallery=gallery)
    assert not result.rolled_back and result.da_steps == 2


def test_concept_sim_sees_a_collapsed_encoder(corpus):
    # plant M-031's failure: every byte embedded alike, so every prompt gives the same concept
    m = model()
    with torch.no_grad():
        for table in filter(None, (m.encoder.embed, m.encoder.ngram)):  # bytes and their n-grams alike
            table.weight.copy_(table.weight[65].expand_as(table.weight))
        if m.encoder.word is not None:  # and no word read at all
            m.encoder.word.weight.zero_()
    prompts = [it["prompt"] for it in corpus.benches["gallery"].items]
    from navi_model.gates import concept_sim_gate

    sim = concept_similarity(m, prompts, torch.device("cpu"))
    assert sim > 0.99
    assert not concept_sim_gate(sim, 0.9).passed


def test_concept_similarity_and_samples_are_measured_during_sft(corpus, data):
    gallery = [{"prompt": d["prompt"], "reference": d["response"], "memory": []} for d in corpus.dialogues[:120:10]]
    events = []
    cfg = TalkerTrainConfig(batch_size=8, log_every=10, sample_every=4)
    train_talker(model(), data, cfg, steps=9, device=torch.device("cpu"), emit=events.append, gallery=gallery)
    sims = [e.step for e in events if isinstance(e, MetricsLogged) and "concept_sim" in e.values]
    samples = [e for e in events if isinstance(e, LogLine) and e.kind == "sample"]
    assert sims == [4, 8]
    assert len(samples) == 6 and samples[0].data["step"] == 4 and "output" in samples[0].data


def test_a_gallery_request_is_served_at_the_next_step_boundary(corpus, data):
    """The console's g key while the talker trains: the whole gallery, once, between two steps."""
    from navi_model.control import TrainingControl

    gallery = corpus.benches["gallery"].items[:6]
    control = TrainingControl()
    control.request("gallery")
    events = []
    cfg = TalkerTrainConfig(batch_size=8, log_every=1, da_steps=0, sample_every=0)
    train_talker(model(), data, cfg, steps=3, device=torch.device("cpu"), emit=events.append, gallery=gallery,
                 control=control)
    samples = [e for e in events if isinstance(e, LogLine) and e.kind == "sample"]
    assert [s.data["prompt"] for s in samples] == [g["prompt"] for g in gallery]
    assert {s.data["step"] for s in samples} == {1}  # served at the first boundary, and only once
    assert not control.take("gallery")
