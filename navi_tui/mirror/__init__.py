"""The Discord mirror: what the console sees, sent to a Discord channel through the store's outbox.

config.py reads NAVI_DISCORD_*; follower.py turns store rows into messages (compose.py holds
their text); relay.py delivers them from its own thread and event loop (targets.py speaks
discord.py); relay_lock.py keeps one relay per home; redact.py keeps secrets out of every text.
"""

from .config import MirrorConfig, MirrorConfigError, load_config

__all__ = ["Mirror", "MirrorConfig", "MirrorConfigError", "RelayState", "Tuning", "load_config"]


def __getattr__(name: str):
    # discord.py and aiohttp take a third of a second to import: only commands that mirror pay it
    if name == "Mirror":
        from .mirror import Mirror

        return Mirror
    if name in ("RelayState", "Tuning"):
        from . import relay

        return getattr(relay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
