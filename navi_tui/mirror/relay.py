"""The relay: one thread with its own asyncio loop that turns the store into Discord messages.

Four tasks share the loop and one SQLite connection (opened in the thread):
- follow: every poll interval, the RunFollower reads the store and queues messages;
- deliver: sends the outbox in order, one row at a time, and marks each row sent once;
- heartbeat: queues a heartbeat every heartbeat interval, whatever the trainer does;
- commands (bot mode): reads the channel for !status, !gates, !runs.
Training never waits on any of it: the trainer writes the store as it always does, and a
Discord that is down only makes the outbox longer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import discord

from store import Store
from store.db import process_alive

from . import compose
from .config import ALLOW, MirrorConfig
from .follower import RunFollower
from .redact import describe_error
from .relay_lock import RelayLock
from .targets import BotTarget, make_target, use_api_base

log = logging.getLogger("navi_tui.mirror")

# kinds where only the newest queued row matters: an older status or heartbeat is stale news
COALESCED = ("status", "heartbeat")
COMMANDS = ("!status", "!gates", "!runs")


@dataclass(frozen=True)
class RelayState:
    mode: str  # starting, delivering, retrying, no relay, stopped
    queued: int = 0
    detail: str = ""  # the last delivery error (redacted), or who holds the lock


@dataclass(frozen=True)
class Tuning:
    """Timings; the defaults suit Discord, tests shorten them."""
    poll_interval: float = 0.5  # how often the store is read for news
    backoff_base: float = 0.5  # the first retry's wait after an error; doubles per failure
    backoff_cap: float = 30.0  # never wait longer than this between tries
    request_timeout: float = 30.0  # one request, discord.py's own 5xx retries included
    lock_retry: float = 5.0  # how often a console without the relay checks whether the lock came free
    command_poll: float = 2.0  # bot mode: how often the channel is read for commands


class _Retry(Exception):
    def __init__(self, delay: float | None):
        self.delay = delay


class Relay:
    def __init__(self, home: Path, config: MirrorConfig, tuning: Tuning | None = None, *, follow: bool = True,
                 since: float | None = None):
        """follow=False only delivers what the outbox holds (navi-tui --no-ui mirror): no run is
        followed and no heartbeat sent. since: runs created or ended from then on are announced."""
        self.home, self.config, self.tuning, self.follow = Path(home), config, tuning or Tuning(), follow
        self.since = time.time() if since is None else since
        self.lock = RelayLock(self.home)
        self.state = RelayState("starting")
        self.delivered = 0  # rows delivered by this relay: the headless summary reads it
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._flush = (5.0, False)  # (seconds, until_empty) for the last delivery pass
        self._ready = threading.Event()  # the loop and its events exist: close() can reach them
        self._started = False
        self._gpu_stats = None

    # called from the owning thread

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> "Relay":
        if self._thread is not None:
            return self
        self._started = True
        if not self.lock.acquire():
            self.state = RelayState("no relay", detail=f"pid {self.lock.holder}")
        self._thread = threading.Thread(target=self._run, name=f"navi-discord-relay({self.home})", daemon=True)
        self._thread.start()
        return self

    def close(self, flush_timeout: float = 5.0, *, until_empty: bool = False) -> None:
        """Stop the relay after one last read of the store and a delivery pass of at most flush_timeout.

        Without until_empty, the pass ends at the first failed delivery: a Discord that is down
        must not hold up an exit. What is left stays in the outbox for the next relay.
        """
        if self._thread is None:
            return
        self._flush = (flush_timeout, until_empty)
        self._ready.wait(5.0)
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._request_stop)
            except RuntimeError:  # the loop already ended
                pass
        self._thread.join(flush_timeout + 5.0)
        self._thread = None

    # the relay thread

    def _request_stop(self) -> None:
        self._stop.set()
        self._wake.set()  # a napping delivery loop looks up at once

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # the relay must never take the process down
            self.state = RelayState("stopped", detail=describe_error(e))
            log.error("discord relay stopped: %s", describe_error(e))
        finally:
            self._ready.set()
            self.lock.release()

    async def _main(self) -> None:
        self._loop, self._stop, self._wake = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
        self._ready.set()
        while not self.lock.held:
            # another console relays for this home; take over when it goes
            if await self._stopped_within(self.tuning.lock_retry):
                self.state = RelayState("stopped", detail=self.state.detail)
                return
            if self.lock.acquire():
                log.info("discord relay lock taken over")
        use_api_base(self.config.api_base)
        store = Store(self.home)
        target = make_target(self.config, self.tuning.request_timeout)
        self.state = RelayState("delivering", store.unsent_count())
        follower = RunFollower(store, since=self.since, edit_interval=self.config.edit_interval_s,
                               gpu_reading=self._gpu_reading)
        opened = {"ready": False}
        tasks = [asyncio.create_task(self._deliver_loop(store, target, opened))]
        if self.follow:
            tasks.append(asyncio.create_task(self._follow_loop(follower)))
            tasks.append(asyncio.create_task(self._heartbeat_loop(store, follower)))
        if isinstance(target, BotTarget):
            tasks.append(asyncio.create_task(self._command_loop(store, target, opened)))
        try:
            await self._stop.wait()
            # the delivery loop is never cancelled mid-request: a message discord got but whose
            # answer we dropped would stay unsent and go out twice. it ends after its current row
            deadline = self._loop.time() + self._flush[0]  # the whole goodbye, this wait included
            await asyncio.wait({tasks[0]}, timeout=self._flush[0])
            for task in tasks:
                task.cancel()  # the others only sleep or read between their awaits
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.follow:
                try:
                    follower.tick(final=True)  # the run that just ended: its end message goes out now
                except Exception as e:
                    log.warning("discord mirror could not read the store: %s", describe_error(e))
            await self._last_pass(store, target, opened, deadline)
        finally:
            try:
                async with asyncio.timeout(2.0):
                    await target.close()
            except Exception:
                pass
            self.state = RelayState("stopped", store.unsent_count(), self.state.detail)
            store.close()

    async def _stopped_within(self, seconds: float) -> bool:
        await _wait_for_event(self._stop, seconds)
        return self._stop.is_set()

    async def _nap(self, seconds: float) -> None:
        """Sleep until seconds pass or something is queued."""
        await _wait_for_event(self._wake, seconds)
        self._wake.clear()

    # follow, heartbeat

    async def _follow_loop(self, follower: RunFollower) -> None:
        while True:
            try:
                if follower.tick():
                    self._wake.set()
            except Exception as e:  # a busy or broken store: try again next tick
                log.warning("discord mirror could not read the store: %s", describe_error(e))
            await asyncio.sleep(self.tuning.poll_interval)

    async def _heartbeat_loop(self, store: Store, follower: RunFollower) -> None:
        host = socket.gethostname()
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            running = [(run, progress) for run, progress in follower.running()
                       if run["host"] != host or process_alive(run["pid"])]
            try:
                store.queue_message("heartbeat", compose.heartbeat(host, os.getpid(), running, store.unsent_count()))
            except Exception as e:
                log.warning("discord mirror could not queue its heartbeat: %s", describe_error(e))
            self._wake.set()

    # delivery

    async def _deliver_loop(self, store: Store, target, opened: dict) -> None:
        while not self._stop.is_set():
            try:
                progressed = await self._deliver_some(store, target, opened, stoppable=True)
            except _Retry as r:
                await self._stopped_within(r.delay)
                continue
            except Exception as e:  # the store itself failed (busy past its timeout, disk full)
                log.warning("discord relay could not use the outbox: %s", describe_error(e))
                await self._stopped_within(self.tuning.backoff_cap)
                continue
            if not progressed:
                await self._nap(self.tuning.poll_interval)

    async def _last_pass(self, store: Store, target, opened: dict, deadline: float) -> None:
        until_empty = self._flush[1]
        try:
            async with asyncio.timeout_at(deadline):
                while store.unsent_count():
                    try:
                        await self._deliver_some(store, target, opened)
                    except _Retry as r:
                        if not until_empty:
                            return  # discord is down: leave the rest to the next relay, now
                        await asyncio.sleep(r.delay)
        except TimeoutError:
            pass

    async def _deliver_some(self, store: Store, target, opened: dict, stoppable: bool = False) -> bool:
        """Send the oldest unsent rows in order; False when there was nothing to send.

        Raises _Retry with the wait before the next try when a delivery failed: the failed row
        stays first in line, so later rows never overtake it.
        """
        if not opened["ready"]:
            # opened before there is anything to send: a bot reads its commands from the start
            try:
                await self._attempt(store, None, target.open())
            except _Rejected as e:  # refused at login: an operator has to act, keep asking calmly
                self.state = RelayState("retrying", store.unsent_count(), e.reason)
                raise _Retry(self.tuning.backoff_cap) from None
            opened["ready"] = True
        rows = store.unsent_messages(20)
        if not rows:
            self._set_delivering(store)
            return False
        for row in rows:
            if stoppable and self._stop.is_set():
                return True  # the last pass takes over, after one more read of the store
            if row["kind"] in COALESCED and store.newer_unsent_version(row):
                store.mark_sent(row["id"], outcome="superseded")
                continue
            try:
                message_id = await self._attempt(store, row, self._send(store, target, row))
            except _Rejected as e:
                store.note_failed_attempt(row["id"], e.reason)
                store.mark_sent(row["id"], outcome="rejected")
                log.warning("discord rejected outbox row %d (%s): %s", row["id"], row["kind"], e.reason)
                continue
            if store.mark_sent(row["id"], outcome="delivered", discord_message_id=message_id):
                self.delivered += 1
            self._set_delivering(store)
        return True

    async def _attempt(self, store: Store, row: dict | None, request):
        """Await one request; on failure record it and raise _Retry (or _Rejected)."""
        try:
            async with asyncio.timeout(self.tuning.request_timeout):
                result = await request
        except asyncio.CancelledError:
            raise
        except Exception as e:
            reason = describe_error(e)
            delay = self._retry_delay(e)
            if delay is None:
                raise _Rejected(reason) from None
            if row is not None:
                store.note_failed_attempt(row["id"], reason)
            if self._failures == 1:
                log.warning("discord unreachable, messages wait in the outbox: %s", reason)
            self.state = RelayState("retrying", store.unsent_count(), reason)
            raise _Retry(delay) from None
        if self._failures:
            log.info("discord reachable again after %d failed tries", self._failures)
        self._failures = 0
        return result

    def _retry_delay(self, e: Exception) -> float | None:
        """Seconds to wait before trying again, or None when retrying cannot help."""
        self._failures += 1
        backoff = min(self.tuning.backoff_cap, self.tuning.backoff_base * 2 ** (self._failures - 1))
        if isinstance(e, discord.RateLimited):
            return e.retry_after
        if isinstance(e, discord.HTTPException):
            if e.status == 429:
                # discord.py waits out a 429 itself when it comes through discord's proxy (a Via
                # header); one without it is raised, and its wait is in the headers. A global
                # limit needs no more: this relay sends one request at a time anyway
                headers = e.response.headers
                for name in ("Retry-After", "X-RateLimit-Reset-After"):
                    try:
                        return max(float(headers[name]), 0.0)
                    except (KeyError, ValueError):
                        continue
                return backoff
            if 400 <= e.status < 500 and e.status not in (401, 403, 404, 408):
                # a malformed message stays malformed; holding it would block every later one
                self._failures -= 1
                return None
        # 5xx (after discord.py's own tries), a token or webhook that was revoked (401/403/404,
        # which an operator can fix), a network error, a timeout
        return backoff

    async def _send(self, store: Store, target, row: dict) -> str:
        content = json.loads(row["payload_json"])["content"]
        if row["edit_key"]:
            message_id = store.delivered_message_id(row["edit_key"])
            if message_id is not None:
                try:
                    return await target.edit(message_id, content)
                except discord.NotFound:
                    pass  # someone deleted the message on discord: post it again
        return await target.post(content)

    def _set_delivering(self, store: Store) -> None:
        self.state = RelayState("delivering", store.unsent_count())

    # bot commands

    async def _command_loop(self, store: Store, target: BotTarget, opened: dict) -> None:
        # discord ids count milliseconds: commands sent before this relay started are not answered
        after = discord.utils.time_snowflake(datetime.now(timezone.utc))
        while True:
            await asyncio.sleep(self.tuning.command_poll)
            if not opened["ready"]:
                continue
            try:
                async with asyncio.timeout(self.tuning.request_timeout):
                    messages = await target.messages_after(after)
            except (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError) as e:
                log.debug("reading commands failed: %s", describe_error(e))
                continue
            for m in messages:
                after = max(after, m.id)
                if m.author_id == target.user_id or m.author_is_bot:
                    continue
                self._answer(store, m)
            self._wake.set()

    def _answer(self, store: Store, m) -> None:
        words = m.content.strip().split()
        if not words or not words[0].startswith("!"):
            return
        command = words[0].lower()
        if m.author_id not in self.config.allowed_users:
            # logged, never answered: an unknown user learns nothing, not even that navi listens
            note = f"ignored {command[:20]} from user {m.author_id}: not in {ALLOW}"
            log.warning("discord: %s", note)
            store.insert_events([{"run_id": None, "level": "warn", "kind": "discord", "message": note}])
            return
        text = answer_command(store, command, self._gpu_reading)
        for i, part in enumerate(compose.split_message(text)):
            store.queue_message("reply", part, dedupe_key=f"reply:{m.id}:{i}")

    # what the status line says of the GPU

    def _gpu_reading(self, run: dict) -> str:
        try:
            device = json.loads(run.get("config_json") or "{}").get("device", "")
        except ValueError:
            device = ""
        if not device.startswith("cuda"):
            return f"n/a ({device or 'unknown device'})"
        if run.get("host") != socket.gethostname():
            return f"? (run on {run.get('host')})"
        try:
            if self._gpu_stats is None:
                from navi_tui.system_monitor import SystemStats

                index = int(device.split(":")[1]) if ":" in device else 0
                self._gpu_stats = SystemStats(index)
            gpu = self._gpu_stats.read().get("gpu")
        except Exception:
            gpu = None
        return f"{gpu['util']:.0f}%" if gpu else "unreadable"


async def _wait_for_event(event: asyncio.Event, seconds: float) -> None:
    # never asyncio.wait_for in this module: python 3.11's wait_for swallows a cancellation that
    # lands as the awaited thing completes, and the relay then never stopped (seen in the tests);
    # asyncio.timeout() and asyncio.wait() do not
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


class _Rejected(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def answer_command(store: Store, command: str, gpu_reading) -> str:
    """The answer to one allowed user's command, read from the store as it is now."""
    if command == "!runs":
        return compose.runs_table(store.list_runs()[:10])
    if command not in ("!status", "!gates"):
        return f"unknown command {command[:20]}: try {', '.join(COMMANDS)}"
    runs = [r for r in store.list_runs() if r["status"] == "running"] or store.list_runs()[:1]
    if not runs:
        return "no runs yet"
    out = []
    for run in runs:
        gates = compose.latest_gates(store.evals(run["id"]))
        if command == "!gates":
            out.append(compose.gate_report(run, gates))
            continue
        progress: dict = {}
        for name in ("loss", "tokens_per_s"):
            row = store.latest_metric(run["id"], name)
            if row is not None and row["phase"] != "eval":
                progress.update({"phase": row["phase"], "step": row["step"], name: row["value"]})
        out.append(compose.status(run, progress, gates, gpu_reading(run)))
    return "\n\n".join(out)


__all__ = ["Relay", "RelayState", "Tuning", "answer_command"]
