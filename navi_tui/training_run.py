"""One training run of the whole brain, from a validated corpus to a stored verdict.

Order matters: the corpus is loaded and validated, and the preflight gates computed
(navi_model.brain), before the store is opened, so bad input never leaves a half-written
store behind. Then the policy,
the planner and the talker train in turn; every gate lands in the store with the checkpoint
it judged.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, TextIO

import torch

from navi_model import bench_gates
from navi_model import gates as G
from navi_model.config import Profile
from navi_model.control import TrainingControl
from navi_model.corpus.load import Corpus
from navi_model.brain import planned_steps, preflight, to_device
from navi_model.distributed import ONE_PROCESS, Ranks
from navi_model.evaluate import policy_step_reader, run_intent_bench
from navi_model.events import EmitFn, Event, LogLine, MetricsLogged
from navi_model.gates import GateVerdict, all_passed
from navi_model.model import PolicyModel, count_params
from navi_model.planner import PlannerModel, bench_loss, run_plan_bench, train_planner
from navi_model.talker import (TalkerModel, concept_similarity, gallery_summary, prefix_use, run_gallery,
                               train_talker)
from navi_model.train import train_policy

from store import DiskError, StoreWriter

from navi_tui.continuation import ResumePoint, check_resume_point
from navi_tui.halt_points import armed_sink, halt_before_store, stop_after_claim
from navi_tui.home import open_store
from navi_tui.recorder import RunRecorder, eval_row
from navi_tui.run_lock import TrainerLocks
from navi_tui.system_monitor import SystemMonitor, host_warnings, nvml_sampler



@dataclass
class TrainOutcome:
    run_id: int
    checkpoint_ids: dict[str, int]
    gates: list[GateVerdict]
    status: str
    steps: dict[str, int]
    seconds: float = 0.0
    gallery: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # printed with the verdict; they fail nothing
    advice: str | None = None  # the next action to take, when it is not another training run

    @property
    def ok(self) -> bool:
        return all_passed(self.gates)


def corpus_fingerprint(corpus: Corpus) -> str:
    """sha256 over the corpus files, so a run records exactly which data it saw."""
    h = hashlib.sha256()
    for path in sorted(corpus.root.glob("*.jsonl")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def fanout(*sinks: EmitFn) -> EmitFn:
    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)
    return emit


def train_run(
    corpus: Corpus,
    profile: Profile,
    *,
    home: Path,
    device: torch.device,
    steps: int | None = None,
    control: TrainingControl | None = None,
    progress: EmitFn | None = None,
    out: TextIO | None = None,
    resume: ResumePoint | None = None,
    on_start: Callable[[int], None] | None = None,
    ranks: Ranks = ONE_PROCESS,
    launch_id: str | None = None,
) -> TrainOutcome | None:
    """resume: start from a stored checkpoint (continue or rollback) as a new run that names its source.
    on_start: called with the new run's id as soon as the store holds it (the console follows it).
    ranks: one of several data-parallel processes. Rank 0 does all of the above; any other rank
    trains the same models in step with it, writes nothing and returns None.
    launch_id: the torchrun launch (distributed_run), recorded with the run; its ranks' failure files."""
    out = out or sys.stdout
    if steps is not None:
        # --steps N bounds every phase, DA included
        profile = replace(profile, talker_train=replace(profile.talker_train,
                                                        da_steps=min(steps, profile.talker_train.da_steps)))
    plan = planned_steps(corpus, profile, steps)
    preflight_gates, cpu_data = preflight(corpus, profile)
    if resume is not None and cpu_data is not None:
        # a checkpoint that cannot continue on this data and profile is refused before the run row
        check_resume_point(resume, profile, cpu_data, corpus.intent_names, device)
    if not ranks.is_main:
        return _train_in_step(corpus, profile, plan, preflight_gates, cpu_data, device, control,
                              resume.payloads if resume else {}, ranks)
    config = {
        "profile": profile.to_dict(),
        "data": str(corpus.root),
        "data_sha256": corpus_fingerprint(corpus),
        "device": str(device),
        "steps": plan,
        "steps_from": "--steps" if steps is not None else "coverage",
        "torch": torch.__version__,
        "world_size": ranks.world_size,
    }
    if ranks.distributed:
        config.update(backend=ranks.backend, launch_id=launch_id)
    if resume is not None:
        config["resumed_from"] = {"run": resume.source_run, "checkpoint": resume.checkpoint["id"],
                                  "checkpoints": resume.checkpoint_ids, "rollback": resume.rollback}

    halt_before_store(out)  # a harness's kill before anything of the run exists
    store = open_store(home, create=True)
    locks = TrainerLocks(store.home)
    try:
        crashed = store.mark_crashed_runs()
        if crashed:
            print(f"marked crashed: run {', '.join(map(str, crashed))} (its process ended without finishing)", file=out)
        if resume is not None:
            # one trainer per run: a live trainer of the source, or another continuation of it, refuses this one
            locks.claim_source(store.get_run(resume.source_run))
        run_id = store.create_run(profile=profile.name, command="train", config=config,
                                  resumed_from=resume.source_run if resume else None)
        locks.claim_own(run_id)
        writer = StoreWriter(store.path).start()
        if resume is not None:
            _record_resume(store, writer, run_id, resume)
        stop_after_claim(run_id, writer.flush, out)  # a harness's second trainer meets a live one here
        if on_start is not None:
            on_start(run_id)
        try:
            outcome = _train_and_judge(corpus, profile, store, writer, run_id, plan, preflight_gates, cpu_data,
                                       device, control, progress, out, resume.payloads if resume else {}, ranks)
        except BaseException as e:
            if ranks.distributed:
                _record_rank_failures(writer, run_id, home, launch_id)
            _end_broken_run(store, writer, run_id, e)
            raise
        writer.close()
        return outcome
    finally:
        locks.release()
        store.close()


