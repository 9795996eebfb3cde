"""The policy as an ensemble of members (model.PolicyModel, train.MemberSampler): how it answers,
how each member trains on batches of its own, and what its checkpoints hold.

    python -m pytest tests/test_policy_ensemble.py -q
"""

import io

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.config import TrainConfig
from navi_model.corpus.load import load_corpus
from navi_model.data import build_policy_data
from navi_model.evaluate import policy_from_payload
from navi_model.events import CheckpointReady
from navi_model.model import EncoderConfig, PolicyModel, payload_members
from navi_model.payload import PayloadError, check_payload
from navi_model.train import EpochSampler, MemberSampler, policy_loss, train_policy
from navi_model.vocab import encode_encoder_batch

CPU = torch.device("cpu")
INTENTS = ["build", "test", "greet", "disk_usage"]
ENC = EncoderConfig(seq_len=64, d_model=32, n_layers=1, n_heads=4)


def policy(members: int, seed: int = 0) -> PolicyModel:
    torch.manual_seed(seed)
    return PolicyModel(ENC, len(INTENTS), members)


@pytest.fixture(scope="module")
def data():
    goals = [g for g in load_corpus(corpus_dir()).goals if g["intent"] in INTENTS][:48]
    return build_policy_data(goals, INTENTS, 64, CPU)


def test_a_one_member_policy_keeps_its_checkpoint_keys_and_answers_with_its_logits():
    model = policy(1).eval()
    assert {k.split(".")[0] for k in model.state_dict()} == {"encoder", "head"}
    ids, valid = encode_encoder_batch(["build it", "hi there"], 64)
    _, pooled = model.encoder(ids, valid)
    torch.testing.assert_close(model(ids, valid), model.head(pooled))


def test_an_ensemble_answers_with_the_mean_of_its_members_probabilities():
    model = policy(3).eval()
    ids, valid = encode_encoder_batch(["build it", "hi there", "how full is the disk"], 64)
    members = model(ids, valid, per_member=True)
    assert members.shape == (3, 3, len(INTENTS))
    assert not torch.allclose(members[0], members[1])  # each member starts from its own weights
    mean = members.softmax(-1).mean(0)
    torch.testing.assert_close(model(ids, valid).exp(), mean)


def test_member_samplers_walk_whole_epochs_each_in_an_order_of_its_own():
    one, plain = MemberSampler(1, 10, 5, CPU, seed=3), EpochSampler(10, 5, CPU, seed=3)
    assert [one.next().tolist() for _ in range(4)] == [plain.next().tolist() for _ in range(4)]

    three = MemberSampler(3, 10, 5, CPU, seed=3)
    batches = [three.next() for _ in range(2)]  # one epoch
    assert batches[0].shape == (5, 3)
    epoch = torch.cat(batches)
    for j in range(3):
        assert sorted(epoch[:, j].tolist()) == list(range(10))
    lone = EpochSampler(10, 5, CPU, seed=3)
    assert epoch[:, 0].tolist() == lone.next().tolist() + lone.next().tolist()  # member 0 draws as a lone policy
    assert len({tuple(epoch[:, j].tolist()) for j in range(3)}) == 3


def test_a_member_sampler_round_trips_and_refuses_another_member_count():
    a = MemberSampler(3, 10, 4, CPU, seed=3)
    for _ in range(3):
        a.next()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = MemberSampler(3, 10, 4, CPU, seed=99)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert [a.next().tolist() for _ in range(5)] == [b.next().tolist() for _ in range(5)]
    with pytest.raises(ValueError, match="3 policy members does not fit 2"):
        MemberSampler(2, 10, 4, CPU, seed=3).load_state_dict(a.state_dict())


