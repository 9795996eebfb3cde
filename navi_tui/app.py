"""NaviApp: the console. It trains in a background thread, follows any run in the store, and
turns every key into the same action the headless commands take.

Threads: this UI thread; one training thread (TrainingSession) that never touches a widget; the
store writer and the system monitor it starts; short worker threads for eval, gallery and
diagnose. The UI redraws on a timer (`refresh_hz`), and only the panes whose data moved.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import torch
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import DataTable, Footer, TabbedContent, TabPane

from navi_model.config import Profile, get_profile
from store import Store

from navi_tui.continuation import resume_point
from navi_tui.messages import EventsReady, RunStarted, SessionEnded, TaskDone
from navi_tui.run_view import RunView
from navi_tui.training_session import CheckpointSaved, TrainingSession
from navi_tui.widgets.dialogs import CheckpointPicker, CompareScreen, ConfirmQuit, HelpScreen, TextScreen
from navi_tui.widgets.panes import (EventsLog, GalleryTable, GatesTable, RunHeader, RunsTable, SystemPane,
                                    WeightsTable)
from navi_tui.widgets.plots import ConceptPlot, LossPlot

from navi_model.events import LogLine, MetricsLogged


def while_mounted(method):
    """Timers and late messages may fire while the app tears its widgets down: then do nothing."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except NoMatches:
            if self.is_running and not self._exiting:
                raise

    return guarded