def _record_rank_failures(writer, run_id: int, home: Path, launch_id: str | None) -> None:
    # a collective that failed is most often another rank that failed first: its file says how
    # (it writes it before it exits, and its exit is what broke the collective)
    from navi_tui.distributed_run import failure_message, read_rank_failures

    try:
        for failure in read_rank_failures(home, launch_id or "", wait_s=3.0):
            writer.event(run_id, "error", "rank", failure_message(failure), failure)
    except Exception:  # noqa: BLE001 - a writer the disk broke already; the run's end below still tries
        pass


def _end_broken_run(store, writer, run_id: int, error: BaseException) -> None:
    """The run is over whatever happened; the store says how, in its log too, as far as the disk lets it.

    A full or read-only disk (DiskError) may refuse these very writes: then the run's rows stay as
    they were at the last commit, its status 'running', and the next start marks it crashed (its
    process is gone). The error that ended the run is what propagates, never one met here.
    """
    status = "stopped" if isinstance(error, KeyboardInterrupt) else "failed"
    message = str(error) if isinstance(error, DiskError) else f"{type(error).__name__}: {error}"
    try:
        writer.event(run_id, "warn" if status == "stopped" else "error", "crash", f"training {status}: {message}"[:500])
        writer.close()
    except Exception:  # noqa: BLE001 - the writer failed already (StoreWriterError, DiskError)
        pass  # its uncommitted rows are lost; the run's end below still tries
    try:
        store.finish_run(run_id, status=status, verdict=None, message=message[:500])
    except Exception:  # noqa: BLE001 - the store refuses even this one row; the next start marks it crashed
        pass


def _record_resume(store, writer, run_id: int, resume: ResumePoint) -> None:
    # both runs say it: the source's log shows where it was continued, the new one where it came from
    kind = "rollback" if resume.rollback else "resume"
    data = {"source_run": resume.source_run, "checkpoint": resume.checkpoint["id"], "new_run": run_id}
    writer.event(run_id, "warn" if resume.rollback else "info", kind, f"run {run_id} {resume.describe()}", data)
    store.insert_events([{"run_id": resume.source_run, "level": "warn" if resume.rollback else "info", "kind": kind,
                          "message": f"run {run_id} {resume.describe()}", "data": data}])


