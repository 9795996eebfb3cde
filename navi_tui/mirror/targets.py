"""Where messages go: a webhook, or a channel through a bot's REST API, both via discord.py.

Each target posts a message and returns its id, edits a message by id, and (the bot only)
reads new messages of its channel for commands. Bot commands are read by polling
GET /channels/{id}/messages?after=..., not through the gateway: a websocket session is more
than a read-only helper needs, and the REST route is what a loopback server can stand in for.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import discord
from discord.http import HTTPClient, Route, handle_message_parameters

from .config import MirrorConfig

_DEFAULT_BASE = Route.BASE


def use_api_base(base: str | None) -> None:
    """Point discord.py at base (a self-hosted gateway, a test's loopback server) or back at Discord.

    Route.BASE is internal to discord.py and process-wide: this is the one place navi sets it,
    and pyproject pins discord.py's major version for it.
    """
    Route.BASE = base or _DEFAULT_BASE


# a message may never ping anyone: a gallery answer could hold "@everyone"
_NO_PINGS = discord.AllowedMentions.none()


@dataclass(frozen=True)
class ChannelMessage:
    id: int
    author_id: int
    author_is_bot: bool
    content: str


class WebhookTarget:
    def __init__(self, config: MirrorConfig, request_timeout: float):
        self._config, self._timeout = config, request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._webhook: discord.Webhook | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        # partial, not from_url: from_url only accepts discord.com URLs; requests go to Route.BASE
        self._webhook = discord.Webhook.partial(self._config.webhook_id, self._config.webhook_token,
                                                session=self._session)

    async def post(self, content: str) -> str:
        message = await self._webhook.send(content, wait=True, allowed_mentions=_NO_PINGS)
        return str(message.id)

    async def edit(self, message_id: str, content: str) -> str:
        await self._webhook.edit_message(int(message_id), content=content, allowed_mentions=_NO_PINGS)
        return message_id

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class BotTarget:
    def __init__(self, config: MirrorConfig, request_timeout: float):
        # discord.py's HTTPClient makes its session without a timeout: the relay bounds each call
        self._config = config
        self._http: HTTPClient | None = None
        self.user_id: int | None = None

    async def open(self) -> None:
        # GET /users/@me: checks the token and tells us our own id, so we never answer ourselves.
        # a fresh client per try: a failed login leaves its session (and connector) closed
        http = HTTPClient(asyncio.get_running_loop())
        try:
            me = await http.static_login(self._config.bot_token)
        except BaseException:
            await http.close()
            raise
        self._http, self.user_id = http, int(me["id"])

    async def post(self, content: str) -> str:
        params = handle_message_parameters(content=content, allowed_mentions=_NO_PINGS)
        data = await self._http.send_message(self._config.channel_id, params=params)
        return str(data["id"])

    async def edit(self, message_id: str, content: str) -> str:
        params = handle_message_parameters(content=content, allowed_mentions=_NO_PINGS)
        await self._http.edit_message(self._config.channel_id, int(message_id), params=params)
        return message_id

    async def messages_after(self, after: int, limit: int = 50) -> list[ChannelMessage]:
        rows = await self._http.logs_from(self._config.channel_id, limit, after=after)
        out = [ChannelMessage(int(r["id"]), int(r["author"]["id"]), bool(r["author"].get("bot")), r.get("content", ""))
               for r in rows]
        return sorted(out, key=lambda m: m.id)  # discord lists newest first

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def make_target(config: MirrorConfig, request_timeout: float) -> WebhookTarget | BotTarget:
    return WebhookTarget(config, request_timeout) if config.mode == "webhook" else BotTarget(config, request_timeout)
