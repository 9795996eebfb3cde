"""The three trainers on toy models, in one process or as one rank of a torchrun job.

Not a test module: tests/test_distributed.py runs it through torchrun
(`python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_trainers.py OUT`),
where each rank writes what it trained to OUT/rank<N>.pt, and imports train_all to train the
same toys in one process for comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from navi_model.assets import corpus_dir
from navi_model.config import TrainConfig
from navi_model.control import TrainingControl
from navi_model.corpus.load import load_corpus
from navi_model.data import build_policy_data
from navi_model.distributed import ONE_PROCESS, Ranks
from navi_model.events import CheckpointReady, MetricsLogged
from navi_model.model import EncoderConfig, PolicyModel
from navi_model.planner import PlannerConfig, PlannerModel, PlanVocab, build_plan_data, train_planner
from navi_model.talker import TalkerConfig, TalkerModel, TalkerTrainConfig, build_talk_data, train_talker
from navi_model.train import train_policy

CPU = torch.device("cpu")
INTENTS = ["build", "test", "greet", "disk_usage", "memory_add", "git_log"]
POLICY_STEPS, STOP_AT = 8, 4  # the stopped policy run: a checkpoint at STOP_AT of POLICY_STEPS


def toy_data():
    corpus = load_corpus(corpus_dir())
    goals = [g for g in corpus.goals if g["intent"] in INTENTS][:400]
    vocab = PlanVocab([i.name for i in corpus.intents if i.action])
    plans = corpus.plans[::25][:200]  # plans of one, two and three actions
    return (build_policy_data(goals, INTENTS, 64, CPU), build_plan_data(plans, vocab, 64 + 56, 16, CPU), vocab,
            build_talk_data(corpus.dialogues[:96], TALKER, CPU))


ENC = EncoderConfig(seq_len=64, d_model=32, n_layers=1, n_heads=4)
PLANNER = PlannerConfig(encoder=EncoderConfig(seq_len=120, d_model=32, n_layers=1, n_heads=4), step_layers=1,
                        plan_len=16)
TALKER = TalkerConfig(encoder=EncoderConfig(seq_len=120, d_model=32, n_layers=1, n_heads=4), dec_layers=1,
                      prefix_k=2, memory_k=1, response_len=56)
POLICY_CFG = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=2, log_every=2)
PLANNER_CFG = TrainConfig(batch_size=16, lr=3e-3, warmup_steps=2, log_every=2)
TALKER_CFG = TalkerTrainConfig(batch_size=16, lr=3e-3, warmup_steps=2, log_every=2, da_steps=2, freeze_encoder=True,
                               sample_every=0)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_all(ranks: Ranks = ONE_PROCESS) -> dict:
    """Each toy trained for a few steps -> {"policy", "planner", "talker": state dicts,
    "stopped": the payload of a policy run stopped at STOP_AT (by rank 0 alone when ranks > 1)}."""
    torch.set_num_threads(1)
    pdata, plan_data, vocab, tdata = toy_data()
    out = {}
    torch.manual_seed(0)
    policy = PolicyModel(ENC, len(INTENTS))
    train_policy(policy, pdata, POLICY_CFG, steps=POLICY_STEPS, device=CPU, emit=lambda e: None, ranks=ranks)
    out["policy"] = _state(policy)

    torch.manual_seed(0)
    planner = PlannerModel(PLANNER, vocab.size)
    train_planner(planner, plan_data, PLANNER_CFG, steps=6, device=CPU, emit=lambda e: None, vocab=vocab,
                  ranks=ranks)
    out["planner"] = _state(planner)

    torch.manual_seed(0)
    talker = TalkerModel(TALKER)
    train_talker(talker, tdata, TALKER_CFG, steps=4, device=CPU, emit=lambda e: None, gallery=[], ranks=ranks)
    out["talker"] = _state(talker)

    # a stop asked of rank 0 only, after the log of step STOP_AT: every rank stops there
    control, payloads = TrainingControl(), []

    def emit(event):
        if isinstance(event, MetricsLogged) and event.step == STOP_AT and ranks.is_main:
            control.stop()
        if isinstance(event, CheckpointReady):
            payloads.append(event.payload)

    torch.manual_seed(0)
    r = train_policy(PolicyModel(ENC, len(INTENTS)), pdata, POLICY_CFG, steps=POLICY_STEPS, device=CPU, emit=emit,
                     control=control, ranks=ranks)
    out["stopped"] = payloads[-1]
    out["stopped_steps"] = r.steps
    if ranks.distributed:
        # the other way round: a checkpoint of one process, continued by the ranks
        one_control, one_payloads = TrainingControl(), []

        def one_emit(event):
            if isinstance(event, MetricsLogged) and event.step == STOP_AT:
                one_control.stop()
            if isinstance(event, CheckpointReady):
                one_payloads.append(event.payload)

        torch.manual_seed(0)
        train_policy(PolicyModel(ENC, len(INTENTS)), pdata, POLICY_CFG, steps=POLICY_STEPS, device=CPU,
                     emit=one_emit, control=one_control)
        torch.manual_seed(1)  # other initial weights: the checkpoint's must win
        resumed = PolicyModel(ENC, len(INTENTS))
        train_policy(resumed, pdata, POLICY_CFG, steps=POLICY_STEPS, device=CPU, emit=lambda e: None,
                     resume=one_payloads[-1], ranks=ranks)
        out["one_process_checkpoint_resumed"] = _state(resumed)
    return out


if __name__ == "__main__":
    ranks = Ranks.from_env(CPU)
    result = train_all(ranks)
    torch.save(result, Path(sys.argv[1]) / f"rank{ranks.rank}.pt")
    ranks.close()
