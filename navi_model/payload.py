"""What a checkpoint payload of each model holds, checked before anything uses it.

A payload is what a trainer emits (checkpoint_payload in train.py, planner.py, talker.py) and
what the store hands back after its sha256 and torch's weights-only unpickler let it through.
Both say nothing about its contents: a file that is valid torch but was written by something
else, or by an older navi, would otherwise fail deep inside eval or a resumed run with a
KeyError or a size mismatch, after the run row exists. check_payload names the first key that
is missing, has the wrong type or the wrong shape, without building anything: the model is
laid out on torch's meta device, so even a payload that asks for a huge model costs nothing.
check_resume_fits then restores the payload into the loop a resumed run would build, on the
CPU, so whatever does not fit this profile and this data fails there, before a run starts.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

MODELS = ("policy", "planner", "talker")


class PayloadError(ValueError):
    """A checkpoint payload that its model's trainer cannot have written, or that does not fit."""


# key -> (type, what to call it); step is an int everywhere, bool is not
_COMMON = {"model": (dict, "a dict of tensors"), "model_args": (dict, "a dict"), "step": (int, "an int")}
_EVAL = {
    "policy": {"n_intents": (int, "an int"), "intents": (list, "a list")},
    "planner": {"vocab_size": (int, "an int"), "actions": (list, "a list")},
    "talker": {},
}
_RESUME = {"optimizer": (dict, "a dict"), "sampler": (dict, "a dict"), "seen": (torch.Tensor, "a tensor")}
_SAMPLER = {"n": (int, "an int"), "batch_size": (int, "an int"), "perm": (torch.Tensor, "a tensor"),
            "pos": (int, "an int"), "gen": (torch.Tensor, "a tensor")}


def check_payload(model: str, payload, *, resume: bool = False) -> None:
    """PayloadError naming the first thing in payload that a `model` checkpoint cannot hold.
    resume: also what continuing training needs (optimizer, sampler, coverage counts)."""
    if model not in MODELS:  # a store row of another model: nothing here knows how to judge it
        raise PayloadError(f"model {model!r} is not one of {', '.join(MODELS)}")
    if not isinstance(payload, dict):
        raise PayloadError(f"holds a {type(payload).__name__}, not a {model} checkpoint payload (a dict)")
    _keys(payload, {**_COMMON, **_EVAL[model]}, model)
    if payload["step"] < 0:
        raise PayloadError(f"key 'step': must be >= 0, got {payload['step']}")
    if model == "policy":
        _check_intents(payload)
    elif model == "planner":
        _check_actions(payload)
    _check_weights(model, payload)
    if resume:
        _keys(payload, _RESUME, model)
        _keys(payload["sampler"], _SAMPLER, model, "sampler.")
        if payload["optimizer"].keys() != {"state", "param_groups"}:
            raise PayloadError(f"key 'optimizer': expected an optimizer state (state, param_groups), got keys "
                               f"{sorted(map(str, payload['optimizer']))}")
        if model == "talker":
            _keys(payload, {"phase": (str, "a string"), "gen_state": (torch.Tensor, "a tensor")}, model)
            if payload["phase"] not in ("sft", "da"):
                raise PayloadError(f"key 'phase': expected 'sft' or 'da', got {payload['phase']!r}")
            if payload["phase"] == "da":
                _keys(payload, {"sft_steps": (int, "an int"), "pre_da": (dict, "a dict")}, model)


def check_resume_fits(model: str, payload: dict, profile, data, intents: list[str],
                      device: torch.device | None = None) -> None:
    """PayloadError when a checked payload cannot continue in this profile on this data.

    data: the run's BrainData (on the CPU); intents: the corpus's intent names, in order; device:
    where the run trains (the talker's noise generator lives there). The payload is restored into
    a fresh loop on the CPU as its trainer does at a resume (model, optimizer, sampler, coverage
    counts, generator), so a mismatch surfaces here, not after the run row.
    """
    from navi_model.model import PolicyModel, payload_members
    from navi_model.planner import PlannerModel
    from navi_model.talker import TalkerModel, sft_sampler_batch
    from navi_model.train import EpochSampler, MemberSampler, make_optimizer, restore_training_state

    cpu = torch.device("cpu")
    want = asdict({"policy": profile.policy, "planner": profile.planner, "talker": profile.talker}[model])
    diff = _first_difference(payload["model_args"], want)
    if diff:
        raise PayloadError(f"written for another {model} than profile {profile.name!r} builds: model_args {diff}")
    if model == "policy":
        names = [i["name"] for i in payload["intents"]]
        if names != list(intents):
            raise PayloadError(f"key 'intents': the checkpoint's intent catalog ({len(names)} intents) is not this "
                               f"corpus's ({len(intents)}), so every intent id would mean another intent")
        if payload_members(payload) != profile.policy_members:
            raise PayloadError(f"key 'members': the checkpoint's policy has {payload_members(payload)} members, "
                               f"profile {profile.name!r} builds {profile.policy_members}")
        net, cfg, rows = PolicyModel(profile.policy, len(intents), profile.policy_members), profile.policy_train, \
            data.policy.n
    elif model == "planner":
        if list(payload["actions"]) != data.vocab.actions:
            raise PayloadError(f"key 'actions': the checkpoint's actions {payload['actions']} are not this "
                               f"corpus's {data.vocab.actions}")
        net, cfg, rows = PlannerModel(profile.planner, data.vocab.size), profile.planner_train, data.plan.n
    else:
        net, cfg, rows = TalkerModel(profile.talker), profile.talker_train, data.talk.n
        if cfg.freeze_encoder:
            net.freeze_encoders()
    batch = sft_sampler_batch(cfg) if model == "talker" else cfg.batch_size
    sampler_state = payload["sampler"]
    if (sampler_state["n"], sampler_state["batch_size"]) != (rows, batch):
        raise PayloadError(f"key 'sampler': written for {sampler_state['n']} rows in batches of "
                           f"{sampler_state['batch_size']}, this run has {rows} rows in batches of {batch} "
                           f"(another corpus or profile)")
    from_da = model == "talker" and payload["phase"] == "da"
    opt = None if from_da else make_optimizer(net, cfg, cpu)
    gen = torch.Generator(device=device or cpu) if model == "talker" else None
    try:
        sampler = MemberSampler(net.members, rows, batch, cpu, cfg.seed) if model == "policy" \
            else EpochSampler(rows, batch, cpu, cfg.seed)
        restore_training_state(payload, model=net, opt=opt, sampler=sampler,
                               seen=torch.zeros(rows), gen=gen)
    except Exception as e:  # what the trainer would have raised after the run row
        raise PayloadError(f"does not restore into this run: {type(e).__name__}: {_one_line(e)}") from None


