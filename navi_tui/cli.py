"""navi-tui: the command line.

exit 0: every gate passed; 1: a gate failed; 2: bad usage or bad input (a clear message naming
what is wrong and where, and nothing half-written), or a home folder that cannot take a write (a
full disk, a read-only file system: the file and the OS error named, the store left consistent).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad usage or bad input: printed as one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    from navi_model.config import PROFILES

    ap = argparse.ArgumentParser(
        prog="navi-tui",
        description="Train, evaluate and roll back navi's brain; every known failure is a gate.",
        epilog="exit 0: all gates pass; 1: a gate failed; 2: bad usage or bad input",
    )
    ap.add_argument("--home", type=Path, default=None,
                    help="folder of the run store (default: $NAVI_HOME or ./navi_runs)")
    ap.add_argument("--profile", default="tiny", choices=sorted(PROFILES), help="model and training sizes (default: tiny)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where to train: auto takes a GPU when one is visible (default: auto)")
    ap.add_argument("--no-ui", action="store_true",
                    help="run headless: print progress and the gate table (without it, train and open use the console)")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser("train", help="train a new run and judge it (the default command with --no-ui)")
    train.add_argument("--steps", type=int, default=None,
                       help="training steps (default: scaled from the data so every goal is seen often enough)")
    train.add_argument("--data", type=Path, default=None, help="corpus folder in the bundled format (default: bundled)")
    train.add_argument("--resume", type=int, default=None, metavar="RUN",
                       help="continue RUN from its newest checkpoint, as a new run that names it")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train in N data-parallel processes on this host, through torchrun (default: 1)")

    rollback = sub.add_parser("rollback", help="continue a run from an earlier checkpoint, as a new run")
    rollback.add_argument("--run", type=int, required=True, help="the run to roll back")
    rollback.add_argument("--to", type=int, default=None, metavar="CHECKPOINT",
                          help="checkpoint id (default: the newest checkpoint whose every gate passed)")

    opener = sub.add_parser("open", help="open the console on a run (the default command without --no-ui)")
    opener.add_argument("--run", type=int, default=None, help="run id (default: the newest)")

    ev = sub.add_parser("eval", help="evaluate a stored run's checkpoint")
    ev.add_argument("--run", type=int, default=None, help="run id (default: the newest run with a checkpoint)")
    ev.add_argument("--checkpoint", type=int, default=None, help="checkpoint id (default: the run's newest)")
    ev.add_argument("--bench", type=Path, action="extend", nargs="+", default=[], metavar="FILE.jsonl",
                    help="bench files of any kind in the bundled format (default: the run's benches)")
    ev.add_argument("--json", action="store_true", help="print one JSON document")

    check = sub.add_parser("check", help="the preflight gates only: nothing trains, nothing is written")
    check.add_argument("--data", type=Path, default=None, help="corpus folder in the bundled format (default: bundled)")
    check.add_argument("--json", action="store_true", help="print one JSON document")

    diag = sub.add_parser("diagnose", help="trace one batch through every stage of a run's talker")
    diag.add_argument("--run", type=int, default=None, help="run id (default: the newest run with a talker)")

    runs = sub.add_parser("runs", help="list the runs in the store")
    runs.add_argument("--json", action="store_true", help="print one JSON document")

    bench = sub.add_parser("bench", help="measure training speed against the minimal loop and the hardware's peak")
    bench.add_argument("--steps", type=int, default=None,
                       help="steps of each short run (reference, store and console costs; default: 300 on a GPU, "
                            "100 on the CPU)")
    bench.add_argument("--reps", type=int, default=2, help="alternating repetitions of each cost comparison (default: 2)")
    bench.add_argument("--parts", default="green,reference,store,console",
                       help="what to measure, comma-separated (default: all): green = a whole train run (time to "
                            "green, navi's tokens/s, MFU, GPU utilisation); reference = the minimal loop; store = "
                            "the store writer's cost; console = the console's cost (two processes per rep)")
    bench.add_argument("--json", action="store_true", help="print one JSON document (progress goes to stderr)")

    mirror = sub.add_parser("mirror", help="deliver the Discord messages waiting in the store's outbox, then exit")
    mirror.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="give up after this long; what is left stays queued (default: 60)")
    return ap


def resolve_home(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    return Path(os.environ.get("NAVI_HOME") or "navi_runs")


def resolve_device(name: str, *, training: bool = False):
    """--device to a torch device. Training on the CPU while a GPU is visible needs an explicit
    --device cpu (M-035: 75 minutes of CPU training at 9% while the GPU sat idle)."""
    import torch

    from navi_tui.system_monitor import gpu_name

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is visible to torch")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        gpu = gpu_name() if name == "cpu" and training else None
        if gpu:
            raise UsageError(f"a GPU is visible ({gpu}) but this torch cannot use it, so training would run on "
                             f"the CPU: install a CUDA build of torch, or pass --device cpu to train on the CPU anyway")
    return torch.device(name)


def _resume_point(args, checkpoint_id: int | None, *, rollback: bool):
    from navi_tui.continuation import resume_point
    from navi_tui.home import open_store
    from navi_tui.run_lock import refuse_if_busy

    run_id = args.resume if not rollback else args.run
    with open_store(resolve_home(args.home), create=False) as store:
        # the run to continue is most likely the one whose process died: say so before anything else
        print_crashed(store.mark_crashed_runs())
        if rollback and checkpoint_id is None and (run := store.get_run(run_id)) is not None:
            refuse_if_busy(store.home, run)  # before the search for a checkpoint to pick, which may refuse too
            checkpoint_id = _newest_passing_checkpoint(store, run_id)
        return resume_point(store, run_id, checkpoint_id, rollback=rollback)


def print_crashed(crashed: list[int]) -> None:
    if crashed:
        print(f"marked crashed: run {', '.join(map(str, crashed))} (its process ended without finishing)", flush=True)


def _newest_passing_checkpoint(store, run_id: int) -> int:
    from navi_tui.continuation import ResumeError

    failed: dict[int, bool] = {}
    for row in store.evals(run_id):
        if row["checkpoint_id"] is not None:
            failed[row["checkpoint_id"]] = failed.get(row["checkpoint_id"], False) or not row["passed"]
    good = [c for c in store.checkpoints(run_id) if c["id"] in failed and not failed[c["id"]]]
    if not good:
        raise ResumeError(f"run {run_id} has no checkpoint whose every gate passed: pick one with --to "
                          f"(navi-tui --no-ui eval --run {run_id} lists them with their gates)")
    return good[-1]["id"]


def cmd_rollback(args) -> int:
    args.resume, args.steps, args.data = None, None, None
    return cmd_train(args, resume=_resume_point(args, args.to, rollback=True))


# at the end of a headless run, how long the relay may go on delivering; a Discord that is down
# ends it at the first failed try, and what is left waits in the outbox for the next relay
MIRROR_FLUSH_S = 5.0


def discord_mirror(home: Path):
    """The Discord mirror from NAVI_DISCORD_*, not started; bad variables raise before anything is written."""
    from navi_tui.mirror import Mirror

    return Mirror.from_env(home)


def cmd_train(args, resume=None) -> int:
    from navi_model.assets import corpus_dir
    from navi_model.config import get_profile
    from navi_model.control import TrainingControl
    from navi_model.corpus.load import load_corpus
    from navi_model.distributed import ONE_PROCESS, Ranks, launched_by_torchrun
    from navi_tui.report import ProgressPrinter, print_gate_table
    from navi_model.brain import planned_steps
    from navi_tui.distributed_run import batch_split_error, launch, launch_id, record_rank_failure
    from navi_tui.training_run import train_run

    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    nproc = getattr(args, "nproc", 1)
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    under_torchrun = launched_by_torchrun()
    rank = int(os.environ.get("RANK", "0")) if under_torchrun else 0
    # Discord is rank 0's: the other ranks of a torchrun job write and send nothing
    mirror = discord_mirror(resolve_home(args.home)) if rank == 0 else None
    if resume is None and args.resume is not None:
        resume = _resume_point(args, None, rollback=False)
    # a continued run keeps its source's profile, data and --steps unless told otherwise
    profile = get_profile(resume.profile if resume else args.profile)
    device = resolve_device(args.device, training=True)
    data = args.data if args.data is not None else (resume.data if resume and resume.data else corpus_dir())
    if args.steps is None and resume is not None:
        args.steps = resume.steps
    corpus = load_corpus(data)  # CorpusError -> exit 2
    world = int(os.environ["WORLD_SIZE"]) if under_torchrun else nproc
    split = batch_split_error(profile, world)
    if split:
        raise UsageError(split if not under_torchrun else split.replace(f"--nproc {world}", f"{world} torchrun processes"))
    if nproc > 1 and not under_torchrun:
        # everything above refused bad input with exit 2; the ranks run this same command
        return launch(args.argv, nproc, resolve_home(args.home))
    ranks = Ranks.from_env(device) if under_torchrun else ONE_PROCESS
    if ranks.distributed:
        device = ranks.device
    if resume is not None and ranks.is_main:
        print(f"this run {resume.describe()}", flush=True)

    control = TrainingControl()
    # under torchrun, a stop comes as SIGTERM: torchrun passes on the launcher's ctrl-c that way
    stop_signals = (signal.SIGINT, signal.SIGTERM) if ranks.distributed else (signal.SIGINT,)
    previous = {s: signal.getsignal(s) for s in stop_signals}

    def on_interrupt(signum, frame):
        # first ctrl-c: stop at the next step boundary and judge what we have; second: abort
        print("\nstopping after this step (ctrl-c again to abort)", flush=True)
        control.stop()
        for s, h in previous.items():
            signal.signal(s, h)

    if not ranks.is_main:
        for s in stop_signals:
            signal.signal(s, on_interrupt)
        try:
            train_run(corpus, profile, home=resolve_home(args.home), device=device, steps=args.steps,
                      control=control, out=sys.stdout, resume=resume, ranks=ranks, launch_id=launch_id())
        except BaseException as e:
            # recorded here, while the stop handler still holds SIGTERM: a rank fails when its peer
            # dies, and torchrun's SIGTERM to the survivors follows at once; once the default
            # handler is back it would kill this rank before worker_main could record why
            record_rank_failure(resolve_home(args.home), ranks.rank, f"{type(e).__name__}: {e}", 1)
            raise
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            ranks.close()
        return EXIT_OK

    def start_mirror(run_id: int) -> None:
        # started once the run row exists: input that train_run refuses leaves no relay, lock or store behind
        if mirror.enabled:  # an off mirror said so once already, before training
            mirror.start()
            print(mirror.notice(), flush=True)

    if not mirror.enabled:
        print(mirror.notice(), flush=True)
    for s in stop_signals:
        signal.signal(s, on_interrupt)
    try:
        plan = planned_steps(corpus, profile, args.steps)
        # DA's steps continue the talker's count, so its total is SFT's plus its own
        da_steps = min(profile.talker_train.da_steps, args.steps or profile.talker_train.da_steps)
        progress = ProgressPrinter({"policy": plan["policy"], "planner": plan["planner"], "sft": plan["talker"],
                                    "da": plan["talker"] + da_steps})
        outcome = train_run(corpus, profile, home=resolve_home(args.home), device=device, steps=args.steps,
                            control=control, progress=progress, resume=resume, on_start=start_mirror,
                            ranks=ranks, launch_id=launch_id() if ranks.distributed else None)
    except BaseException:
        close_mirror(mirror)  # the crash and the run's end still go out
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        ranks.close()
    print_gate_table(outcome.gates)
    for w in outcome.warnings:
        print(f"warning: {w}")
    if outcome.advice:
        print(f"next: {outcome.advice}")
    ckpts = ", ".join(f"{m} {cid}" for m, cid in outcome.checkpoint_ids.items())
    print(f"run {outcome.run_id} ({outcome.status}) in {outcome.seconds:.0f}s; checkpoints: {ckpts or 'none'}; "
          f"store {resolve_home(args.home) / 'navi.db'}")
    close_mirror(mirror)
    return EXIT_OK if outcome.ok else EXIT_GATE_FAILED


def close_mirror(mirror) -> None:
    if mirror.started:
        mirror.close(MIRROR_FLUSH_S)
        print(mirror.summary(), flush=True)


def cmd_eval(args) -> int:
    from navi_tui.evaluation import evaluate_run
    from navi_tui.home import open_store
    from navi_tui.report import gates_document, print_gate_table, print_items

    device = resolve_device(args.device)
    with open_store(resolve_home(args.home), create=False) as store:
        store.mark_crashed_runs()  # its runs' statuses are part of what eval's reader looks at next
        outcome = evaluate_run(store, run_id=args.run, checkpoint_id=args.checkpoint, bench_files=args.bench,
                               device=device)
    if args.json:
        print(gates_document(outcome.run_id, outcome.checkpoint_ids, outcome.gates, outcome.items))
    else:
        for label, rows in outcome.items.items():
            print_items(label, rows)
        ckpts = ", ".join(f"{m} {cid}" for m, cid in outcome.checkpoint_ids.items())
        print(f"\nrun {outcome.run_id}; checkpoints: {ckpts}")
        print_gate_table(outcome.gates)
    return EXIT_OK if all(g.passed for g in outcome.gates) else EXIT_GATE_FAILED


def cmd_runs(args) -> int:
    from navi_tui.home import open_store
    from navi_tui.report import print_runs, runs_document

    home = resolve_home(args.home)
    if not (home / "navi.db").is_file():
        runs = []
    else:
        with open_store(home, create=False) as store:
            store.mark_crashed_runs()  # the list shows a dead trainer's run as crashed, not running
            runs = store.list_runs()
    if args.json:
        print(runs_document(runs))
    else:
        print_runs(runs)
    return EXIT_OK


def cmd_bench(args) -> int:
    """The performance benchmark; exit 1 when a bench target of the profile is missed."""
    import json

    from navi_model.assets import corpus_dir
    from navi_model.config import get_profile
    from navi_model.corpus.load import load_corpus
    from navi_tui.bench import PARTS, print_bench, run_bench

    device = resolve_device(args.device, training=True)
    steps = args.steps if args.steps is not None else (300 if device.type == "cuda" else 100)
    if steps < 4:
        # the short runs time the log windows after each trainer's first: four at the least
        raise UsageError(f"--steps must be at least 4, got {steps}")
    if args.reps < 1:
        raise UsageError(f"--reps must be at least 1, got {args.reps}")
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise UsageError(f"--parts {args.parts!r}: unknown part {unknown[0] if unknown else '(none given)'!r} "
                         f"(known: {', '.join(PARTS)})")
    profile = get_profile(args.profile)
    out = sys.stderr if args.json else sys.stdout
    summary = run_bench(load_corpus(corpus_dir()), profile, device, steps=steps, reps=args.reps, parts=parts, out=out)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_bench(summary, out)
    return EXIT_OK if all(t["passed"] for t in summary["targets"]) else EXIT_GATE_FAILED


def cmd_mirror(args) -> int:
    """Deliver the outbox (after an outage, with no console open); exit 1 when some is left."""
    from navi_tui.home import open_store
    from navi_tui.mirror import Mirror
    from navi_tui.mirror.config import OFF_HINT

    if not args.timeout > 0:
        raise UsageError(f"--timeout must be a number of seconds above 0, got {args.timeout}")
    home = resolve_home(args.home)
    mirror = Mirror.from_env(home, follow=False)
    if not mirror.enabled:
        raise UsageError(f"the Discord mirror is off: {OFF_HINT}")
    open_store(home, create=False).close()  # no store: exit 2, and none is made
    mirror.start()
    print(mirror.notice(), flush=True)
    mirror.close(args.timeout, until_empty=True)
    print(mirror.summary())
    state = mirror.relay_state()
    return EXIT_OK if state.mode != "no relay" and state.queued == 0 else EXIT_GATE_FAILED


def cmd_check(args) -> int:
    import json

    from navi_model.assets import corpus_dir
    from navi_model.brain import planned_gates, planned_steps, preflight
    from navi_model.config import get_profile
    from navi_model.corpus.load import load_corpus
    from navi_model.gates import all_passed
    from navi_tui.report import print_gate_table
    from navi_tui.system_monitor import host_warnings

    profile = get_profile(args.profile)
    device = resolve_device(args.device, training=True)  # a CPU run on a GPU host is refused here too
    corpus = load_corpus(args.data if args.data is not None else corpus_dir())
    gates, data = preflight(corpus, profile)
    if data is not None:
        gates += planned_gates(corpus, profile, data, planned_steps(corpus, profile))
    warnings = host_warnings()
    if args.json:
        print(json.dumps({"profile": profile.name, "device": str(device), "ok": all_passed(gates),
                          "gates": [g.to_row() for g in gates], "warnings": warnings}, indent=2))
    else:
        print(f"preflight: profile {profile.name}, device {device}, corpus {corpus.root}")
        print_gate_table(gates)
        for w in warnings:
            print(f"warning: {w}")
    return EXIT_OK if all_passed(gates) else EXIT_GATE_FAILED


def cmd_diagnose(args) -> int:
    from navi_tui.diagnosis import diagnose_run
    from navi_tui.home import open_store

    device = resolve_device(args.device)
    with open_store(resolve_home(args.home), create=False) as store:
        text, collapsed = diagnose_run(store, run_id=args.run, device=device)
    print(text)
    return EXIT_GATE_FAILED if collapsed else EXIT_OK


def run_console(args) -> int:
    """The Textual console: `train` starts training at once, `open` (or no command) shows the newest run."""
    from navi_model.assets import corpus_dir
    from navi_model.corpus.load import load_corpus
    from navi_tui.app import NaviApp
    from navi_tui.home import open_store

    home = resolve_home(args.home)
    training = args.command == "train"
    if training and args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if training and args.nproc != 1:
        raise UsageError(f"--nproc {args.nproc}: several processes train headless: run navi-tui --no-ui train "
                         f"--nproc {args.nproc}, and follow the run in the console with navi-tui open")
    mirror = discord_mirror(home)  # a bad NAVI_DISCORD_* variable: exit 2 before any screen opens
    resume = _resume_point(args, None, rollback=False) if training and args.resume is not None else None
    device = resolve_device(args.device, training=True)
    data = getattr(args, "data", None)
    if training and resume is None:
        load_corpus(data if data is not None else corpus_dir())  # bad input: exit 2 before any screen opens
    open_store(home, create=True).close()  # an unusable home: exit 2 with its reason, not a traceback
    app = NaviApp(home, profile=args.profile, device=device, data=data, steps=getattr(args, "steps", None),
                  train_on_start=training and resume is None, open_run=getattr(args, "run", None), resume=resume,
                  mirror=mirror)
    # the relay lives as long as the console: it follows the store, so nothing has to feed it
    mirror.start()
    try:
        app.run()
    finally:
        mirror.close(MIRROR_FLUSH_S)
    return app.return_code or EXIT_OK


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "runs": cmd_runs, "check": cmd_check, "diagnose": cmd_diagnose,
            "rollback": cmd_rollback, "mirror": cmd_mirror, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    # torch's CPU wheel does not need numpy, but says so on import; navi never hands it arrays
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # bad usage: argparse prints it and exits 2
    if args.command is None:
        # headless, the default is to train; the console opens on the home folder instead
        argv = [*argv, "train" if args.no_ui else "open"]
        args = parser.parse_args(argv)
    args.argv = argv  # train --nproc N runs the same command line in each of its processes

    from navi_model.corpus.load import CorpusError
    from navi_model.vocab import TruncationError, VocabRangeError
    from store import CheckpointError, DiskError
    from navi_tui.continuation import ResumeError
    from navi_tui.evaluation import EvalUsageError
    from navi_tui.home import HomeError
    from navi_tui.mirror.config import MirrorConfigError
    from navi_tui.run_lock import RunBusyError

    try:
        if not args.no_ui and args.command in ("train", "open"):
            return run_console(args)
        if args.command == "open":
            raise UsageError("open is the console's command: drop --no-ui, or list runs with --no-ui runs")
        return COMMANDS[args.command](args)
    except (UsageError, HomeError, CorpusError, CheckpointError, EvalUsageError, TruncationError,
            VocabRangeError, ResumeError, MirrorConfigError, RunBusyError, DiskError) as e:
        print(f"navi-tui: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