def _train_and_judge(corpus, profile, store, writer, run_id, plan, preflight, cpu_data, device, control, progress,
                     out, start_from: dict[str, dict], ranks: Ranks = ONE_PROCESS) -> TrainOutcome:
    t0 = time.perf_counter()
    control = control or TrainingControl()
    warnings = host_warnings()
    for w in warnings:
        writer.event(run_id, "warn", "host", w)
    monitor = None
    if device.type == "cuda":
        def gpu_stop(reason: str) -> None:
            writer.event(run_id, "error", "gpu_util", reason)
            print(f"[error] {reason}", file=out, flush=True)

        monitor = SystemMonitor(nvml_sampler(device.index or 0), control=control, on_stop=gpu_stop).start()
    on = f"{device} x{ranks.world_size} ({ranks.backend})" if ranks.distributed else str(device)
    print(f"run {run_id}: profile {profile.name} on {on}; steps policy {plan['policy']}, planner "
          f"{plan['planner']}, talker {plan['talker']}", file=out, flush=True)
    recorder = RunRecorder(store, writer, run_id)
    emit = fanout(recorder, progress) if progress else recorder
    stepping = SteppingWindows()
    if monitor:
        emit = fanout(emit, warm_watch(monitor), stepping)
    if halt_or_pause := armed_sink(control, out):  # last: the step's rows and line are out first
        emit = fanout(emit, halt_or_pause)
    gates_by_model: dict[str | None, list[GateVerdict]] = {None: list(preflight)}
    stored: set[str | None] = set()

    def record(model: str | None) -> None:
        # each model's gates reach the store as soon as they are known, so a console shows them live
        store.add_evals(run_id, recorder.checkpoint_ids.get(model) if model else None,
                        [eval_row(g) for g in gates_by_model[model]])
        stored.add(model)

    record(None)
    steps_done: dict[str, int] = {}
    gallery_rows: list[dict] = []

    final_losses: dict[str, float] = {}

    def finish(status: str) -> TrainOutcome:
        # the samples taken while a trainer stepped: not its compile, not the benches, galleries and
        # checkpoint writes between phases, which rightly leave the GPU waiting (M-015 is about the steps)
        stepped = monitor.during(stepping.intervals) if monitor else None
        if monitor:
            monitor.close()
        util = G.gpu_util_gate(stepped, th.min_gpu_util, 0,
                               "while the trainers stepped (each phase's first log window, its compile, left out)")
        if monitor and monitor.stop_reason:
            # a run the guard stopped never passes, whatever the mean of what it did run
            util = GateVerdict(util.name, util.value, util.threshold, util.op, False, monitor.stop_reason)
        gates_by_model.setdefault("run", []).append(util)
        watched = {g.name: g.value for gates in gates_by_model.values() for g in gates
                   if g.name in G.CONSTANT_WATCH and g.value is not None}
        watched.update({f"final_loss_{m}": v for m, v in final_losses.items()})
        gates_by_model["run"].append(G.constant_metric_gate(watched, run_config, _earlier_metrics(store, run_id),
                                                            f"navi-tui --no-ui diagnose --run {run_id}"))
        for model in gates_by_model:
            if model not in stored:
                record(model)
        if gallery_rows:
            store.add_gallery(run_id, recorder.checkpoint_ids.get("talker"), gallery_rows)
        everything = [g for gates in gates_by_model.values() for g in gates]
        verdict = "pass" if all_passed(everything) else "fail"
        writer.metrics(run_id, sum(steps_done.values()), "eval",
                       {**{g.name: g.value for g in everything if g.value is not None and math.isfinite(g.value)},
                        **{f"final_loss_{m}": v for m, v in final_losses.items() if math.isfinite(v)}})
        writer.flush()
        seconds = time.perf_counter() - t0
        message = f"{sum(g.passed for g in everything)}/{len(everything)} gates passed in {seconds:.0f}s"
        if not all_passed(preflight):
            message = "preflight gate failed; not trained"
        if monitor and monitor.stop_reason:
            message = monitor.stop_reason
        store.finish_run(run_id, status=status, verdict=verdict, message=message)
        return TrainOutcome(run_id, dict(recorder.checkpoint_ids), everything, status, steps_done, seconds, gallery_rows,
                            warnings, _advice(store))

    th = profile.gates
    run_config = training_config(store.get_run(run_id)["config_json"])
    # the other ranks train only if rank 0 does (its preflight is the one judged)
    ranks.broadcast_ints([run_id, int(all_passed(preflight))])
    if cpu_data is not None:  # the share of noisy copies each model trains on: a metric of the run
        for model, share in cpu_data.noisy_share.items():
            writer.metrics(run_id, 0, model, {"noisy_share": share})
    if not all_passed(preflight):
        # a truncated corpus or a broken gradient is not worth a single step (M-008, M-032)
        return finish("completed")


    def stopped() -> bool:
        return control is not None and control.stopped

    def stop_between_models() -> bool:
        # every rank asks at the same two points (before the planner, before the talker): a stop
        # asked of any rank stops them all
        return ranks.any(stopped())

    # policy: goal -> intent
    torch.manual_seed(profile.policy_train.seed)
    policy = PolicyModel(profile.policy, len(corpus.intents), profile.policy_members)
    writer.event(run_id, "info", "model", f"policy: {count_params(policy):,} parameters")
    data = to_device(cpu_data.policy, device)
    extra = {"intents": [i.__dict__ for i in corpus.intents], "profile": profile.name}
    with judged(monitor):
        r = train_policy(policy, data, profile.policy_train, steps=plan["policy"], device=device, emit=emit,
                         control=control, checkpoint_extra=extra, resume=start_from.get("policy"), ranks=ranks)
    steps_done["policy"], final_losses["policy"] = r.steps, r.final_loss
    gates = [G.coverage_gate("coverage_policy", r.coverage_min, r.coverage_mean, th.min_coverage)]
    present = set(corpus.benches)
    results = {b: run_intent_bench(policy, corpus.benches[b], corpus.intent_names, device)
               for b in bench_gates.POLICY_BENCHES if b in present}
    gates_by_model["policy"] = gates + bench_gates.judge(results, present, th)
    record("policy")

    # planner: goal -> STEP a STEP b ... EOS, its encoder warm from the policy's
    vocab = cpu_data.vocab
    if stop_between_models():
        gates_by_model["planner"] = [G.not_run("plan_bench", th.plan_bench, ">=", "the run was stopped")]
    else:
        torch.manual_seed(profile.planner_train.seed)
        planner = PlannerModel(profile.planner, vocab.size)
        _warm_start(planner.encoder, policy.encoder, profile, writer, run_id, "planner")
        pdata = to_device(cpu_data.plan, device)
        with judged(monitor):
            pr = train_planner(planner, pdata, profile.planner_train, steps=plan["planner"], device=device, emit=emit,
                               vocab=vocab, control=control, checkpoint_extra={"profile": profile.name},
                               resume=start_from.get("planner"), ranks=ranks)
        steps_done["planner"], final_losses["planner"] = pr.steps, pr.final_loss
        # the brain's plans: the planner's steps, each read by the planner and the policy together
        reader = policy_step_reader(policy, corpus.intent_names, vocab.actions, device)
        results = {b: run_plan_bench(planner, corpus.benches[b], vocab, device, reader=reader)
                   for b in bench_gates.PLAN_BENCHES if b in present}
        # the training loss on the bench is reported beside the bench, never instead of it (M-014)
        writer.metrics(run_id, pr.steps, "planner",
                       {"plan_bench_loss": bench_loss(planner, corpus.benches["plan"], vocab, device)})
        gates_by_model["planner"] = [
            G.coverage_gate("coverage_planner", pr.coverage_min, pr.coverage_mean, th.min_coverage),
            G.class_share_gate(pr.class_stats, th.max_class_share),
            *bench_gates.judge(results, present, th),
        ]
        record("planner")

    # talker: prompt (+ memory) -> response, its encoder warm from the policy's
    gallery = corpus.benches["gallery"].items
    if stop_between_models():
        gates_by_model["talker"] = [G.not_run("gallery_quality", th.min_gallery_similarity, ">=", "the run was stopped")]
        return finish("stopped")
    torch.manual_seed(profile.talker_train.seed)
    talker = TalkerModel(profile.talker)
    if profile.warm_start_encoders:
        talker.warm_from(policy.member_encoders())
        writer.event(run_id, "info", "warm_start", f"talker: {profile.talker.encoders} encoder(s) start from the "
                                                   f"trained policy's")
    tdata = to_device(cpu_data.talk, device)
    with judged(monitor):
        tr = train_talker(talker, tdata, profile.talker_train, steps=plan["talker"], device=device, emit=emit,
                          gallery=gallery, control=control, checkpoint_extra={"profile": profile.name},
                          resume=start_from.get("talker"), ranks=ranks)
    steps_done["talker"], final_losses["talker"] = tr.sft_steps + tr.da_steps, tr.final_loss
    gallery_rows = tr.gallery
    final = gallery_summary(gallery_rows)
    sim = concept_similarity(talker, [it["prompt"] for it in gallery], device)
    true_loss, shuffled_loss = prefix_use(talker, gallery, device)
    writer.metrics(run_id, steps_done["talker"], "talker", {"concept_sim": sim, "prefix_true_loss": true_loss,
                                                            "prefix_shuffled_loss": shuffled_loss, **final})
    wild_gates = []
    if "gallery_wild" in corpus.benches:  # hand-written prompts: the same gallery gates, named _wild
        wild = corpus.benches["gallery_wild"].items
        wild_rows = run_gallery(talker, wild, device)
        wild_gates = G.wild_gallery_gates(gallery_summary(wild_rows), wild_rows, th)
    gates_by_model["talker"] = [
        G.coverage_gate("coverage_talker", tr.coverage_min, tr.coverage_mean, th.min_coverage),
        G.memory_prefix_gate(tr.memory_share, th.min_memory_share),
        *G.gallery_gates(final, gallery_rows, th),
        G.concept_sim_gate(sim, th.max_concept_sim),
        G.prefix_use_gate(true_loss, shuffled_loss, th.min_prefix_use),
        G.da_regression_gate(tr.pre_da, tr.pre_da if tr.post_da is None or tr.rolled_back else final,
                             tr.rolled_back, th.max_da_regression),
        *wild_gates,
    ]
    return finish("stopped" if tr.stopped or stopped() else "completed")


