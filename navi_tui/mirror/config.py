"""The Discord mirror's configuration, read from the environment and checked before anything runs.

A bad variable is bad input (exit 2) with a message naming the variable and what is wrong
with it. Secrets (the bot token, the webhook URL and its token) are never echoed: not in an
error, not in a repr.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

WEBHOOK = "NAVI_DISCORD_WEBHOOK"
TOKEN = "NAVI_DISCORD_TOKEN"
CHANNEL = "NAVI_DISCORD_CHANNEL"
ALLOW = "NAVI_DISCORD_ALLOW"
API_BASE = "NAVI_DISCORD_API_BASE"
HEARTBEAT = "NAVI_DISCORD_HEARTBEAT"
EDIT_INTERVAL = "NAVI_DISCORD_EDIT_INTERVAL"

DEFAULT_HEARTBEAT_S = 300.0
# discord allows a webhook about 5 requests per 2 s; one status edit every few seconds stays calm
DEFAULT_EDIT_INTERVAL_S = 5.0

OFF_HINT = f"set {WEBHOOK}, or {TOKEN} and {CHANNEL} for bot mode"

# https://discord.com/api/webhooks/<id>/<token>, also with /api/v10 and on a self-hosted host
_WEBHOOK_URL = re.compile(
    r"^https?://(?P<host>[^/?#\s]+)(?:/api(?:/v\d+)?)?/webhooks/(?P<id>\d{1,20})/(?P<token>[A-Za-z0-9._-]{20,})/?$"
)
_DISCORD_HOSTS = re.compile(r"^(?:(?:ptb|canary)\.)?discord(?:app)?\.com(?::443)?$")
_API_BASE = re.compile(r"^https?://[^/?#\s]+(?:/[^?#\s]*)?$")
_BOT_TOKEN = re.compile(r"^[A-Za-z0-9._-]{20,}$")
_SNOWFLAKE = re.compile(r"^\d{1,20}$")


class MirrorConfigError(Exception):
    """A NAVI_DISCORD_* variable is unusable: exit 2, and the message never holds a secret."""


@dataclass(frozen=True)
class MirrorConfig:
    mode: str  # "webhook" or "bot"
    webhook_id: int | None = None
    webhook_token: str | None = field(default=None, repr=False)
    webhook_url: str | None = field(default=None, repr=False)
    bot_token: str | None = field(default=None, repr=False)
    channel_id: int | None = None
    allowed_users: frozenset[int] = frozenset()
    api_base: str | None = None  # None: discord.py's own (https://discord.com/api/v10)
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    edit_interval_s: float = DEFAULT_EDIT_INTERVAL_S

    @property
    def secrets(self) -> list[str]:
        """Every string that must never reach the store, a log, the screen or an error."""
        return [s for s in (self.webhook_url, self.webhook_token, self.bot_token) if s]

    def describe(self) -> str:
        """What the mirror talks to, for the screen: never the URL or a token."""
        where = f" via {self.api_base}" if self.api_base else ""
        if self.mode == "webhook":
            return f"webhook{where}"
        return f"bot in channel {self.channel_id}{where}, commands from {len(self.allowed_users)} allowed user(s)"


def load_config(environ: Mapping[str, str]) -> MirrorConfig | None:
    """The mirror's configuration, or None when nothing is configured (the mirror is off)."""
    webhook = environ.get(WEBHOOK, "").strip()
    token = environ.get(TOKEN, "").strip()
    channel = environ.get(CHANNEL, "").strip()
    allow = environ.get(ALLOW, "").strip()
    if not (webhook or token or channel):
        if allow:
            raise MirrorConfigError(f"{ALLOW} is set but the mirror is off: {ALLOW} needs bot mode ({TOKEN} and "
                                    f"{CHANNEL})")
        return None
    api_base = _api_base(environ.get(API_BASE, "").strip())
    timing = {"heartbeat_s": _seconds(environ, HEARTBEAT, DEFAULT_HEARTBEAT_S),
              "edit_interval_s": _seconds(environ, EDIT_INTERVAL, DEFAULT_EDIT_INTERVAL_S)}
    if webhook and (token or channel):
        raise MirrorConfigError(f"set either {WEBHOOK} (webhook mode) or {TOKEN} and {CHANNEL} (bot mode), not both")
    if webhook:
        if allow:
            raise MirrorConfigError(f"{ALLOW} only applies to bot mode ({TOKEN} and {CHANNEL}); a webhook cannot "
                                    f"read commands: unset {ALLOW} or switch to bot mode")
        m = _WEBHOOK_URL.match(webhook)
        if m is None:
            raise MirrorConfigError(f"{WEBHOOK} is not a Discord webhook URL: expected "
                                    f"https://discord.com/api/webhooks/<id>/<token> (the value is not shown, it holds "
                                    f"a secret)")
        if api_base is None and not _DISCORD_HOSTS.match(m["host"]):
            # the host is not the secret part; requests go to discord.com unless told otherwise
            raise MirrorConfigError(f"{WEBHOOK} points at {m['host']}, not discord.com: set {API_BASE} to that "
                                    f"host's API base (e.g. http://{m['host']}/api/v10)")
        return MirrorConfig("webhook", webhook_id=int(m["id"]), webhook_token=m["token"], webhook_url=webhook,
                            api_base=api_base, **timing)
    if not token:
        raise MirrorConfigError(f"{CHANNEL} is set but {TOKEN} is not: bot mode needs both")
    if not channel:
        raise MirrorConfigError(f"{TOKEN} is set but {CHANNEL} is not: bot mode needs the channel id to post in")
    if not _BOT_TOKEN.match(token):
        raise MirrorConfigError(f"{TOKEN} does not look like a bot token: expected 20 or more letters, digits, "
                                f"'.', '_' or '-' (the value is not shown, it is a secret)")
    if not _SNOWFLAKE.match(channel) or int(channel) == 0:
        raise MirrorConfigError(f"{CHANNEL} must be a numeric channel id (Discord: right-click the channel, "
                                f"Copy Channel ID), got {_shown(channel)}")
    users = set()
    for item in filter(None, re.split(r"[,\s]+", allow)):
        if not _SNOWFLAKE.match(item):
            raise MirrorConfigError(f"{ALLOW} must list numeric user ids separated by commas, got {_shown(item)}")
        users.add(int(item))
    return MirrorConfig("bot", bot_token=token, channel_id=int(channel), allowed_users=frozenset(users),
                        api_base=api_base, **timing)


def _api_base(value: str) -> str | None:
    if not value:
        return None
    if not _API_BASE.match(value):
        raise MirrorConfigError(f"{API_BASE} must be an http(s) URL such as https://discord.com/api/v10, "
                                f"got {_shown(value)}")
    return value.rstrip("/")


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise MirrorConfigError(f"{name} must be a number of seconds above 0, got {_shown(raw)}")
    return value


def _shown(value: str) -> str:
    # only values that are not secrets reach here; still, never print a screenful
    return repr(value if len(value) <= 40 else value[:40] + "...")
