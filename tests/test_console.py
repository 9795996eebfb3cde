"""The console through Textual's pilot: each key, against a real store and real (tiny) training.

    python -m pytest -q tests/test_console.py

Runs use --steps 1 to 3, on the small corpus of conftest.py: they fail their gates, which
is fine here; what is tested is that every key does what the footer says, and that the store and the
screen agree. The keys that need a finished run open a copy of the session's trained home.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from navi_model.config import get_profile
from navi_tui.app import NaviApp
from crash_harness import wait_stopped
from navi_tui.cli import main
from navi_tui.halt_points import STOP_ENV
from navi_tui.messages import EventsReady
from navi_tui.training_session import EventBridge
from navi_tui.widgets.dialogs import CheckpointPicker, ConfirmQuit, HelpScreen, TextScreen
from navi_tui.widgets.panes import EventsLog, GalleryTable, GatesTable, RunHeader, RunsTable, WeightsTable
from store import Store

CPU = torch.device("cpu")
SIZE = (140, 45)


class FixedStats:
    """System readings that do not move, so screens compare equal; the real sampler has its own test."""

    def read(self) -> dict:
        return {"cpu_percent": 50.0, "ram_percent": 25.0, "ram_used_gib": 6.0, "ram_total_gib": 24.0, "cpus": 2,
                "gpu": None, "gpu_error": "no GPU"}


def make_app(home, **kw) -> NaviApp:
    kw.setdefault("system_stats", FixedStats())
    kw.setdefault("profile", "tiny")
    return NaviApp(home, device=CPU, **kw)


async def wait_for(pilot, condition, timeout: float = 240.0, what: str = "condition"):
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.1)


async def wait_ended(pilot, app, sessions: int = 1, timeout: float = 400.0):
    """Until the screen has shown the end of its `sessions`-th training session: the trainer's last
    event drained and the run read back from the store, as a person sees it once the run is over."""
    await wait_for(pilot, lambda: app.sessions_ended >= sessions, timeout, f"the end of session {sessions}")


# runs that must still be training when a key reaches them: longer than any machine finishes before the
# key, and the key's stop ends them at once
ENDLESS = 100_000


def live_tiny():
    """The tiny profile with the policy's loss read back every 2 steps instead of every 25: the view's step,
    which the tests below wait on, moves within a few steps of a live run rather than once in 25."""
    p = get_profile("tiny")
    return replace(p, policy_train=replace(p.policy_train, log_every=2))


async def show_table(app, pilot, tab: str, table_type):
    """Bring a tab to the front and focus its table, as a person would with the mouse."""
    app.query_one("#tabs").active = tab
    table = app.query_one(table_type)
    table.focus()
    await pilot.pause()
    return table


def header_text(app) -> str:
    return str(app.query_one(RunHeader).render())


@pytest.fixture
def trained_home(trained_home_template, tmp_path):
    """A copy of the session's trained home (conftest.py): run 1, `train --steps 3` on the small corpus,
    its gates failed. Each test has its own: some add runs, and the workers run tests in any order
    (shared, c once continued a run another test had added)."""
    home = tmp_path / "trained" / "home"
    shutil.copytree(trained_home_template, home)
    return home


@pytest.fixture(scope="module")
def gallery_size(small_corpus_dir) -> int:
    """The prompts of the small corpus's gallery: a run on it, or an eval of one, shows every one."""
    return len((small_corpus_dir / "gallery.jsonl").read_text().splitlines())


async def test_t_trains_a_run_and_every_pane_fills(tmp_path, small_corpus_dir, gallery_size):
    app = make_app(tmp_path / "home", steps=1, data=small_corpus_dir)
    async with app.run_test(size=SIZE) as pilot:
        assert "no run open" in header_text(app)
        await pilot.press("t")
        await wait_for(pilot, lambda: app.session is not None and app.session.run_id == 1, what="run 1")
        await wait_ended(pilot, app)
        # the header repaints on the console's calm tick, the panes at once
        await wait_for(pilot, lambda: "completed" in header_text(app), what="the header to say completed")
        with Store(tmp_path / "home") as store:
            run = store.get_run(1)
            gates = {e["gate"] for e in store.evals(1)}
            n_loss = len(store.metrics(1, "loss"))
        assert run["status"] == "completed"
        assert "run 1" in header_text(app) and "completed" in header_text(app)
        # every pane shows what the store holds
        assert set(app.view.loss) == {"policy", "planner", "sft", "da"}
        assert sum(len(v) for v in app.view.loss.values()) == n_loss
        assert app.query_one(GatesTable).row_count == len(gates) >= 20
        assert app.query_one(WeightsTable).row_count > 5  # the planner's classes
        assert app.query_one(GalleryTable).row_count == gallery_size
        assert app.view.concept_sim, "the talker's concept similarity reached the view"
        assert len(app.query_one(EventsLog).lines) >= 5
        assert app.last_notice.startswith("run 1 completed: FAIL")


