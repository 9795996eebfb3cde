"""The whole brain's data and its preflight: what `train` checks before step 0 and `check` prints.

The data of the three models is built once, on the CPU: the preflight gates read the real
batches (padding, vocabulary), and training moves the same tensors to its device.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from navi_model import gates as G
from navi_model.config import Profile
from navi_model.corpus.load import Corpus
from navi_model.compose import composed_plans
from navi_model.data import PolicyData, build_policy_data
from navi_model.gates import GateVerdict, all_passed
from navi_model.noise import augment, augment_conversations, noisy_share
from navi_model.planner import PlanData, PlanVocab, action_shares, build_plan_data
from navi_model.preflight import grad_check, grad_flow, padding_gate, small_models, vocab_gate
from navi_model.talker import TalkData, build_talk_data, memory_text
from navi_model.train import steps_for_coverage
from navi_model.vocab import text_bytes

MODELS = ("policy", "planner", "talker")
CPU = torch.device("cpu")


@dataclass
class BrainData:
    policy: PolicyData
    plan: PlanData
    talk: TalkData
    vocab: PlanVocab
    noisy_share: dict[str, float] = field(default_factory=dict)  # per model: the share of noisy copies


def to_device(data, device: torch.device):
    """The same dataclass with every tensor field on device."""
    return replace(data, **{f.name: getattr(data, f.name).to(device) for f in fields(data)
                            if isinstance(getattr(data, f.name), torch.Tensor)})


def planner_rows(corpus: Corpus, profile: Profile) -> list[dict]:
    """The corpus's plans, then the composites the profile asks for (navi_model/compose.py)."""
    cfg = profile.planner_train
    actions = {i.name for i in corpus.intents if i.action}
    made = composed_plans(corpus.goals, actions, round(cfg.composed_share * len(corpus.plans)), cfg.seed,
                          profile.planner.encoder.seq_len)
    return corpus.plans + made


def noisy_rows(corpus: Corpus, profile: Profile) -> dict[str, list[dict]]:
    """Each model's training rows with their seeded noisy copies (navi_model/noise.py), which fit the
    model's context as the clean rows must (M-008)."""
    p, pl, t = profile.policy_train, profile.planner_train, profile.talker_train
    T = profile.talker.encoder.seq_len

    def talker_fits(turn: dict) -> bool:  # the prompt, and the memory row it becomes for later turns
        return _nbytes(memory_text(turn["prompt"], turn["response"])) <= T

    return {
        "policy": augment(corpus.goals, "goal", p.noise_rate, p.seed, profile.policy.seq_len),
        "planner": augment(planner_rows(corpus, profile), "goal", pl.noise_rate, pl.seed, profile.planner.encoder.seq_len),
        "talker": augment_conversations(corpus.dialogues, t.noise_rate, t.seed, talker_fits),
    }


def build_brain_data(corpus: Corpus, profile: Profile) -> BrainData:
    vocab = PlanVocab([i.name for i in corpus.intents if i.action])
    rows = noisy_rows(corpus, profile)
    return BrainData(
        policy=build_policy_data(rows["policy"], corpus.intent_names, profile.policy.seq_len, CPU),
        plan=build_plan_data(rows["planner"], vocab, profile.planner.encoder.seq_len, profile.planner.plan_len, CPU),
        talk=build_talk_data(rows["talker"], profile.talker, CPU),
        vocab=vocab,
        noisy_share={model: noisy_share(r, "prompt" if model == "talker" else "goal") for model, r in rows.items()},
    )


def _nbytes(text: str) -> int:
    return len(text_bytes(text))


