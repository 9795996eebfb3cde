"""The Discord mirror: the real discord.py client against a loopback server that speaks Discord's API.

    python -m pytest tests/test_discord_mirror.py -q

tests/discord_loopback.py is the server (webhook execute and edit, the bot's channel messages,
faults on demand). Every test uses a real SQLite store; the relay runs its own thread and loop
exactly as in a console. Timings are shortened through Tuning; the one full training run is
the last test (the issue's "done when").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from discord_loopback import BOT_TOKEN, WEBHOOK_TOKEN, LoopbackDiscord
from navi_tui.cli import main
from navi_tui.mirror import Mirror, MirrorConfigError, Tuning, load_config
from navi_tui.mirror import relay as relay_module
from navi_tui.mirror.compose import DISCORD_LIMIT, FENCE, split_message
from navi_tui.mirror.relay import Relay
from navi_tui.mirror.relay_lock import LOCK_FILENAME, RelayLock
from navi_tui.mirror.targets import use_api_base
from store import Store

FAST = Tuning(poll_interval=0.05, backoff_base=0.05, backoff_cap=0.3, request_timeout=10, lock_retry=0.2,
              command_poll=0.1)
# a close with Discord down gives up at its first failed try; one that waited for Discord would spend
# all of this. the tests allow half of it: far more than a loaded machine needs for one refused connection
GOODBYE_S = 30.0


@pytest.fixture
def server():
    srv = LoopbackDiscord().start()
    yield srv
    srv.stop()
    use_api_base(None)  # Route.BASE is process-wide: leave discord.py as we found it


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    # the deadline is a safety net for a hung mirror, never a speed bar: a passing wait ends when its
    # condition holds. With 10 s, one run of the everyday suite on a loaded 2-core machine failed a
    # test of this file (2026-12-03; its output was not kept, and it did not fail again alone or
    # beside two busy processes), so a slow machine must not be what fails it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def queue(home: Path, *texts: str) -> None:
    with Store(home) as store:
        for text in texts:
            store.queue_message("test", text)


def outbox(home: Path) -> list[dict]:
    with Store(home) as store:
        return store.outbox()


def start_mirror(home: Path, env: dict, **kwargs) -> Mirror:
    return Mirror.from_env(home, env, FAST, **kwargs).start()


# the outbox in the store


def test_outbox_queues_an_announcement_once_and_closes_a_row_once(tmp_path):
    with Store(tmp_path) as store:
        first = store.queue_message("end", "run 1 ended", run_id=None, dedupe_key="end:1:0")
        assert store.queue_message("end", "run 1 ended again", dedupe_key="end:1:0") is None  # a second relay
        assert [r["payload_json"] for r in store.unsent_messages()] == ['{"content": "run 1 ended"}']
        assert store.mark_sent(first, outcome="delivered", discord_message_id="42") is True
        assert store.mark_sent(first, outcome="delivered", discord_message_id="43") is False
        (row,) = store.outbox()
        assert (row["outcome"], row["discord_message_id"], row["attempts"], store.unsent_count()) == ("delivered", "42", 1, 0)


# delivery


def test_messages_are_delivered_in_order_and_each_row_marked_sent_once(server, tmp_path):
    queue(tmp_path, "one", "two", "three")
    mirror = start_mirror(tmp_path, server.webhook_env(), follow=False)
    try:
        wait_until(lambda: len(server.posted()) == 3, what="3 messages")
        wait_until(lambda: mirror.state() == "delivering", what="the delivering state")
    finally:
        mirror.close()
    assert server.contents() == ["one", "two", "three"]
    rows = outbox(tmp_path)
    assert [(r["outcome"], r["attempts"]) for r in rows] == [("delivered", 1)] * 3
    assert [r["discord_message_id"] for r in rows] == [str(m.id) for m in server.posted()]
    assert mirror.summary() == "discord: 3 message(s) delivered"


def test_a_run_has_one_status_message_edited_in_place(server, tmp_path):
    env = {**server.webhook_env(), "NAVI_DISCORD_EDIT_INTERVAL": "0.1"}
    store = Store(tmp_path)
    mirror = start_mirror(tmp_path, env)
    try:
        run_id = store.create_run(profile="tiny", command="train", config={"device": "cpu",
                                                                           "steps": {"policy": 40}})
        store.insert_metrics([{"run_id": run_id, "step": 10, "phase": "policy", "name": "loss", "value": 2.5},
                              {"run_id": run_id, "step": 10, "phase": "policy", "name": "tokens_per_s",
                               "value": 3800.0}])
        status = wait_until(lambda: [m for m in server.posted() if "step 10/40" in m.content], what="a status")[0]
        assert "loss 2.5000" in status.content and "3.8k tok/s" in status.content and "GPU n/a (cpu)" in status.content
        store.insert_metrics([{"run_id": run_id, "step": 20, "phase": "policy", "name": "loss", "value": 1.25}])
        wait_until(lambda: "step 20/40" in status.content, what="the status edited to step 20")
        store.add_evals(run_id, None, [{"gate": "coverage_policy", "value": 0.0, "threshold": ">= 3",
                                        "passed": False, "detail": {"summary": "least-seen sample 0 times"}}])
        wait_until(lambda: "gates so far: 0/1 pass" in status.content, what="the gates in the status")
        store.finish_run(run_id, status="completed", verdict="fail", message="0/1 gates passed")
        wait_until(lambda: any("verdict **FAIL**" in c for c in server.contents()), what="the end message")
        wait_until(lambda: "verdict **FAIL**" in status.content, what="the final status edit")
    finally:
        mirror.close()
        store.close()
    statuses = [m for m in server.posted() if m.content.startswith("📊")]
    assert statuses == [status] and len(status.versions) >= 3  # one message, edited in place
    assert [w[1] for w in server.writes()].count("PATCH") == len(status.versions) - 1
    contents = server.contents()
    assert contents[0].startswith(f"▶ **run {run_id} started**")
    assert any("gate coverage_policy failed" in c for c in contents)
    end = next(c for c in contents if c.startswith("■"))
    assert "```\ngate" in end and "coverage_policy" in end and "FAIL  least-seen sample 0 times" in end


def test_alarms_rollbacks_and_crashes_each_get_a_message(server, tmp_path):
    store = Store(tmp_path)
    mirror = start_mirror(tmp_path, server.webhook_env())
    try:
        run_id = store.create_run(profile="tiny", command="train", config={"device": "cpu"})
        store.insert_events([
            {"run_id": run_id, "level": "warn", "kind": "rollback", "message": "DA regressed; back to talker_sft_000020"},
            {"run_id": run_id, "level": "error", "kind": "gpu_util", "message": "GPU at 7% over 30 s: stopped"},
            {"run_id": run_id, "level": "info", "kind": "checkpoint", "message": "checkpoint 3"},  # not news
            {"run_id": run_id, "level": "error", "kind": "crash", "message": "training failed: RuntimeError: boom"}])
        store.finish_run(run_id, status="failed", verdict=None, message="RuntimeError: boom")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        lost = store.create_run(profile="tiny", command="train", config={"device": "cpu"})
        store.db.execute("UPDATE runs SET pid = ? WHERE id = ?", [dead.pid, lost])
        store.db.conn.commit()
        assert store.mark_crashed_runs() == [lost]
        wait_until(lambda: sum(c.startswith("■") for c in server.contents()) == 2, what="both end messages")
    finally:
        mirror.close()
        store.close()
    # the first line of each, without the end messages' durations
    news = [c.split("\n")[0].split(" in ")[0] for c in server.contents() if not c.startswith("📊")]
    assert news == [
        f"▶ **run {run_id} started**: profile tiny on cpu ({os.uname().nodename}, pid {os.getpid()})",
        f"↩ **run {run_id} rollback**: DA regressed; back to talker_sft_000020",
        f"🚨 **run {run_id} alarm** (gpu_util): GPU at 7% over 30 s: stopped",
        f"💥 **run {run_id} crashed**: training failed: RuntimeError: boom",
        f"■ **run {run_id} failed**: verdict **NONE** (0/0 gates passed)",
        f"▶ **run {lost} started**: profile tiny on cpu ({os.uname().nodename}, pid {dead.pid})",
        f"💥 **run {lost} crashed**: process {dead.pid} ended without finishing the run",
        f"■ **run {lost} crashed**: verdict **NONE** (0/0 gates passed)",
    ]


@pytest.mark.parametrize("via,global_", [(True, False), (False, False), (False, True)],
                         ids=["discord.py-waits", "relay-waits", "global"])
def test_a_429_waits_retry_after_then_delivers_once(server, tmp_path, via, global_):
    server.rate_limit_next(0.6, via=via, global_=global_)
    queue(tmp_path, "after the limit", "next")
    mirror = start_mirror(tmp_path, server.webhook_env(), follow=False)
    try:
        wait_until(lambda: len(server.posted()) == 2, what="both messages")
    finally:
        mirror.close()
    writes = server.writes()
    assert len(writes) == 3, [(round(t, 3), m) for t, m, _ in writes]  # the limited request, its retry, the next message
    assert writes[1][0] - writes[0][0] >= 0.6, writes  # retry_after honoured, whoever waited it out
    assert server.contents() == ["after the limit", "next"]


def test_500s_are_retried_until_delivered(server, tmp_path):
    # webhook: discord.py itself retries a 5xx (after 1 s, then 3 s)
    server.fail_next(2, status=500)
    queue(tmp_path, "through two 500s")
    mirror = start_mirror(tmp_path, server.webhook_env(), follow=False)
    try:
        wait_until(lambda: server.contents() == ["through two 500s"], timeout=15, what="the message")
    finally:
        mirror.close()
    assert len(server.writes()) == 3


def test_bot_mode_5xx_is_retried_by_the_relay_with_capped_backoff(server, tmp_path, monkeypatch):
    # discord.py's HTTPClient raises a 503 at once: the relay's own backoff retries it
    delays = []  # what the relay chose to wait after each failure

    def recorded_delay(relay, error):
        delays.append(plain_delay(relay, error))
        return delays[-1]

    plain_delay = Relay._retry_delay
    monkeypatch.setattr(Relay, "_retry_delay", recorded_delay)
    server.fail_next(4, status=503)
    queue(tmp_path, "through four 503s")
    mirror = start_mirror(tmp_path, server.bot_env(), follow=False)
    try:
        wait_until(lambda: server.contents("bot") == ["through four 503s"], what="the message")
    finally:
        mirror.close()
    (row,) = outbox(tmp_path)
    assert row["attempts"] == 5 and row["outcome"] == "delivered"
    assert row["last_error"].startswith("Discord answered 503")
    assert delays == pytest.approx([0.05, 0.1, 0.2, 0.3])  # doubling from 0.05 s, capped at 0.3 s
    # and each was waited out before the next try (a lower bound: no load can make a wait shorter)
    gaps = [b[0] - a[0] for a, b in zip(server.writes(), server.writes()[1:])]
    assert len(gaps) == 4 and all(gap >= delay for gap, delay in zip(gaps, delays)), (gaps, delays)


def test_a_server_down_for_a_while_gets_everything_once_in_order_when_back(server, tmp_path):
    server.down()
    mirror = start_mirror(tmp_path, server.webhook_env(), follow=False)
    try:
        queue(tmp_path, *[f"message {i}" for i in range(5)])
        wait_until(lambda: mirror.state() == "retrying (5 queued)", what="the retrying state")
        assert "ClientConnectorError" in mirror.last_error()
        wait_until(lambda: outbox(tmp_path)[0]["attempts"] >= 3, what="a few more failed tries")
        server.up()
        wait_until(lambda: len(server.posted()) == 5, what="5 messages")
        wait_until(lambda: mirror.state() == "delivering", what="delivering again")
    finally:
        mirror.close()
    assert server.contents() == [f"message {i}" for i in range(5)]
    assert len(server.writes()) == 5  # no duplicates
    rows = outbox(tmp_path)
    assert all(r["outcome"] == "delivered" for r in rows) and rows[0]["attempts"] > 1


def test_a_restart_sends_the_rest_of_the_outbox_without_duplicates(server, tmp_path):
    with Store(tmp_path) as store:
        store.queue_message("test", "first")
        store.queue_message("status", "status v1", edit_key="status:1")
    first = start_mirror(tmp_path, server.webhook_env(), follow=False)
    wait_until(lambda: len(server.posted()) == 2, what="the first relay's messages")
    server.down()
    with Store(tmp_path) as store:
        store.queue_message("test", "second")
        store.queue_message("status", "status v2", edit_key="status:1")
        store.queue_message("test", "third")
    wait_until(lambda: first.state().startswith("retrying"), what="the first relay retrying")
    t0 = time.monotonic()
    first.close(flush_timeout=GOODBYE_S)
    assert time.monotonic() - t0 < GOODBYE_S / 2  # Discord down does not hold up the exit
    assert first.state() == "stopped (3 queued)"
    server.up()
    second = start_mirror(tmp_path, server.webhook_env(), follow=False)
    try:
        wait_until(lambda: len(server.writes()) == 5, what="the rest")
        wait_until(lambda: second.state() == "delivering", what="an empty queue")
    finally:
        second.close()
    assert server.contents() == ["first", "status v2", "second", "third"]
    status = server.posted()[1]
    assert status.versions == ["status v1", "status v2"]  # the second relay edited the first one's message
    assert [(r["outcome"], r["attempts"] >= 1) for r in outbox(tmp_path)] == [("delivered", True)] * 5


def test_stale_status_and_heartbeats_are_superseded_not_sent(server, tmp_path):
    server.down()
    with Store(tmp_path) as store:
        for i in range(3):
            store.queue_message("status", f"status {i}", edit_key="status:1")
            store.queue_message("heartbeat", f"heartbeat {i}")
        store.queue_message("test", "alarm")
    mirror = start_mirror(tmp_path, server.webhook_env(), follow=False)
    server.up()
    try:
        wait_until(lambda: len(server.posted()) == 3, what="3 messages")
    finally:
        mirror.close()
    assert server.contents() == ["status 2", "heartbeat 2", "alarm"]
    outcomes = [r["outcome"] for r in outbox(tmp_path)]
    assert outcomes.count("superseded") == 4 and outcomes.count("delivered") == 3


def test_closing_with_discord_down_is_quick_and_the_mirror_command_sends_the_rest(server, tmp_path, monkeypatch,
                                                                                  capsys):
    server.down()
    queue(tmp_path, "waiting 1", "waiting 2")
    mirror = start_mirror(tmp_path, server.webhook_env())
    wait_until(lambda: mirror.state().startswith("retrying"), what="retrying")
    t0 = time.monotonic()
    mirror.close(flush_timeout=GOODBYE_S)
    assert time.monotonic() - t0 < GOODBYE_S / 2
    assert "2 message(s) wait in the outbox for the next relay" in mirror.summary()
    server.up()
    for name, value in server.webhook_env().items():
        monkeypatch.setenv(name, value)
    assert main(["--home", str(tmp_path), "--no-ui", "mirror", "--timeout", "10"]) == 0
    assert server.contents() == ["waiting 1", "waiting 2"]
    assert "discord: 2 message(s) delivered" in capsys.readouterr().out


# one relay per home


def test_a_live_lock_means_no_relay_and_a_stale_one_is_taken_over(server, tmp_path, monkeypatch):
    refusals = []  # every look at the relay lock that found a live holder

    class WatchedRelayLock(RelayLock):
        def acquire(self) -> bool:
            taken = super().acquire()
            if not taken:
                refusals.append(self.holder)
            return taken

    monkeypatch.setattr(relay_module, "RelayLock", WatchedRelayLock)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILENAME).write_text(f"{holder.pid}\n")
        queue(tmp_path, "for whoever holds the relay")
        mirror = start_mirror(tmp_path, server.webhook_env())
        try:
            assert mirror.state() == f"no relay: another console (pid {holder.pid}) holds the lock"
            assert "no relay here" in mirror.notice()
            # the relay looks at the lock again every lock_retry and sends only once it holds it:
            # three more looks that found the holder alive, and it had its chances to send wrongly
            looked = len(refusals)
            wait_until(lambda: len(refusals) >= looked + 3, what="the relay looking at the lock again")
            assert set(refusals) == {holder.pid}
            assert server.posted() == []  # nothing sent twice: the holder's relay sends it
        finally:
            mirror.close()
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale
    mirror = start_mirror(tmp_path, server.webhook_env())
    try:
        wait_until(lambda: server.contents() == ["for whoever holds the relay"], what="the message")
        assert (tmp_path / LOCK_FILENAME).read_text().strip() == str(os.getpid())
        # a second console in the same home finds the lock live (the flock is held)
        other = start_mirror(tmp_path, server.webhook_env())
        assert other.state() == f"no relay: another console (pid {os.getpid()}) holds the lock"
        other.close()
    finally:
        mirror.close()
    assert (tmp_path / LOCK_FILENAME).read_text() == ""  # released


def test_a_console_without_the_relay_takes_it_over_when_the_holder_goes(server, tmp_path):
    holder = start_mirror(tmp_path, server.webhook_env())
    waiting = start_mirror(tmp_path, server.webhook_env())
    try:
        assert waiting.state().startswith("no relay")
        holder.close()
        wait_until(lambda: waiting.state() == "delivering", what="the takeover")
        queue(tmp_path, "after the takeover")
        wait_until(lambda: server.contents() == ["after the takeover"], what="the message")
    finally:
        waiting.close()
        holder.close()


# bot mode


def test_bot_answers_allowed_users_and_logs_the_others(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="navi_tui.mirror")
    with Store(tmp_path) as store:
        run_id = store.create_run(profile="tiny", command="train", config={"device": "cpu"})
        store.finish_run(run_id, status="completed", verdict="pass", message="all good")
    mirror = start_mirror(tmp_path, server.bot_env(allow="111, 333"))
    try:
        # the relay reads only messages newer than its start, which is a command poll before its
        # first read of the channel: what users say after that read is new to it
        wait_until(lambda: server.request_count("GET", "/messages"), what="the first channel read")
        server.user_says(222, "!status")
        server.user_says(111, "!runs")
        server.user_says(111, "hello, not a command")
        server.user_says(444, "!runs", bot=True)  # another bot: never answered, never logged
        reads = server.request_count("GET", "/messages")
        answer = wait_until(lambda: server.contents("bot"), what="an answer")
        # the next read began after the last message was said, so it held all four; the one after
        # began once the relay had answered or ignored each (it reads, handles, then reads again).
        # any answer, right or wrong, was queued by then: once the outbox is empty it was posted
        wait_until(lambda: server.request_count("GET", "/messages") >= reads + 2,
                   what="the relay reading the channel past the four messages")
        wait_until(lambda: all(r["sent"] is not None for r in outbox(tmp_path)), what="an empty outbox")
    finally:
        mirror.close()
    assert len(server.contents("bot")) == 1
    assert f"{run_id:>4}" in answer[0] and "completed" in answer[0] and "pass" in answer[0]
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert ignored == ["discord: ignored !status from user 222: not in NAVI_DISCORD_ALLOW"]
    with Store(tmp_path) as store:
        events = list(store.db.query("SELECT * FROM events WHERE kind = 'discord'"))
    assert [e["message"] for e in events] == ["ignored !status from user 222: not in NAVI_DISCORD_ALLOW"]


def test_bot_mode_keeps_its_token_out_of_store_logs_and_screen(server, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)  # discord.py logs request details at debug
    server.down()
    queue(tmp_path, "while down")
    mirror = start_mirror(tmp_path, server.bot_env(allow="111"))
    print(mirror.notice(), mirror.state())
    wait_until(lambda: mirror.state().startswith("retrying"), what="retrying")
    print(mirror.last_error())
    server.up()
    wait_until(lambda: server.contents("bot") == ["while down"], what="the message")
    server.user_says(111, "!gates")
    wait_until(lambda: len(server.contents("bot")) == 2, what="the answer")
    mirror.close()
    print(mirror.summary())
    assert_secret_nowhere(BOT_TOKEN, tmp_path, capsys.readouterr(), caplog.text)


def assert_secret_nowhere(secret: str, home: Path, captured, log_text: str) -> None:
    assert secret not in captured.out and secret not in captured.err
    assert secret not in log_text
    files = [p for p in home.rglob("*") if p.is_file()]  # navi.db and its -wal, the lock, checkpoints
    assert any(p.name == "navi.db" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path.name


# configuration


@pytest.mark.parametrize("env,message", [
    ({"NAVI_DISCORD_WEBHOOK": "https://discord.com/api/webhooks/123/short"}, "NAVI_DISCORD_WEBHOOK is not a Discord webhook URL"),
    ({"NAVI_DISCORD_WEBHOOK": f"https://example.com/api/webhooks/123/{WEBHOOK_TOKEN}"}, "set NAVI_DISCORD_API_BASE"),
    ({"NAVI_DISCORD_TOKEN": BOT_TOKEN, "NAVI_DISCORD_CHANNEL": "general"}, "NAVI_DISCORD_CHANNEL must be a numeric channel id"),
    ({"NAVI_DISCORD_TOKEN": BOT_TOKEN}, "NAVI_DISCORD_CHANNEL is not"),
    ({"NAVI_DISCORD_TOKEN": BOT_TOKEN + " x", "NAVI_DISCORD_CHANNEL": "5"}, "NAVI_DISCORD_TOKEN does not look like a bot token"),
    ({"NAVI_DISCORD_TOKEN": BOT_TOKEN, "NAVI_DISCORD_CHANNEL": "5", "NAVI_DISCORD_ALLOW": "me"}, "NAVI_DISCORD_ALLOW must list numeric user ids"),
    ({"NAVI_DISCORD_WEBHOOK": f"https://discord.com/api/webhooks/123/{WEBHOOK_TOKEN}", "NAVI_DISCORD_HEARTBEAT": "5m"},
     "NAVI_DISCORD_HEARTBEAT must be a number of seconds above 0, got '5m'"),
    ({"NAVI_DISCORD_WEBHOOK": f"https://discord.com/api/webhooks/123/{WEBHOOK_TOKEN}", "NAVI_DISCORD_EDIT_INTERVAL": "0"},
     "NAVI_DISCORD_EDIT_INTERVAL must be a number of seconds above 0"),
    ({"NAVI_DISCORD_WEBHOOK": f"https://discord.com/api/webhooks/123/{WEBHOOK_TOKEN}", "NAVI_DISCORD_TOKEN": BOT_TOKEN,
      "NAVI_DISCORD_CHANNEL": "5"}, "not both"),
    ({"NAVI_DISCORD_WEBHOOK": f"https://discord.com/api/webhooks/123/{WEBHOOK_TOKEN}", "NAVI_DISCORD_ALLOW": "5"},
     "NAVI_DISCORD_ALLOW only applies to bot mode"),
])
def test_bad_configuration_exits_2_naming_the_variable_and_writes_nothing(tmp_path, monkeypatch, capsys, env, message):
    with pytest.raises(MirrorConfigError) as error:
        load_config(env)
    assert message in str(error.value)
    for secret in (WEBHOOK_TOKEN, BOT_TOKEN):
        assert secret not in str(error.value)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "home"
    assert main(["--home", str(home), "--no-ui", "--profile", "tiny", "train", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and WEBHOOK_TOKEN not in err and BOT_TOKEN not in err
    assert not home.exists()  # nothing half-written


def test_unconfigured_mirror_is_off_and_says_so():
    mirror = Mirror.from_env(Path("unused"), {}).start()
    assert mirror.state() == "off" and not mirror.enabled
    assert mirror.notice() == ("discord: off (set NAVI_DISCORD_WEBHOOK, or NAVI_DISCORD_TOKEN and "
                               "NAVI_DISCORD_CHANNEL for bot mode)")
    mirror.close()


def test_config_never_shows_its_secrets():
    config = load_config({"NAVI_DISCORD_WEBHOOK": f"https://discord.com/api/webhooks/123/{WEBHOOK_TOKEN}"})
    assert (config.webhook_id, config.webhook_token) == (123, WEBHOOK_TOKEN)
    assert WEBHOOK_TOKEN not in repr(config) and WEBHOOK_TOKEN not in config.describe()


def test_long_messages_are_split_at_line_ends_with_code_blocks_kept_whole():
    table = "\n".join(f"gate_{i:03d}  {i * 0.5:>8}  >= 3  FAIL  " + "x" * 40 for i in range(120))
    text = f"■ run 7 completed\n{FENCE}\n{table}\n{FENCE}"
    parts = split_message(text)
    assert len(parts) >= 4 and all(len(p) <= DISCORD_LIMIT for p in parts)
    assert all(p.count(FENCE) % 2 == 0 for p in parts)  # each part renders its block on its own
    rejoined = "\n".join(parts).replace(f"\n{FENCE}\n{FENCE}\n", "\n")
    assert rejoined == text
    assert split_message("x" * 4500) == ["x" * (DISCORD_LIMIT - 8), "x" * (DISCORD_LIMIT - 8), "x" * 516]


# the "done when": a full headless run


def test_headless_train_delivers_start_status_edits_heartbeat_and_verdict(server, tmp_path, monkeypatch, capsys,
                                                                          caplog, small_corpus_dir):
    import threading

    import navi_tui.training_run as training_run
    from navi_model.control import TrainingControl

    caplog.set_level(logging.DEBUG)
    # the run pauses itself after the policy's step 2 (NAVI_PAUSE_AT) and goes on once Discord has had a
    # heartbeat naming it and a status edit: a 2-step run may end within a second on a fast machine
    env = {**server.webhook_env(), "NAVI_DISCORD_HEARTBEAT": "1", "NAVI_DISCORD_EDIT_INTERVAL": "1",
           "NAVI_PAUSE_AT": "policy:2"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    controls: list[TrainingControl] = []

    class HeldControl(TrainingControl):
        def __init__(self):
            super().__init__()
            controls.append(self)

    import navi_model.control

    monkeypatch.setattr(navi_model.control, "TrainingControl", HeldControl)  # the one the cli makes
    monkeypatch.setattr(training_run, "TrainingControl", HeldControl)
    held: list[str] = []

    def release_once_discord_heard_the_live_run():
        try:
            wait_until(lambda: controls and controls[0].parked, timeout=300, what="the run to park")
            wait_until(lambda: any(c.startswith("💓 navi alive") and "run 1" in c for c in server.contents()),
                       timeout=60, what="a heartbeat naming run 1")
            wait_until(lambda: any(m.content.startswith("📊") and len(m.versions) >= 2 for m in server.posted()),
                       timeout=60, what="an edit of the status message")
        except AssertionError as e:
            held.append(str(e))
        finally:
            if controls:
                controls[0].resume()

    releaser = threading.Thread(target=release_once_discord_heard_the_live_run, daemon=True)
    releaser.start()
    home = tmp_path / "home"
    code = main(["--home", str(home), "--no-ui", "--profile", "tiny", "train", "--steps", "2",
                 "--data", str(small_corpus_dir)])
    releaser.join(10)
    assert held == []
    assert code == 1  # 2 steps cannot pass the coverage gates; the verdict is what matters here
    out = capsys.readouterr()
    contents = server.contents()
    assert contents[0].startswith("▶ **run 1 started**: profile tiny on cpu")
    statuses = [m for m in server.posted() if m.content.startswith("📊")]
    (status,) = statuses  # one message, edited in place as the run moved
    phases = {line.split(" · ")[0] for v in status.versions for line in v.splitlines() if line.startswith("phase ")}
    assert len(status.versions) >= 2 and status.versions[0] != status.content
    assert "phase da" in phases and "verdict **FAIL**" in status.content
    assert any(c.startswith("💓 navi alive") and "run 1" in c for c in contents)
    end = [c for c in contents if c.startswith("■ **run 1 completed**")]
    assert end and "verdict **FAIL**" in end[0] and "coverage_policy" in end[0] and "gpu_util" in "".join(contents)
    failures = [i for i, c in enumerate(contents) if c.startswith("✗")]
    assert failures and max(failures) < contents.index(end[0])  # in the order they happened
    assert any("gate coverage_policy failed" in contents[i] for i in failures)
    with Store(home) as store:
        assert store.unsent_count() == 0
    assert "discord: mirroring" in out.out and "message(s) delivered" in out.out
    assert_secret_nowhere(WEBHOOK_TOKEN, home, out, caplog.text)