async def test_pause_resume_and_stop_reach_the_trainer(tmp_path, small_corpus_dir):
    app = make_app(tmp_path / "home", steps=ENDLESS, train_on_start=True, data=small_corpus_dir, profile=live_tiny())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view.latest.step >= 5, what="training to log a few steps")
        await pilot.press("p")
        assert app.session.control.paused
        await wait_for(pilot, lambda: "PAUSED" in header_text(app), what="PAUSED in the header")
        # parked at a step boundary: the loop itself waits, so no step can run and none is logged
        await wait_for(pilot, lambda: app.session.control.parked, what="the loop to park")
        before = app.view.latest.step
        await pilot.pause()
        assert app.session.control.parked and app.view.latest.step == before
        await pilot.press("p")
        assert not app.session.control.paused
        await wait_for(pilot, lambda: app.view.latest.step > before, what="training to go on")
        await pilot.press("s")
        await wait_ended(pilot, app)
    with Store(tmp_path / "home") as store:
        run = store.get_run(1)
        policy = store.latest_checkpoint(1, "policy")
    assert run["status"] == "stopped"
    assert 0 < policy["step"] < ENDLESS  # the stop saved a checkpoint where it stood


async def test_quit_asks_first_and_stops_the_run_with_a_checkpoint(tmp_path, small_corpus_dir):
    app = make_app(tmp_path / "home", steps=ENDLESS, train_on_start=True, data=small_corpus_dir, profile=live_tiny())
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view.latest.step >= 5, what="training")
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmQuit)
        await pilot.press("n")
        assert not isinstance(app.screen, ConfirmQuit) and app.session.alive
        await pilot.press("q")
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    with Store(tmp_path / "home") as store:
        assert store.get_run(1)["status"] == "stopped"
        assert store.latest_checkpoint(1, "policy") is not None


async def test_e_evaluates_the_open_run_and_stores_it(trained_home):
    with Store(trained_home) as store:
        before = len(store.evals(1))
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        assert app.view.run_id == 1
        await pilot.press("e")
        await wait_for(pilot, lambda: app.last_notice.startswith("eval:"), what="the eval")
        assert "gates pass" in app.last_notice
    with Store(trained_home) as store:
        rows = store.evals(1)[before:]
    assert rows and all(json.loads(r["detail_json"])["command"] == "eval" for r in rows)


async def test_g_runs_the_gallery_and_shows_it(trained_home, gallery_size):
    with Store(trained_home) as store:
        before = len(store.gallery(1))
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        await wait_for(pilot, lambda: app.last_notice.startswith("gallery:"), what="the gallery")
        await wait_for(pilot, lambda: app.query_one(GalleryTable).row_count == gallery_size,
                       what=f"the gallery's {gallery_size} rows")
    with Store(trained_home) as store:
        assert len(store.gallery(1)) == before + gallery_size


async def test_r_rolls_back_to_a_picked_checkpoint_as_a_new_run(trained_home):
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("r")
        assert isinstance(app.screen, CheckpointPicker)
        with Store(trained_home) as store:
            ckpts = store.checkpoints(1)
            n_runs = len(store.list_runs())
        planner = next(c for c in ckpts if c["model"] == "planner")
        table = app.screen.query_one("#checkpoint-table")
        table.move_cursor(row=ckpts.index(planner))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.session is not None and app.session.run_id is not None, what="the new run")
        new_id = app.session.run_id
        await wait_for(pilot, lambda: not app.session.alive, what="the continued run")
    with Store(trained_home) as store:
        run = store.get_run(new_id)
        config = json.loads(run["config_json"])
        source_events = [e for e in store.events(1) if e["kind"] == "rollback"]
        new_policy = store.latest_checkpoint(new_id, "policy")
        assert len(store.list_runs()) == n_runs + 1
    assert run["resumed_from"] == 1 and config["resumed_from"]["checkpoint"] == planner["id"]
    assert config["resumed_from"]["rollback"] is True
    assert any(f"run {new_id}" in e["message"] for e in source_events)
    # the policy was not trained again: its checkpoint is the source's, carried over at the same step
    assert new_policy["step"] == 3


async def test_d_shows_the_diagnostic_trace(trained_home):
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, TextScreen), what="the trace")
        assert "talker checkpoint" in str(app.screen.query_one("#text-body").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, TextScreen)