class NaviApp(App):
    CSS_PATH = "navi.tcss"
    TITLE = "navi"
    BINDINGS = [
        Binding("t", "train", "train"),
        Binding("c", "continue_run", "continue"),
        Binding("p", "pause", "pause/resume"),
        Binding("s", "stop", "stop"),
        Binding("e", "eval", "eval"),
        Binding("r", "rollback", "rollback"),
        Binding("g", "gallery", "gallery"),
        Binding("d", "diagnose", "diagnose"),
        Binding("m", "mark", "mark", show=False),
        Binding("v", "compare", "compare", show=False),
        Binding("question_mark", "help", "help"),
        Binding("q", "quit_console", "quit"),
    ]

    def __init__(self, home: Path, *, profile: str | Profile = "tiny", device: torch.device | None = None,
                 data: Path | None = None, steps: int | None = None, train_on_start: bool = False,
                 open_run: int | None = None, refresh_hz: float = 4.0, plot_hz: float = 2.0,
                 follow_interval: float = 0.5,
                 system_interval: float = 1.0, system_stats=None, resume=None, mirror=None):
        """profile: a profile's name, or a Profile itself (the bench trains a short-run variant).
        mirror: a started navi_tui.mirror.Mirror whose state the header shows; None shows "off"."""
        super().__init__()
        self.home = home
        self.profile_name = profile if isinstance(profile, str) else profile.name
        self._profile = None if isinstance(profile, str) else profile
        self.device = device or torch.device("cpu")
        self.data, self.steps, self.train_on_start = data, steps, train_on_start
        self.refresh_hz, self.follow_interval, self.system_interval = refresh_hz, follow_interval, system_interval
        # plots cost the most to draw, and every moment the ui holds the gil the trainer may wait for it
        self.plot_every = max(1, round(refresh_hz / plot_hz))
        self._tick = 0
        self._live_shown: str | None = None
        self._system_at = 0.0
        self.store = Store(home)
        # a run whose process died shows as crashed from the first screen, not as running
        self.crashed_at_start = self.store.mark_crashed_runs()
        self.session: TrainingSession | None = None
        self.view = RunView()
        self.own_view = False  # the view is fed by this console's trainer, not by the store
        self.sessions_ended = 0  # training sessions whose end this screen has shown (tests wait on it)
        self._cursor = (0, 0)  # (metric id, event id) read so far of a followed run
        self._rendered = -1
        self._events_shown = 0
        self._system_stats = system_stats
        self._open_run = open_run
        self._resume_on_start = resume
        self._quitting = False
        self.mirror = mirror
        self._exiting = False
        self.last_notice = ""  # the latest notice, for tests and the tmux check

    # layout

    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        with Horizontal(id="top"):
            yield LossPlot(id="loss")
            with Vertical(id="side"):
                yield SystemPane(id="system")
                yield WeightsTable(id="weights")
        with Horizontal(id="middle"):
            yield GatesTable(id="gates")
            yield ConceptPlot(id="concept")
        with TabbedContent(id="tabs"):
            with TabPane("events", id="tab-events"):
                yield EventsLog(id="events")
            with TabPane("gallery", id="tab-gallery"):
                yield GalleryTable(id="gallery")
            with TabPane("runs", id="tab-runs"):
                yield RunsTable(id="runs")
        yield Footer()

    def on_mount(self) -> None:
        titles = {"loss": "loss per phase", "system": "system", "weights": "planner class weights",
                  "gates": "gates (failures first)", "concept": "concept similarity", "events": "events",
                  "gallery": "gallery", "runs": "runs"}
        for wid, title in titles.items():
            self.query_one(f"#{wid}").border_title = title
        if self._system_stats is None:
            from navi_tui.system_monitor import SystemStats

            self._system_stats = SystemStats(self.device.index or 0)
        if self.mirror is not None:
            self.notice(self.mirror.notice())  # once: off and how to turn it on, or where it goes
        if self.crashed_at_start:
            self.notice(f"marked crashed: run {', '.join(map(str, self.crashed_at_start))} "
                        f"(its process ended without finishing); c continues one from its newest checkpoint")
        self.refresh_runs()
        if self._resume_on_start is not None:
            self._start(resume=self._resume_on_start)
        elif self.train_on_start:
            self.action_train()
        else:
            run = self.store.get_run(self._open_run) if self._open_run else self.store.latest_run()
            if self._open_run and run is None:
                self.notice(f"no run {self._open_run} in {self.store.path}", error=True)
            if run:
                self.open_run(run["id"])
        self.set_interval(1.0 / self.refresh_hz, self.render_view)
        self.set_interval(self.follow_interval, self.follow)
        self.set_interval(2.0, self.refresh_runs)
        self.sample_system()
        self.render_view()

    # feeding the view

    def open_run(self, run_id: int) -> None:
        """Show a stored run; a run still being written (by anyone else) is followed past a cursor."""
        run = self.store.get_run(run_id)
        if run is None:
            self.notice(f"no run {run_id}", error=True)
            return
        if self.own_view and self.view.run_id == run_id and self.session and self.session.alive:
            return  # already the live view
        self.view, self.own_view, self._cursor = RunView.for_run(run), False, (0, 0)
        self._reset_panes()
        self.follow()
        self.refresh_results()

    def _reset_panes(self) -> None:
        self.query_one(EventsLog).clear()
        self._events_shown, self._rendered = 0, -1

    def follow(self) -> None:
        """Read new rows of a run another process writes: only past the cursor, never the history again."""
        v = self.view
        if v.run_id is None or self.own_view:
            return
        metric_id, event_id = self._cursor
        metrics = self.store.metrics_after(v.run_id, metric_id)
        events = self.store.events_after(v.run_id, event_id)
        if metrics or events:
            v.store_rows(metrics, events)
            self._cursor = (metrics[-1]["id"] if metrics else metric_id, events[-1]["id"] if events else event_id)
        if v.status == "running" or metrics or events:
            self.refresh_results()

    def refresh_results(self) -> None:
        v = self.view
        if v.run_id is None:
            return
        run = self.store.get_run(v.run_id)
        if run and run != v.run:
            v.set_run(run)
        v.set_results(self.store.evals(v.run_id), self.store.gallery(v.run_id), self.store.checkpoints(v.run_id))

    def on_events_ready(self, message: EventsReady) -> None:
        if not self.session:
            return
        events = self.session.bridge.drain()
        if not self.own_view:
            return
        results_moved = False
        for ev in events:
            if isinstance(ev, MetricsLogged):
                self.view.metrics(ev.step, ev.phase, ev.values)
            elif isinstance(ev, LogLine):
                self.view.event(ev.level, ev.kind, ev.message, ev.data)
            elif isinstance(ev, CheckpointSaved):
                self.view.event("info", "checkpoint", f"{ev.name} saved ({ev.model}, {ev.phase}, step {ev.step})")
                results_moved = True
        if results_moved:
            self.refresh_results()

    def on_run_started(self, message: RunStarted) -> None:
        if self.own_view and message.session is self.session:
            self.view.run_id = message.run_id
            self.refresh_results()
        self.refresh_runs()

    @while_mounted
    def on_session_ended(self, message: SessionEnded) -> None:
        current = message.session is self.session  # else a rollback has started the next one already
        if current:
            self.session.thread.join(timeout=5)  # it posted this as its last act
        if current and self.own_view and message.run_id is not None:
            # from now on the store is the whole truth (final metrics, gates, gallery): read it once
            self.open_run(message.run_id)
        self.refresh_runs()
        self.notice(message.summary, error=message.error is not None)
        self.sessions_ended += 1
        if self._quitting and current:
            self.exit()

    def on_task_done(self, message: TaskDone) -> None:
        if message.run_id == self.view.run_id:
            self.refresh_results()
        if "\n" in message.text:
            self.push_screen(TextScreen(message.title, message.text))
        self.notice(f"{message.title}: {message.text.splitlines()[0] if message.text else ''}", error=not message.ok)

    # redraw

    @while_mounted
    def render_view(self) -> None:
        v = self.view
        live = ""
        if self.session and self.session.alive and self.own_view:
            live = "PAUSED" if self.session.control.paused else "stopping" if self.session.control.stopped else "live"
        elif v.status == "running":
            live = "followed"
        self._tick += 1
        # everything repaints together on every plot_every-th tick (a calm 2 Hz): each pass lays
        # out and paints the screen holding the gil the trainer needs, so one pass beats three.
        # Between those ticks only a new state in the header (a key's PAUSED) or a new view paints.
        due = self._tick % self.plot_every == 0 or self._rendered != id(v)
        if due or live != self._live_shown:
            self.query_one(RunHeader).show(v, live=live, mirror=self.mirror_state())
            self._live_shown = live
        if not due:
            return
        if time.monotonic() - self._system_at >= self.system_interval:
            self.sample_system()
        self._rendered = id(v)
        dirty = v.take_dirty(("loss", "concept", "weights", "gates", "gallery", "events"))
        if "loss" in dirty:
            self.query_one(LossPlot).show(v)
        if "concept" in dirty:
            self.query_one(ConceptPlot).show(v)
        if "weights" in dirty:
            self.query_one(WeightsTable).show(v)
        if "gates" in dirty:
            self.query_one(GatesTable).show(v)
        if "gallery" in dirty:
            self.query_one(GalleryTable).show(v)
        if "events" in dirty:
            self._events_shown = self.query_one(EventsLog).show(v, self._events_shown)

    def mirror_state(self) -> str:
        # off, delivering, or retrying with the queue length: a glance says whether Discord hears us
        return f"discord {self.mirror.state() if self.mirror is not None else 'off'}"

    @while_mounted
    def sample_system(self) -> None:
        self._system_at = time.monotonic()
        self.query_one(SystemPane).show(self._system_stats.read())

    @while_mounted
    def refresh_runs(self) -> None:
        self.query_one(RunsTable).show(self.store.list_runs())

    def notice(self, text: str, *, error: bool = False) -> None:
        self.last_notice = text
        self.notify(text, severity="error" if error else "information", timeout=6)

    # keys

    def _live(self) -> bool:
        return self.session is not None and self.session.alive

    def _start(self, *, resume=None) -> None:
        from navi_model.assets import corpus_dir
        from navi_model.corpus.load import CorpusError, load_corpus

        profile_name = resume.profile if resume else self.profile_name
        data = (resume.data if resume and resume.data else None) or self.data or corpus_dir()
        try:
            corpus = load_corpus(data)
            profile = self._profile if self._profile and profile_name == self._profile.name else get_profile(profile_name)
        except (CorpusError, KeyError, ValueError) as e:
            self.notice(f"cannot train: {e}", error=True)
            return
        steps = resume.steps if resume else self.steps
        self.session = TrainingSession(corpus, profile, home=self.home, device=self.device, post=self.post_message,
                                       steps=steps, resume=resume)
        self.view, self.own_view = RunView(), True
        self._reset_panes()
        self.session.start()
        self.notice(f"training {profile.name} on {self.device}" + (f": {resume.describe()}" if resume else ""))

    def action_train(self) -> None:
        if self._live():
            self.notice(f"run {self.session.run_id} is training; s stops it first", error=True)
            return
        self._start()

    def action_continue_run(self) -> None:
        if self._live():
            self.notice(f"run {self.session.run_id} is training; s stops it first", error=True)
            return
        if self.view.run_id is None:
            self.notice("no run open: open one in the runs tab (enter)", error=True)
            return
        if self.view.status == "running":
            self.notice(f"run {self.view.run_id} is still running (pid {self.view.run['pid']})", error=True)
            return
        try:
            point = resume_point(self.store, self.view.run_id)
        except Exception as e:  # ResumeError, CheckpointError: a clear notice, nothing started
            self.notice(f"cannot continue run {self.view.run_id}: {e}", error=True)
            return
        self._start(resume=point)

    def action_pause(self) -> None:
        if not self._live():
            self._not_ours("pause")
            return
        c = self.session.control
        if c.paused:
            c.resume()
            self.notice(f"run {self.session.run_id} resumed")
        else:
            c.pause()
            self.notice(f"run {self.session.run_id} paused at the next step boundary; p resumes")
        self.render_view()

    def action_stop(self) -> None:
        if not self._live():
            self._not_ours("stop")
            return
        self.session.control.stop()
        self.notice(f"stopping run {self.session.run_id}: it saves a checkpoint and judges what it has")
        self.render_view()

    def _not_ours(self, what: str) -> None:
        v = self.view
        if v.status == "running" and v.run:
            self.notice(f"run {v.run_id} is trained by process {v.run['pid']} on {v.run['host']}; {what} it there",
                        error=True)
        else:
            self.notice(f"nothing is training in this console to {what}", error=True)

    def action_eval(self) -> None:
        if self.view.run_id is None:
            self.notice("no run open to evaluate", error=True)
            return
        self.notice(f"evaluating run {self.view.run_id}")
        self._eval_task(self.view.run_id, gallery_only=False)

    def action_gallery(self) -> None:
        if self._live() and self.own_view and self.view.latest.phase == "sft":
            self.session.control.request("gallery")
            self.notice("gallery at the next step boundary of the talker")
            return
        if self.view.run_id is None:
            self.notice("no run open", error=True)
            return
        if not any(c["model"] == "talker" for c in self.view.checkpoints):
            self.notice(f"run {self.view.run_id} has no talker checkpoint yet", error=True)
            return
        self.notice(f"gallery of run {self.view.run_id}'s newest talker")
        self._eval_task(self.view.run_id, gallery_only=True)

    @work(thread=True, exit_on_error=False, group="tasks")
    def _eval_task(self, run_id: int, gallery_only: bool) -> None:
        from navi_model.corpus.load import BUNDLED_BENCHES
        from navi_tui.evaluation import evaluate_run

        title = "gallery" if gallery_only else "eval"
        try:
            with Store(self.home) as store:
                benches = []
                if gallery_only:
                    config = json.loads(store.get_run(run_id)["config_json"] or "{}")
                    benches = [Path(config.get("data", "")) / BUNDLED_BENCHES["gallery"][0]]
                out = evaluate_run(store, run_id=run_id, checkpoint_id=None, bench_files=benches, device=self.device)
            passed = sum(g.passed for g in out.gates)
            text = f"run {run_id}: {passed}/{len(out.gates)} gates pass"
            self.post_message(TaskDone(title, text, passed == len(out.gates), run_id))
        except Exception as e:
            self.post_message(TaskDone(title, f"run {run_id}: {type(e).__name__}: {e}", False, run_id))

    def action_diagnose(self) -> None:
        if self.view.run_id is None:
            self.notice("no run open to diagnose", error=True)
            return
        self.notice(f"diagnosing run {self.view.run_id}")
        self._diagnose_task(self.view.run_id)

    @work(thread=True, exit_on_error=False, group="tasks")
    def _diagnose_task(self, run_id: int) -> None:
        from navi_tui.diagnosis import diagnose_run

        try:
            with Store(self.home) as store:
                text, collapsed = diagnose_run(store, run_id=run_id, device=self.device)
            self.post_message(TaskDone(f"diagnose run {run_id}" + (": a stage collapses" if collapsed else ""),
                                       text, not collapsed, run_id))
        except Exception as e:
            self.post_message(TaskDone("diagnose", f"run {run_id}: {type(e).__name__}: {e}", False, run_id))

    def action_rollback(self) -> None:
        v = self.view
        if v.run_id is None or not v.checkpoints:
            self.notice("no checkpoint to roll back to in the open run", error=True)
            return
        verdicts: dict[int, str] = {}
        for row in self.store.evals(v.run_id):
            if row["checkpoint_id"] is not None:
                prev = verdicts.get(row["checkpoint_id"], "pass")
                verdicts[row["checkpoint_id"]] = "pass" if prev == "pass" and row["passed"] else "fail"
        run_id = v.run_id

        def picked(checkpoint_id: int | None) -> None:
            if checkpoint_id is not None:
                self._rollback_to(run_id, checkpoint_id)

        self.push_screen(CheckpointPicker(run_id, v.checkpoints, verdicts), picked)

    @work(thread=True, exit_on_error=False, exclusive=True, group="rollback")
    def _rollback_to(self, run_id: int, checkpoint_id: int) -> None:
        # a live run stops first (it saves its own checkpoint); then training continues from the pick
        if self.session and self.session.alive:
            self.session.stop()
        try:
            with Store(self.home) as store:
                point = resume_point(store, run_id, checkpoint_id, rollback=True)
        except Exception as e:
            self.call_from_thread(self.notice, f"cannot roll back to checkpoint {checkpoint_id}: {e}", error=True)
            return
        self.call_from_thread(self._start, resume=point)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "runs":
            self.open_run(int(event.row_key.value))
            self.query_one(TabbedContent).active = "tab-events"
        elif event.data_table.id == "gallery":
            # the table cuts long texts; enter shows the whole sample
            row = self.query_one(GalleryTable).sample(event.cursor_row)
            if row:
                self.push_screen(TextScreen("gallery sample", "\n\n".join(f"{k}: {v}" for k, v in row.items())))

    def action_mark(self) -> None:
        runs = self.query_one(RunsTable)
        runs.marked = runs.highlighted_run()
        self.refresh_runs()
        self.notice(f"run {runs.marked} marked: v compares it with the run under the cursor")

    def action_compare(self) -> None:
        runs = self.query_one(RunsTable)
        a, b = runs.marked, runs.highlighted_run()
        if a is None or b is None or a == b:
            self.notice("mark a run with m, move to another, then v", error=True)
            return
        self.push_screen(CompareScreen(self._run_summary(a), self._run_summary(b)))

    def _run_summary(self, run_id: int) -> dict:
        run = self.store.get_run(run_id)
        gates = {}
        for row in self.store.evals(run_id):
            gates[row["gate"]] = row
        return {"run": run, "gates": gates, "config": json.loads(run["config_json"] or "{}")}

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_quit_console(self) -> None:
        if not self._live():
            self.exit()
            return

        def answered(yes: bool) -> None:
            if yes:
                self._quitting = True
                self.session.control.stop()  # on_session_ended exits once the checkpoint is saved
                self.notice(f"stopping run {self.session.run_id}; quitting once its checkpoint is saved")

        self.push_screen(ConfirmQuit(self.session.run_id), answered)

    def exit(self, *args, **kwargs) -> None:
        self._exiting = True
        super().exit(*args, **kwargs)

    def on_unmount(self) -> None:
        # whatever ends the app (ctrl-c, a test's exit), a live run stops cleanly with a checkpoint
        if self.session and self.session.alive:
            self.session.stop(timeout=120)
        self.store.close()