def _train_in_step(corpus, profile, plan, preflight, cpu_data, device, control, start_from: dict[str, dict],
                   ranks: Ranks) -> None:
    """A rank other than 0: the same models, seeds and batches as rank 0's _train_and_judge, meeting
    it at the same collectives (each trainer's DDP steps and log windows, the start, the two stop
    checks between models). No store, no events, no evaluation: rank 0 judges the same weights."""
    control = control or TrainingControl()
    drop = lambda event: None  # noqa: E731 - rank 0's recorder keeps the events

    def stop_between_models() -> bool:
        return ranks.any(control.stopped)

    _, train = ranks.broadcast_ints([0, int(all_passed(preflight))])
    if not train:
        return None
    torch.manual_seed(profile.policy_train.seed)
    policy = PolicyModel(profile.policy, len(corpus.intents), profile.policy_members)
    train_policy(policy, to_device(cpu_data.policy, device), profile.policy_train, steps=plan["policy"],
                 device=device, emit=drop, control=control, resume=start_from.get("policy"), ranks=ranks)
    if not stop_between_models():
        torch.manual_seed(profile.planner_train.seed)
        planner = PlannerModel(profile.planner, cpu_data.vocab.size)
        if profile.warm_start_encoders:
            planner.encoder.load_state_dict(policy.encoder.state_dict())
        train_planner(planner, to_device(cpu_data.plan, device), profile.planner_train, steps=plan["planner"],
                      device=device, emit=drop, vocab=cpu_data.vocab, control=control,
                      resume=start_from.get("planner"), ranks=ranks)
    if stop_between_models():
        return None
    torch.manual_seed(profile.talker_train.seed)
    talker = TalkerModel(profile.talker)
    if profile.warm_start_encoders:
        talker.warm_from(policy.member_encoders())
    train_talker(talker, to_device(cpu_data.talk, device), profile.talker_train, steps=plan["talker"], device=device,
                 emit=drop, gallery=corpus.benches["gallery"].items, control=control,
                 resume=start_from.get("talker"), ranks=ranks)
    return None