async def test_help_lists_every_footer_key(trained_home):
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one("#help-table")
        keys = {str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        for binding in app.BINDINGS:
            key = "?" if binding.key == "question_mark" else binding.key
            assert any(key in k for k in keys), f"{key} missing from help"


async def test_keys_that_need_a_live_run_say_so(trained_home):
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        for key in ("p", "s"):
            await pilot.press(key)
            assert "nothing is training" in app.last_notice


async def test_runs_tab_opens_and_compares_runs(trained_home, small_corpus_dir):
    with Store(trained_home) as store:
        ids = [r["id"] for r in store.list_runs()]
    if len(ids) < 2:  # the rollback test adds a run; alone, make a second one
        assert main(["--home", str(trained_home), "--no-ui", "train", "--steps", "1",
                     "--data", str(small_corpus_dir)]) == 1
        with Store(trained_home) as store:
            ids = [r["id"] for r in store.list_runs()]
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        runs = await show_table(app, pilot, "tab-runs", RunsTable)
        runs.move_cursor(row=len(ids) - 1)  # the oldest run, id 1
        await pilot.press("enter")
        assert app.view.run_id == ids[-1] == 1
        await pilot.press("m")
        runs.move_cursor(row=0)
        await pilot.press("v")
        table = app.screen.query_one("#compare-table")
        assert [str(c.label) for c in table.columns.values()][1:] == ["run 1", f"run {ids[0]}"]


async def test_a_training_error_shows_and_marks_the_run_failed(tmp_path, monkeypatch, small_corpus_dir):
    import navi_tui.training_run as tr

    def broken(*args, **kwargs):
        raise RuntimeError("planted: the policy trainer blew up")

    monkeypatch.setattr(tr, "train_policy", broken)
    app = make_app(tmp_path / "home", steps=1, train_on_start=True, data=small_corpus_dir)
    async with app.run_test(size=SIZE) as pilot:
        await wait_ended(pilot, app)
        assert "planted: the policy trainer blew up" in app.last_notice
        assert any("planted" in e[3] and e[1] == "error" for e in app.view.events)
        await pilot.press("question_mark")  # the app is still up and answering keys
        assert isinstance(app.screen, HelpScreen)
    with Store(tmp_path / "home") as store:
        run = store.get_run(1)
    assert run["status"] == "failed" and "planted" in run["message"]


def test_the_bridge_wakes_the_ui_once_however_fast_the_trainer_emits():
    from navi_model.events import MetricsLogged

    posted = []
    bridge = EventBridge(posted.append)
    for step in range(10_000):
        bridge(MetricsLogged(step, "policy", {"loss": 1.0}))
    assert len(posted) == 1 and isinstance(posted[0], EventsReady)
    assert len(bridge.drain()) == 10_000
    bridge(MetricsLogged(0, "policy", {"loss": 1.0}))
    assert len(posted) == 2  # drained, so the next event wakes the UI again
    assert EventsReady().can_replace(EventsReady())


async def test_the_ui_handles_far_fewer_wakeups_than_events(tmp_path, small_corpus_dir):
    handled = []

    def hook(message):
        if isinstance(message, EventsReady):
            handled.append(message)

    app = make_app(tmp_path / "home", steps=1, train_on_start=True, data=small_corpus_dir)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await wait_ended(pilot, app)
        events = app.session.bridge.posted
    assert 0 < len(handled) <= events


# the torchrun case is a distributed job (two ranks, their launcher): the slow tier's, with tests/test_distributed.py
@pytest.mark.parametrize("nproc", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["one process", "torchrun, 2 ranks"])
async def test_the_console_follows_a_run_another_process_writes(tmp_path, nproc, small_corpus_dir):
    """Attach: a real headless navi-tui writes the run (in one process, or rank 0 of a torchrun job
    of two: train --nproc 2); the console reads only rows past its cursor."""
    home = tmp_path / "home"
    # the writer stops itself once its run row exists (NAVI_STOP_AT=run), so the console opens on a run
    # that is known to be running, however fast the machine; SIGCONT lets it train on
    proc = subprocess.Popen([sys.executable, "-m", "navi_tui", "--home", str(home), "--no-ui", "train",
                             "--steps", "3", "--data", str(small_corpus_dir),
                             *(["--nproc", str(nproc)] if nproc > 1 else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, STOP_ENV: "run"})
    try:
        deadline = time.monotonic() + 120
        while not (home / "navi.db").exists() or not Store(home).latest_run():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no run row within 120 s"
            time.sleep(0.2)
        writer_pid = Store(home).latest_run()["pid"]  # rank 0 under torchrun: the launcher's child
        wait_stopped(writer_pid)
        app = make_app(home)
        async with app.run_test(size=SIZE) as pilot:
            assert app.view.run_id == 1
            await wait_for(pilot, lambda: "followed" in header_text(app), what="the header to say followed")
            seen_running = app.view.status == "running"
            os.kill(writer_pid, signal.SIGCONT)
            await wait_for(pilot, lambda: app.view.latest.step > 0, what="rows from the other process")
            await wait_for(pilot, lambda: app.view.status in ("completed", "failed"), timeout=400,
                           what="the other process to finish")
            with Store(home) as store:
                n_loss = len(store.metrics(1, "loss"))
                n_gates = len({e["gate"] for e in store.evals(1)})
                world = json.loads(store.get_run(1)["config_json"])["world_size"]
            # every stored loss once: read past a cursor, never the history again
            await wait_for(pilot, lambda: sum(len(v) for v in app.view.loss.values()) >= n_loss
                           and app.query_one(GatesTable).row_count >= n_gates, what="the store's last rows")
            assert sum(len(v) for v in app.view.loss.values()) == n_loss
            assert app.query_one(GatesTable).row_count == n_gates
        assert seen_running and world == nproc
    finally:
        if proc.poll() is None:
            # SIGTERM: the launcher of train --nproc passes it on to its ranks, which a kill would orphan
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()


async def test_c_continues_the_open_run_as_a_new_run(trained_home):
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        source = app.view.run_id
        await pilot.press("c")
        await wait_for(pilot, lambda: app.session is not None and app.session.run_id is not None, what="the new run")
        new_id = app.session.run_id
        await wait_ended(pilot, app)
        assert app.view.run_id == new_id
    with Store(trained_home) as store:
        run = store.get_run(new_id)
        resume_events = [e for e in store.events(new_id) if e["kind"] == "resume"]
        steps = {c["model"]: c["step"] for c in store.checkpoints(new_id)}
    assert run["resumed_from"] == source and resume_events
    # every model of the source had finished its 3 steps: carried over, judged, not trained again
    assert steps["policy"] == 3 and steps["planner"] == 3


async def test_a_gallery_row_opens_the_whole_sample(trained_home):
    app = make_app(trained_home)
    async with app.run_test(size=SIZE) as pilot:
        await show_table(app, pilot, "tab-gallery", GalleryTable)
        await pilot.press("enter")
        assert isinstance(app.screen, TextScreen)
        body = str(app.screen.query_one("#text-body").render())
        assert "prompt:" in body and "reference:" in body


async def test_the_header_shows_the_discord_mirror_and_discord_hears_the_console_run(tmp_path, small_corpus_dir):
    # the real relay and discord.py client against the loopback server, fed by nothing but the store
    from discord_loopback import LoopbackDiscord
    from navi_tui.mirror import Mirror, Tuning
    from navi_tui.mirror.targets import use_api_base

    server = LoopbackDiscord().start()
    home = tmp_path / "home"
    mirror = Mirror.from_env(home, server.webhook_env(), Tuning(poll_interval=0.05, backoff_base=0.05,
                                                                backoff_cap=0.3, request_timeout=10)).start()
    try:
        app = make_app(home, steps=1, mirror=mirror, data=small_corpus_dir)
        async with app.run_test(size=SIZE) as pilot:
            assert app.last_notice.startswith("discord: mirroring")
            await pilot.press("t")
            await wait_for(pilot, lambda: app.session is not None and not app.session.alive, what="the run")
            await wait_for(pilot, lambda: any("run 1 completed" in c for c in server.contents()),
                           timeout=30, what="the end message")
            await wait_for(pilot, lambda: "discord delivering" in header_text(app), timeout=5, what="the state")
            # Discord goes away: the header says so and counts what waits
            server.down()
            with Store(home) as store:
                store.queue_message("test", "while Discord is away")
            await wait_for(pilot, lambda: "discord retrying (" in header_text(app), timeout=60,
                           what="the retrying state")
        contents = server.contents()
        assert contents[0].startswith("▶ **run 1 started**")
        assert any("verdict **FAIL**" in c for c in contents)
    finally:
        mirror.close(1.0)
        server.stop()
        use_api_base(None)


async def test_without_a_mirror_the_header_says_discord_is_off(tmp_path, small_corpus_dir):
    app = make_app(tmp_path / "home", steps=1, data=small_corpus_dir)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: app.view.run_id == 1, what="run 1")
        await wait_for(pilot, lambda: "discord off" in header_text(app), what="the mirror's state in the header")
        assert "discord off" in header_text(app) and "discord delivering" not in header_text(app)
        app.session.control.stop()
        await wait_for(pilot, lambda: not app.session.alive, what="the stop")