def truncation_gates(corpus: Corpus, profile: Profile) -> list[GateVerdict]:
    """Everything each model reads or is judged on against its context (M-008)."""
    t = profile.gates.max_truncated
    # every bench the corpus has, the optional ones (unseen, seen, wild) included: a text that does
    # not fit would otherwise be found only after training, when its bench runs
    by_kind: dict[str, list[dict]] = {}
    for bench in corpus.benches.values():
        by_kind.setdefault(bench.kind, []).extend(bench.items)
    goals = [g["goal"] for g in corpus.goals] + [it["goal"] for k in ("policy", "paraphrase") for it in by_kind.get(k, [])]
    policy = [(g, _nbytes(g), profile.policy.seq_len) for g in goals]

    plan_len = profile.planner.plan_len + 1  # inputs and targets share one sequence one longer than the inputs
    planner = []
    for p in corpus.plans + by_kind.get("plan", []):
        planner.append((p["goal"], _nbytes(p["goal"]), profile.planner.encoder.seq_len))
        planner.append((" ".join(p["plan"]), 2 * len(p["plan"]) + 2, plan_len))  # BOS (STEP a)* EOS

    T, R = profile.talker.encoder.seq_len, profile.talker.response_len + 1
    talker = []
    for d in corpus.dialogues:
        mem = memory_text(d["prompt"], d["response"])
        talker += [(d["prompt"], _nbytes(d["prompt"]), T), (d["response"], _nbytes(d["response"]) + 2, R),
                   (mem, _nbytes(mem), T)]
    for it in by_kind.get("gallery", []):
        talker += [(it["prompt"], _nbytes(it["prompt"]), T), (it["reference"], _nbytes(it["reference"]) + 2, R)]
        talker += [(m, _nbytes(m), T) for m in (memory_text(x["prompt"], x["response"]) for x in it["memory"])]
    return [G.truncation_gate("truncation_policy", policy, t), G.truncation_gate("truncation_planner", planner, t),
            G.truncation_gate("truncation_talker", talker, t)]


def preflight(corpus: Corpus, profile: Profile) -> tuple[list[GateVerdict], BrainData | None]:
    """The structural gates that decide whether a run may train at all, and the data if it may.

    Truncation comes first: a text that does not fit cannot even be encoded.
    """
    gates = truncation_gates(corpus, profile)
    models = small_models(len(corpus.intents), PlanVocab([i.name for i in corpus.intents if i.action]).size)
    gates += [grad_check(models, profile.gates.max_grad_check_error), grad_flow(models)]
    if not all_passed(gates[:3]):
        return gates, None
    data = build_brain_data(corpus, profile)
    gates += [padding_gate(data.policy, data.plan, data.talk), vocab_gate(data.policy, data.plan, data.talk, data.vocab.size)]
    rates = {"policy": profile.policy_train.noise_rate, "planner": profile.planner_train.noise_rate,
             "talker": profile.talker_train.noise_rate}
    if any(r > 0 for r in rates.values()):  # a profile without noise has nothing to check here
        gates.append(G.noise_share_gate(data.noisy_share, rates, profile.gates.min_noise_share_ratio))
    return gates, data


def planned_steps(corpus: Corpus, profile: Profile, steps: int | None = None) -> dict[str, int]:
    """Per model: --steps if given, else enough for every unique sample to be seen often enough (M-011)."""
    unique = {
        "policy": len({g["goal"] for g in corpus.goals}),
        "planner": len({p["goal"] for p in planner_rows(corpus, profile)}),
        "talker": len({d["prompt"] for d in corpus.dialogues}),
    }
    cfgs = {"policy": profile.policy_train, "planner": profile.planner_train, "talker": profile.talker_train}
    return {m: steps if steps is not None else steps_for_coverage(unique[m], cfgs[m]) for m in MODELS}


def planned_gates(corpus: Corpus, profile: Profile, data: BrainData, steps: dict[str, int]) -> list[GateVerdict]:
    """What `check` can say before training about coverage, class shares and memory.

    Coverage counts the evenly drawn part of each batch only (the talker draws the rest by
    response length), so the least-seen sample is seen at least this often.
    """
    th = profile.gates
    t = profile.talker_train
    even = {"policy": profile.policy_train.batch_size, "planner": profile.planner_train.batch_size,
            "talker": t.batch_size - int(t.batch_size * t.length_weighted_share)}
    rows = {"policy": data.policy.n, "planner": data.plan.n, "talker": data.talk.n}
    gates = []
    for m in MODELS:
        passes = steps[m] * even[m] / rows[m]
        gates.append(G.coverage_gate(f"coverage_{m}", float(int(passes)), passes, th.min_coverage))
    gates.append(G.class_share_gate(action_shares(data.plan.plan_targets, data.vocab), th.max_class_share))
    share = float((data.talk.earlier > 0).float().mean())
    gates.append(G.memory_prefix_gate(share, th.min_memory_share))
    return gates
