"""Keep the mirror's secrets out of logs and error texts.

discord.py logs request URLs at debug level, and a webhook's URL holds its token; an aiohttp
error can carry a URL too. Every text the mirror stores or shows goes through redact(), and a
logging filter rewrites the records of discord.py's and aiohttp's loggers before any handler
sees them.
"""

from __future__ import annotations

import logging
import threading

REDACTED = "[redacted]"

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secrets(secrets: list[str]) -> None:
    """Remember secrets for redact() and start filtering the loggers that could print them."""
    with _lock:
        _secrets.update(s for s in secrets if s)
    _install_log_filter()


def redact(text: str) -> str:
    with _lock:
        # longest first: the webhook URL contains its token
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def describe_error(exc: BaseException) -> str:
    """One line about a failed delivery, safe to store and show."""
    import discord

    if isinstance(exc, discord.HTTPException):
        # status and discord's own message; the request URL is never part of it
        return redact(f"Discord answered {exc.status} {exc.response.reason}: {exc.text}".strip(": "))
    if isinstance(exc, TimeoutError):
        return "no answer from Discord in time"
    return redact(f"{type(exc).__name__}: {exc}")


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            # the formatter uses exc_text when it is set, so the traceback is rendered redacted
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = RedactSecrets()
# loggers whose records can hold a request URL; a logger's filter only sees records logged to
# that very logger, not its children's, so each one is named
_LOGGERS = ("discord", "discord.http", "discord.client", "discord.gateway", "discord.state",
            "discord.webhook", "discord.webhook.async_", "discord.webhook.sync", "aiohttp", "aiohttp.client",
            "aiohttp.internal", "aiohttp.access", "aiohttp.server", "aiohttp.web", "asyncio", "navi_tui.mirror")


def _install_log_filter() -> None:
    names = set(_LOGGERS)
    names.update(name for name in list(logging.root.manager.loggerDict)
                 if name.startswith(("discord", "aiohttp", "navi_tui.mirror")))
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