def _keys(d: dict, spec: dict, model: str, prefix: str = "") -> None:
    for key, (kind, what) in spec.items():
        if key not in d:
            raise PayloadError(f"not a navi {model} checkpoint: key '{prefix}{key}' is missing")
        value = d[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise PayloadError(f"key '{prefix}{key}': expected {what}, got {type(value).__name__}")


def _check_intents(payload: dict) -> None:
    intents = payload["intents"]
    for j, it in enumerate(intents):
        ok = (isinstance(it, dict) and isinstance(it.get("name"), str) and isinstance(it.get("description"), str)
              and isinstance(it.get("meta"), bool) and isinstance(it.get("action"), bool))
        if not ok:
            raise PayloadError(f"key 'intents[{j}]': expected {{name, description, meta, action}}, got {_short(it)}")
    if len(intents) != payload["n_intents"]:
        raise PayloadError(f"key 'n_intents': {payload['n_intents']}, but 'intents' lists {len(intents)}")


def _check_actions(payload: dict) -> None:
    from navi_model.planner import PlanVocab

    actions = payload["actions"]
    if not all(isinstance(a, str) and a for a in actions):
        raise PayloadError(f"key 'actions': expected a list of names, got {_short(actions)}")
    try:
        size = PlanVocab(actions).size
    except ValueError as e:
        raise PayloadError(f"key 'actions': {e}") from None
    if size != payload["vocab_size"]:
        raise PayloadError(f"key 'vocab_size': {payload['vocab_size']}, but {len(actions)} actions make a "
                           f"plan vocabulary of {size}")


def _check_weights(model: str, payload: dict) -> None:
    """The weights against the model that model_args describe, laid out on the meta device."""
    from navi_model.config import EncoderConfig, PlannerConfig, TalkerConfig
    from navi_model.model import PolicyModel, payload_members
    from navi_model.planner import PlannerModel
    from navi_model.talker import TalkerModel

    args = payload["model_args"]
    try:
        members = payload_members(payload)
    except ValueError as e:
        raise PayloadError(str(e)) from None
    try:
        with torch.device("meta"):
            if model == "policy":
                net = PolicyModel(EncoderConfig(**args), payload["n_intents"], members)
            elif model == "planner":
                net = PlannerModel(PlannerConfig.from_dict(args), payload["vocab_size"])
            else:
                net = TalkerModel(TalkerConfig.from_dict(args))
    except Exception as e:
        raise PayloadError(f"key 'model_args': cannot build a {model} from {_short(args)}: "
                           f"{type(e).__name__}: {_one_line(e)}") from None
    want = net.state_dict()
    got = payload["model"]
    missing = [k for k in want if k not in got]
    if missing:
        raise PayloadError(f"key 'model': weight '{missing[0]}' is missing"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    unexpected = [k for k in got if k not in want]
    if unexpected:
        raise PayloadError(f"key 'model': weight {_short(unexpected[0])} is not a weight of this {model}")
    for name, w in want.items():
        t = got[name]
        if not isinstance(t, torch.Tensor):
            raise PayloadError(f"key 'model': weight '{name}' is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != tuple(w.shape) or t.dtype != w.dtype:
            raise PayloadError(f"key 'model': weight '{name}' is {t.dtype} {tuple(t.shape)}, the {model} that "
                               f"model_args describe needs {w.dtype} {tuple(w.shape)}")


def _first_difference(got, want, path: str = "") -> str | None:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in got:
                return f"{where}: missing (profile: {want[key]!r})"
            if key not in want:
                return f"{where}: not in the profile"
            diff = _first_difference(got[key], want[key], where)
            if diff:
                return diff
        return None
    if type(got) is not type(want) or got != want:
        return f"{path}: {_short(got)} in the checkpoint, {want!r} in the profile"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."
