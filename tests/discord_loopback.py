"""A loopback HTTP server that speaks the few Discord API routes the mirror uses.

    server = LoopbackDiscord().start()          # its own thread and event loop, on 127.0.0.1
    env = server.webhook_env()                  # NAVI_DISCORD_WEBHOOK and NAVI_DISCORD_API_BASE

Webhook API: execute (POST /webhooks/{id}/{token}, with ?wait=1 it answers the message) and
edit (PATCH /webhooks/{id}/{token}/messages/{message_id}). Bot API: GET /users/@me, and
GET, POST, PATCH of /channels/{id}/messages. Faults on demand: fail_next(n, status),
rate_limit_next(retry_after, via=..., global_=...), down() and up() (the port stops
listening, then listens again). Used by tests/test_discord_mirror.py and
benchmarks/discord_down.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from aiohttp import web
from discord.utils import time_snowflake

WEBHOOK_ID = 1234567890123456789
WEBHOOK_TOKEN = "wh-SECRET-" + "k" * 58  # 68 characters, like a real webhook token
BOT_TOKEN = "MTE0.bot-SECRET." + "t" * 40
BOT_ID = 1100000000000000001
CHANNEL_ID = 1200000000000000002


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Posted:
    """One message as the server holds it: every version it had, oldest first."""
    id: int
    channel_id: int
    author_id: int
    versions: list[str] = field(default_factory=list)
    route: str = "webhook"  # webhook, bot (our bot's own posts) or user (what test users say)
    bot: bool = False

    @property
    def content(self) -> str:
        return self.versions[-1]


class LoopbackDiscord:
    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.lock = threading.Lock()
        self._id_lock = threading.Lock()
        self.messages: dict[int, Posted] = {}  # by id, in the order posted
        self.requests: list[tuple[float, str, str]] = []  # (time, method, path) of every request
        self._last_id = 0
        self._faults: list[tuple] = []  # queued answers for the next write requests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def _next_id(self) -> int:
        # snowflakes as discord makes them: milliseconds since 2015 in the high bits
        with self._id_lock:
            self._last_id = max(self._last_id + 1, time_snowflake(datetime.now(timezone.utc)))
            return self._last_id

    # control, from the test's thread

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    def webhook_env(self) -> dict[str, str]:
        return {"NAVI_DISCORD_WEBHOOK": f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}",
                "NAVI_DISCORD_API_BASE": self.api_base}

    def bot_env(self, allow: str = "") -> dict[str, str]:
        return {"NAVI_DISCORD_TOKEN": BOT_TOKEN, "NAVI_DISCORD_CHANNEL": str(CHANNEL_ID),
                "NAVI_DISCORD_ALLOW": allow, "NAVI_DISCORD_API_BASE": self.api_base}

    def start(self) -> "LoopbackDiscord":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="loopback-discord", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def down(self) -> None:
        """Stop listening and drop every open connection: requests fail to connect."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)

    def up(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self._faults += [("status", status)] * n

    def rate_limit_next(self, retry_after: float, *, via: bool = True, global_: bool = False) -> None:
        """A 429 as Discord sends it: behind its proxy (a Via header), discord.py waits it out itself."""
        with self.lock:
            self._faults.append(("429", retry_after, via, global_))

    def user_says(self, user_id: int, content: str, *, bot: bool = False) -> int:
        with self.lock:
            m = Posted(self._next_id(), CHANNEL_ID, user_id, [content], route="user", bot=bot)
            self.messages[m.id] = m
            return m.id

    def posted(self, route: str | None = None) -> list[Posted]:
        with self.lock:
            return [m for m in self.messages.values() if route is None or m.route == route]

    def contents(self, route: str | None = None) -> list[str]:
        return [m.content for m in self.posted(route)]

    def writes(self) -> list[tuple[float, str, str]]:
        with self.lock:
            return [r for r in self.requests if r[1] in ("POST", "PATCH")]

    def request_count(self, method: str, path_end: str) -> int:
        """How many method requests to a path ending in path_end have arrived: a test waits on it
        to know a client has read again, instead of sleeping."""
        with self.lock:
            return sum(1 for _, m, path in self.requests if m == method and path.endswith(path_end))

    # the server

    async def _listen(self) -> None:
        app = web.Application()
        base = "/api/v10"
        app.router.add_post(base + "/webhooks/{wid}/{token}", self._execute)
        app.router.add_patch(base + "/webhooks/{wid}/{token}/messages/{mid}", self._edit_webhook_message)
        app.router.add_get(base + "/users/@me", self._me)
        app.router.add_get(base + "/channels/{cid}/messages", self._list)
        app.router.add_post(base + "/channels/{cid}/messages", self._create)
        app.router.add_patch(base + "/channels/{cid}/messages/{mid}", self._edit_channel_message)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _json(payload, status: int = 200, headers: dict | None = None) -> web.Response:
        # exactly application/json: discord.py reads any other content type as text
        return web.Response(status=status, body=json.dumps(payload).encode(),
                            headers={"Content-Type": "application/json", **(headers or {})})

    def _fault(self, request: web.Request) -> web.Response | None:
        with self.lock:
            self.requests.append((time.monotonic(), request.method, request.path))
            if request.method not in ("POST", "PATCH") or not self._faults:
                return None
            fault = self._faults.pop(0)
        if fault[0] == "status":
            return self._json({"message": "Internal Server Error", "code": 0}, status=fault[1])
        _, retry_after, via, global_ = fault
        headers = {"Retry-After": str(retry_after), "X-RateLimit-Reset-After": str(retry_after),
                   "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0"}
        if global_:
            headers["X-RateLimit-Global"] = "true"
        if via:
            headers["Via"] = "1.1 google"
        return self._json({"message": "You are being rate limited.", "retry_after": retry_after, "global": global_},
                          status=429, headers=headers)

    def _message_payload(self, m: Posted, webhook: bool) -> dict:
        author = {"id": str(m.author_id), "username": "navi", "discriminator": "0000", "avatar": None,
                  "bot": True}
        payload = {"id": str(m.id), "channel_id": str(m.channel_id), "type": 0, "content": m.content,
                   "author": author, "attachments": [], "embeds": [], "mentions": [], "mention_roles": [],
                   "pinned": False, "mention_everyone": False, "tts": False,
                   "timestamp": "2026-11-25T12:00:00.000000+00:00", "edited_timestamp": None, "flags": 0,
                   "components": []}
        if webhook:
            payload["webhook_id"] = str(WEBHOOK_ID)
        return payload

    def _check_webhook(self, request: web.Request) -> web.Response | None:
        if int(request.match_info["wid"]) != WEBHOOK_ID or request.match_info["token"] != WEBHOOK_TOKEN:
            return self._json({"message": "Unknown Webhook", "code": 10015}, status=404)
        return None

    def _check_bot(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bot {BOT_TOKEN}":
            return self._json({"message": "401: Unauthorized", "code": 0}, status=401)
        if "cid" in request.match_info and int(request.match_info["cid"]) != CHANNEL_ID:
            return self._json({"message": "Unknown Channel", "code": 10003}, status=404)
        return None

    async def _execute(self, request: web.Request) -> web.Response:
        refusal = self._fault(request) or self._check_webhook(request)
        if refusal:
            return refusal
        body = await request.json()
        with self.lock:
            m = Posted(self._next_id(), CHANNEL_ID, WEBHOOK_ID, [body["content"]])
            self.messages[m.id] = m
        if request.query.get("wait") in ("1", "true", "True"):
            return self._json(self._message_payload(m, webhook=True))
        return web.Response(status=204)

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        refusal = self._fault(request) or self._check_webhook(request)
        if refusal:
            return refusal
        return await self._edit(request, webhook=True)

    async def _edit(self, request: web.Request, webhook: bool) -> web.Response:
        body = await request.json()
        with self.lock:
            m = self.messages.get(int(request.match_info["mid"]))
            if m is None:
                return self._json({"message": "Unknown Message", "code": 10008}, status=404)
            m.versions.append(body["content"])
        return self._json(self._message_payload(m, webhook))

    async def _me(self, request: web.Request) -> web.Response:
        refusal = self._fault(request) or self._check_bot(request)
        if refusal:
            return refusal
        return self._json({"id": str(BOT_ID), "username": "navi", "discriminator": "0000", "avatar": None,
                           "bot": True})

    async def _list(self, request: web.Request) -> web.Response:
        refusal = self._fault(request) or self._check_bot(request)
        if refusal:
            return refusal
        after = int(request.query.get("after", 0))
        limit = int(request.query.get("limit", 50))
        with self.lock:
            rows = [m for m in self.messages.values() if m.channel_id == CHANNEL_ID and m.id > after]
            rows = sorted(rows, key=lambda m: m.id)[:limit] if after else sorted(rows, key=lambda m: m.id)[-limit:]
            payload = []
            for m in reversed(rows):  # discord lists newest first
                p = self._message_payload(m, webhook=False)
                p["author"]["bot"] = m.route != "user" or m.bot
                payload.append(p)
        return self._json(payload)

    async def _create(self, request: web.Request) -> web.Response:
        refusal = self._fault(request) or self._check_bot(request)
        if refusal:
            return refusal
        body = await request.json()
        with self.lock:
            m = Posted(self._next_id(), CHANNEL_ID, BOT_ID, [body["content"]], route="bot")
            self.messages[m.id] = m
        return self._json(self._message_payload(m, webhook=False))

    async def _edit_channel_message(self, request: web.Request) -> web.Response:
        refusal = self._fault(request) or self._check_bot(request)
        if refusal:
            return refusal
        return await self._edit(request, webhook=False)
