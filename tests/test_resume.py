"""Resuming a trainer from a checkpoint payload it emitted: a run stopped at step k and resumed
from its (saved and reloaded) payload ends exactly where a straight run ends.

    cd /work/main && PYTHONPATH=/work/main python -m pytest tests/test_resume.py -q
"""

import dataclasses
import io

import pytest
import torch

from navi_model.assets import corpus_dir
from navi_model.config import TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import load_corpus
from navi_model.data import build_policy_data
from navi_model.events import CheckpointReady, LogLine, MetricsLogged
from navi_model.model import EncoderConfig, PolicyModel
from navi_model.planner import PlannerConfig, PlannerModel, PlanVocab, build_plan_data, train_planner
from navi_model.talker import TalkerConfig, TalkerModel, TalkerTrainConfig, build_talk_data, train_talker
from navi_model.train import EpochSampler, train_policy

CPU = torch.device("cpu")
INTENTS = ["build", "test", "greet", "disk_usage", "memory_add", "git_log"]
ACTIONS = ["build", "test", "lint"]
TALK_CFG = TalkerConfig(encoder=EncoderConfig(seq_len=120, d_model=32, n_layers=1, n_heads=4), dec_layers=1,
                        prefix_k=2, memory_k=2, response_len=56)


def roundtrip(payload: dict) -> dict:
    buf = io.BytesIO()
    torch.save(payload, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


class Recorder:
    """An emit function: keeps the events, keeps each checkpoint payload as it would come back
    from disk (saved at once: on the CPU a payload shares storage with the live model), and stops
    the run once the metrics of step `stop_at` (of phase `stop_phase`) are logged."""

    def __init__(self, stop_at: int | None = None, stop_phase: str | None = None):
        self.control = TrainingControl()
        self.events, self.payloads = [], []
        self.stop_at, self.stop_phase = stop_at, stop_phase

    def __call__(self, e):
        self.events.append(e)
        if isinstance(e, CheckpointReady):
            self.payloads.append((e.phase, roundtrip(e.payload)))
        if (isinstance(e, MetricsLogged) and "loss" in e.values and e.step == self.stop_at
                and self.stop_phase in (None, e.phase)):
            self.control.stop()

    def loss_steps(self, phase: str) -> list[int]:
        return [e.step for e in self.events if isinstance(e, MetricsLogged) and e.phase == phase and "loss" in e.values]

    def logs(self, kind: str) -> list[LogLine]:
        return [e for e in self.events if isinstance(e, LogLine) and e.kind == kind]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(corpus_dir())


# --- the sampler ---------------------------------------------------------------------------------

def test_sampler_state_round_trips_and_continues_the_same_batches():
    a = EpochSampler(10, 4, CPU, seed=3)
    for _ in range(3):  # mid-epoch: 2 of 10 rows left in the permutation
        a.next()
    b = EpochSampler(10, 4, CPU, seed=99)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert [a.next().tolist() for _ in range(6)] == [b.next().tolist() for _ in range(6)]
    with pytest.raises(ValueError, match="batches of 4"):
        EpochSampler(10, 5, CPU, seed=3).load_state_dict(a.state_dict())


def test_length_buckets_see_every_row_once_per_epoch_in_batches_of_about_one_length():
    lengths = torch.randint(4, 120, (1000,), generator=torch.Generator().manual_seed(0))
    plain = EpochSampler(1000, 10, CPU, seed=3)
    bucketed = EpochSampler(1000, 10, CPU, seed=3, lengths=lengths, bucket=200)
    epochs = {name: [s.next() for _ in range(100)] for name, s in (("plain", plain), ("bucketed", bucketed))}
    for batches in epochs.values():
        assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    columns = {name: sum(int(lengths[b].max()) for b in batches) for name, batches in epochs.items()}
    assert columns["bucketed"] < 0.7 * columns["plain"]  # the columns a CPU step reads after the trim
    # the batches' order is drawn too: not shortest first
    maxes = [int(lengths[b].max()) for b in epochs["bucketed"]]
    assert maxes != sorted(maxes)
    # without a window, or without lengths, the draws are the plain sampler's
    again = [EpochSampler(1000, 10, CPU, seed=3, lengths=lengths, bucket=0), EpochSampler(1000, 10, CPU, seed=3)]
    assert [s.next().tolist() for s in again] == [epochs["plain"][0].tolist()] * 2


def test_a_bucketed_sampler_round_trips_and_continues_the_same_batches():
    lengths = torch.arange(50) % 7
    a = EpochSampler(50, 4, CPU, seed=3, lengths=lengths, bucket=16)
    for _ in range(11):  # mid-epoch
        a.next()
    b = EpochSampler(50, 4, CPU, seed=99, lengths=lengths, bucket=16)
    b.load_state_dict(roundtrip(a.state_dict()))
    assert [a.next().tolist() for _ in range(30)] == [b.next().tolist() for _ in range(30)]


# --- policy --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def policy_data(corpus):
    goals = [g for g in corpus.goals if g["intent"] in INTENTS][:40]  # 40 rows: batches of 16 cross epochs
    return build_policy_data(goals, INTENTS, 64, CPU)


def policy(seed=0):
    torch.manual_seed(seed)
    return PolicyModel(EncoderConfig(seq_len=64, d_model=32, n_layers=1, n_heads=4), len(INTENTS))


def test_policy_resumed_run_ends_where_a_straight_run_ends(policy_data):
    cfg = TrainConfig(batch_size=16, warmup_steps=3, log_every=2)
    straight = policy()
    r0 = train_policy(straight, policy_data, cfg, steps=10, device=CPU, emit=lambda e: None)

    first = Recorder(stop_at=4)
    r1 = train_policy(policy(), policy_data, cfg, steps=10, device=CPU, emit=first, control=first.control)
    assert r1.stopped and r1.steps == 4
    phase, payload = first.payloads[-1]
    assert payload["step"] == 4 and {"sampler", "seen"} <= payload.keys()

    rec = Recorder()
    resumed = policy(seed=1)  # other initial weights: the resume must load them
    r2 = train_policy(resumed, policy_data, cfg, steps=10, device=CPU, emit=rec, resume=payload)
    assert r2.steps == 10 and not r2.stopped
    assert rec.loss_steps("policy") == [6, 8, 10]
    assert rec.logs("resume")[0].message.endswith("continuing from step 4 of 10")
    assert_same_weights(resumed, straight)
    assert (r2.coverage_min, r2.coverage_mean) == (r0.coverage_min, r0.coverage_mean)

    # nothing left: no step, the same weights, a checkpoint under the same step
    done = Recorder()
    again = policy(seed=2)
    r3 = train_policy(again, policy_data, cfg, steps=10, device=CPU, emit=done, resume=rec.payloads[-1][1])
    assert r3.steps == 10 and done.loss_steps("policy") == []
    assert [e.name for e in done.events if isinstance(e, CheckpointReady)] == ["policy_000010"]
    assert_same_weights(again, straight)
    assert (r3.coverage_min, r3.coverage_mean) == (r0.coverage_min, r0.coverage_mean)


# --- planner -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan_data():
    vocab = PlanVocab(ACTIONS)
    plans = [{"goal": "build it", "plan": ["build"]}, {"goal": "run the tests", "plan": ["test"]},
             {"goal": "lint then build", "plan": ["lint", "build"]}, {"goal": "build it", "plan": ["build"]},
             {"goal": "test, lint, build", "plan": ["test", "lint", "build"]}]
    return vocab, build_plan_data(plans, vocab, 24, 8, CPU)


def planner(vocab, seed=0):
    torch.manual_seed(seed)
    cfg = PlannerConfig(EncoderConfig(seq_len=24, d_model=32, n_layers=1, n_heads=4), step_layers=1, plan_len=8)
    return PlannerModel(cfg, vocab.size)


def test_planner_resumed_run_ends_where_a_straight_run_ends(plan_data):
    vocab, data = plan_data
    cfg = TrainConfig(batch_size=4, warmup_steps=3, log_every=3)
    straight = planner(vocab)
    r0 = train_planner(straight, data, cfg, steps=12, device=CPU, emit=lambda e: None, vocab=vocab)

    first = Recorder(stop_at=6)
    r1 = train_planner(planner(vocab), data, cfg, steps=12, device=CPU, emit=first, vocab=vocab,
                       control=first.control)
    assert r1.stopped and r1.steps == 6
    rec = Recorder()
    resumed = planner(vocab, seed=1)
    r2 = train_planner(resumed, data, cfg, steps=12, device=CPU, emit=rec, vocab=vocab,
                       resume=first.payloads[-1][1])
    assert r2.steps == 12 and not r2.stopped
    assert rec.loss_steps("planner") == [9, 12]
    assert_same_weights(resumed, straight)
    assert (r2.coverage_min, r2.coverage_mean) == (r0.coverage_min, r0.coverage_mean)


def test_planner_refuses_a_payload_of_another_vocabulary(plan_data):
    vocab, data = plan_data
    rec = Recorder()
    train_planner(planner(vocab), data, TrainConfig(batch_size=4), steps=1, device=CPU, emit=rec, vocab=vocab)
    payload = rec.payloads[-1][1]
    payload["actions"] = list(reversed(ACTIONS))  # same size, other ids
    with pytest.raises(ValueError, match="actions"):
        train_planner(planner(vocab), data, TrainConfig(batch_size=4), steps=2, device=CPU, emit=lambda e: None,
                      vocab=vocab, resume=payload)


# --- talker --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def talk(corpus):
    data = build_talk_data(corpus.dialogues[:40], TALK_CFG, CPU)  # 40 rows, 4 per epoch batch: crosses epochs
    gallery = [{"prompt": d["prompt"], "reference": d["response"], "memory": []} for d in corpus.dialogues[:40:15]]
    return data, gallery


def talker(seed=0):
    torch.manual_seed(seed)
    return TalkerModel(TALK_CFG)


# a tolerance no gallery can drop below: DA is always kept, so final weights are DA weights
TALK_TRAIN = TalkerTrainConfig(batch_size=8, lr=3e-3, warmup_steps=3, log_every=2, da_steps=4, da_lr=1e-3,
                               da_tolerance=2.0)


@pytest.fixture(scope="module")
def straight_talker(talk):
    data, gallery = talk
    m = talker()
    rec = Recorder()
    result = train_talker(m, data, TALK_TRAIN, steps=12, device=CPU, emit=rec, gallery=gallery)
    assert (result.sft_steps, result.da_steps, result.rolled_back) == (12, 4, False)
    return m, result, rec


def test_talker_resumed_from_sft_ends_where_a_straight_run_ends(talk, straight_talker):
    data, gallery = talk
    straight, r0, _ = straight_talker
    first = Recorder(stop_at=6, stop_phase="sft")
    r1 = train_talker(talker(), data, TALK_TRAIN, steps=12, device=CPU, emit=first, gallery=gallery,
                      control=first.control)
    assert r1.stopped and r1.sft_steps == 6
    phase, payload = first.payloads[-1]
    assert phase == "sft" and payload["step"] == 6 and {"sampler", "seen", "gen_state"} <= payload.keys()

    rec = Recorder()
    resumed = talker(seed=1)
    r2 = train_talker(resumed, data, TALK_TRAIN, steps=12, device=CPU, emit=rec, gallery=gallery, resume=payload)
    assert (r2.sft_steps, r2.da_steps, r2.stopped) == (12, 4, False)
    assert rec.loss_steps("sft") == [8, 10, 12] and rec.loss_steps("da") == [14, 16]
    assert [(p, pl["step"]) for p, pl in rec.payloads] == [("sft", 12), ("da", 16)]
    assert_same_weights(resumed, straight)
    assert (r2.coverage_min, r2.coverage_mean, r2.memory_share) == (r0.coverage_min, r0.coverage_mean, r0.memory_share)
    assert r2.pre_da == r0.pre_da and r2.post_da == r0.post_da


def test_talker_resumed_from_da_runs_only_the_rest_of_da(talk, straight_talker):
    data, gallery = talk
    _, r0, _ = straight_talker
    first = Recorder(stop_at=14, stop_phase="da")  # 2 of 4 DA steps
    r1 = train_talker(talker(), data, TALK_TRAIN, steps=12, device=CPU, emit=first, gallery=gallery,
                      control=first.control)
    assert r1.da_steps == 2
    phase, payload = first.payloads[-1]
    assert phase == "da" and payload["step"] == 14 and payload["sft_steps"] == 12
    assert payload["pre_da"] == r1.pre_da and {"sampler", "seen", "gen_state"} <= payload.keys()

    rec = Recorder()
    r2 = train_talker(talker(seed=1), data, TALK_TRAIN, steps=12, device=CPU, emit=rec, gallery=gallery,
                      resume=payload)
    assert rec.loss_steps("sft") == [] and rec.loss_steps("da") == [16]
    assert rec.logs("resume")[0].message.endswith("continuing from step 2 of 4")
    assert [(p, pl["step"]) for p, pl in rec.payloads] == [("da", 16)]  # no SFT checkpoint again
    assert (r2.sft_steps, r2.da_steps, r2.stopped, r2.rolled_back) == (12, 4, False, False)
    # coverage counts the whole of SFT, from the restored counts
    assert (r2.coverage_min, r2.coverage_mean, r2.memory_share) == (r0.coverage_min, r0.coverage_mean, r0.memory_share)
    assert r2.pre_da == r0.pre_da and r2.post_da is not None and len(r2.gallery) == len(gallery)


def test_talker_resumed_with_nothing_left_runs_no_step(talk, straight_talker):
    data, gallery = talk
    straight, r0, straight_rec = straight_talker
    sft_payload = dict(straight_rec.payloads[0][1])
    da_payload = straight_rec.payloads[-1][1]

    # from the final DA payload: no SFT, no DA step, the same weights
    rec = Recorder()
    m = talker(seed=1)
    r = train_talker(m, data, TALK_TRAIN, steps=12, device=CPU, emit=rec, gallery=gallery, resume=da_payload)
    assert rec.loss_steps("sft") == rec.loss_steps("da") == []
    assert (r.sft_steps, r.da_steps, r.rolled_back) == (12, 4, False)
    assert_same_weights(m, straight)
    assert r.post_da == r0.post_da and [x["output"] for x in r.gallery] == [x["output"] for x in r0.gallery]

    # from the SFT payload with SFT done and no DA: no step, the SFT weights
    rec = Recorder()
    m = talker(seed=1)
    no_da = dataclasses.replace(TALK_TRAIN, da_steps=0)
    r = train_talker(m, data, no_da, steps=12, device=CPU, emit=rec, gallery=gallery, resume=sft_payload)
    assert rec.loss_steps("sft") == [] and (r.sft_steps, r.da_steps, r.stopped) == (12, 0, False)
    assert [(p, pl["step"]) for p, pl in rec.payloads] == [("sft", 12)]
    assert all(torch.equal(v, sft_payload["model"][k]) for k, v in m.state_dict().items())
    assert (r.coverage_min, r.coverage_mean) == (r0.coverage_min, r0.coverage_mean)


def test_a_da_regression_after_a_da_resume_is_kept_for_the_gate_not_rolled_back(talk, straight_talker):
    data, gallery = talk
    _, _, straight_rec = straight_talker
    payload = dict(straight_rec.payloads[-1][1])
    # plant the regression: a perfect pre-DA gallery that a tiny model cannot match, no tolerance
    payload["pre_da"] = {"gallery_similarity": 1.0, "gallery_exact": 1.0, "gallery_diversity": 1.0}
    strict = dataclasses.replace(TALK_TRAIN, da_tolerance=0.0)
    rec = Recorder()
    r = train_talker(talker(), data, strict, steps=12, device=CPU, emit=rec, gallery=gallery, resume=payload)
    assert r.post_da["gallery_similarity"] < 1.0
    assert not r.rolled_back and rec.logs("rollback") == []
    assert [e.level for e in rec.logs("da")] == ["warn"]
    assert r.pre_da == payload["pre_da"]
    assert len(r.gallery) == len(gallery)  # the DA model's gallery: it is the model in use


# --- periodic checkpoints inside a phase ----------------------------------------------------------

def test_periodic_checkpoints_in_a_phase_resume_to_the_straight_run(policy_data):
    # a crash loses at most checkpoint_every_s of a phase: every step here (1 ns), to see each one
    cfg = TrainConfig(batch_size=16, warmup_steps=3, log_every=2, checkpoint_every_s=1e-9)
    straight = policy()
    train_policy(straight, policy_data, dataclasses.replace(cfg, checkpoint_every_s=0), steps=8, device=CPU,
                 emit=lambda e: None)
    rec = Recorder()
    train_policy(policy(), policy_data, cfg, steps=8, device=CPU, emit=rec)
    names = [e.name for e in rec.events if isinstance(e, CheckpointReady)]
    # one per step, the last step's once: never two checkpoints under one name
    assert names == [f"policy_{s:06d}" for s in range(1, 9)]
    mid = rec.payloads[4][1]  # after step 5
    assert mid["step"] == 5
    resumed = policy(seed=3)
    train_policy(resumed, policy_data, cfg, steps=8, device=CPU, emit=lambda e: None, resume=mid)
    assert_same_weights(resumed, straight)


def test_periodic_sft_checkpoints_and_the_pre_da_checkpoint_share_no_name(talk):
    data, gallery = talk
    cfg = dataclasses.replace(TALK_TRAIN, checkpoint_every_s=1e-9)
    rec = Recorder()
    train_talker(talker(), data, cfg, steps=6, device=CPU, emit=rec, gallery=gallery)
    names = [e.name for e in rec.events if isinstance(e, CheckpointReady)]
    assert names[:6] == [f"talker_sft_{s:06d}" for s in range(1, 7)] and len(set(names)) == len(names)
    assert names[-1].startswith("talker_da_")