class SteppingWindows:
    """The stretches of wall time in which a trainer stepped: each of its log windows after its
    phase's first (which holds the compile and the graph capture)."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []
        self._last: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, MetricsLogged) and "step_ms" in event.values:
            now = time.time()
            if event.phase in self._last:
                self.intervals.append((self._last[event.phase], now))
            self._last[event.phase] = now


def warm_watch(monitor: SystemMonitor) -> EmitFn:
    """A loop's "warm" line (its step compiled and captured) tells the monitor to judge from there."""
    def sink(event: Event) -> None:
        if isinstance(event, LogLine) and event.kind == "warm":
            monitor.warmed()
    return sink


@contextmanager
def judged(monitor: SystemMonitor | None):
    """GPU utilisation counts while a training loop runs, not in the gaps between models."""
    if monitor:
        monitor.training()
    try:
        yield
    finally:
        if monitor:
            monitor.idle()


def training_config(config_json: str | None) -> str:
    """A run's config as constant_metric compares it: without the run it continues, which changes no
    number. A resumed run reaches the numbers of a straight run of its config, and that is no constant
    set upstream of training (found by the crash harness: every resume after a crash failed the gate)."""
    config = json.loads(config_json or "{}")
    config.pop("resumed_from", None)
    return json.dumps(config, sort_keys=True)