def test_each_member_learns_from_its_own_batch_only(data):
    model = policy(2)
    loss_fn = policy_loss(model, data, CPU)

    def member0_grad(idx):
        model.zero_grad()
        loss_fn(idx)[0].backward()
        return [p.grad.clone() for p in [*model.encoder.parameters(), *model.head.parameters()] if p.grad is not None]

    rows = torch.arange(8)
    same = member0_grad(torch.stack([rows, rows + 8], dim=1))
    other = member0_grad(torch.stack([rows, rows + 24], dim=1))  # only member 1's rows change
    assert all(torch.equal(a, b) for a, b in zip(same, other))
    moved = member0_grad(torch.stack([rows + 24, rows + 8], dim=1))
    assert not all(torch.equal(a, b) for a, b in zip(same, moved))


def test_an_ensemble_trains_checkpoints_and_loads_as_it_answered(data):
    payloads = []
    model = policy(2)
    before = [p.detach().clone() for p in model.others[0].parameters()]
    train_policy(model, data, TrainConfig(batch_size=16, warmup_steps=2, log_every=2), steps=6, device=CPU,
                 emit=lambda e: payloads.append(e.payload) if isinstance(e, CheckpointReady) else None,
                 checkpoint_extra={"intents": [{"name": n, "description": n, "meta": False, "action": True}
                                               for n in INTENTS]})
    assert not all(torch.equal(a, b) for a, b in zip(before, model.others[0].parameters()))  # member 1 trained
    payload = payloads[-1]
    assert payload["members"] == 2 and len(payload["sampler"]["members"]) == 1
    check_payload("policy", payload, resume=True)
    loaded = policy_from_payload(payload, CPU)
    ids, valid = encode_encoder_batch(["build it", "hi there"], 64)
    torch.testing.assert_close(loaded(ids, valid), model.eval()(ids, valid))

    assert payload_members({k: v for k, v in payload.items() if k != "members"}) == 1  # before ensembles
    for bad in (0, "2", 1.0):
        with pytest.raises(PayloadError, match="key 'members'"):
            check_payload("policy", {**payload, "members": bad})


# --- the talker reads every member's encoder ------------------------------------------------------

def test_a_talker_reads_every_members_encoder_side_by_side_warm_and_frozen():
    from navi_model.config import TalkerConfig, TalkerTrainConfig
    from navi_model.talker import EncoderCache, TalkerModel, build_talk_data, train_talker

    enc = EncoderConfig(seq_len=120, d_model=32, n_layers=1, n_heads=4)  # memory texts are long
    cfg = TalkerConfig(encoder=enc, dec_layers=1, prefix_k=2, memory_k=1, response_len=56, encoders=3)
    torch.manual_seed(0)
    pol = PolicyModel(enc, len(INTENTS), 3)
    talker = TalkerModel(cfg)
    with pytest.raises(ValueError, match="3 encoders needs a policy of as many members, not 2"):
        talker.warm_from(PolicyModel(enc, len(INTENTS), 2).member_encoders())
    talker.warm_from(pol.member_encoders())
    ids, valid = encode_encoder_batch(["build it", "hi there"], 120)
    want = torch.cat([enc(ids, valid)[1] for enc in pol.member_encoders()], dim=-1)
    torch.testing.assert_close(talker.pooled(ids, valid), want)  # member j's vector in slot j
    assert talker.to_concept.in_features == 3 * enc.d_model

    dialogues = load_corpus(corpus_dir()).dialogues[:40]
    data = build_talk_data(dialogues, cfg, CPU)
    frozen = {k: v.clone() for k, v in talker.state_dict().items() if "encoder" in k}
    train_talker(talker, data, TalkerTrainConfig(batch_size=8, warmup_steps=1, log_every=2, freeze_encoder=True),
                 steps=3, device=CPU, emit=lambda e: None, gallery=[])
    moved = [k for k, v in talker.state_dict().items() if "encoder" in k and not torch.equal(frozen[k], v)]
    assert moved == []  # every encoder stays as the policy left it, not the first alone
    cache = EncoderCache.build(talker, data, CPU)
    assert cache.prompt.shape == (data.n, 3 * enc.d_model)