def _earlier_metrics(store, run_id: int) -> list[tuple[int, str, dict[str, float]]]:
    """(run id, config, end-of-run metrics) of every earlier finished run, for constant_metric."""
    out = []
    for run in store.list_runs():
        if run["id"] != run_id and run["status"] in ("completed", "stopped"):
            values = {m["name"]: m["value"] for m in store.metrics(run["id"]) if m["phase"] == "eval"}
            if values:
                out.append((run["id"], training_config(run["config_json"]), values))
    return out


def _advice(store) -> str | None:
    """After 2 failed runs in a row, the next action is the data-flow diagnostic (M-010)."""
    finished = [r for r in store.list_runs() if r["status"] != "running"][:2]
    if len(finished) == 2 and all(r["verdict"] == "fail" for r in finished):
        return (f"runs {finished[1]['id']} and {finished[0]['id']} both failed: before another training run, trace "
                f"the data flow: navi-tui --no-ui diagnose --run {finished[0]['id']}")
    return None


def _warm_start(encoder: torch.nn.Module, policy_encoder: torch.nn.Module, profile: Profile, writer, run_id: int,
                name: str) -> None:
    if not profile.warm_start_encoders:
        return
    # same shapes by construction of the profile; rope tables are buffers sized per model, not weights
    encoder.load_state_dict(policy_encoder.state_dict())
    writer.event(run_id, "info", "warm_start", f"{name}: encoder starts from the trained policy encoder")
