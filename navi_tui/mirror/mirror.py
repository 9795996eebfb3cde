"""Mirror: the one object a console or a headless run holds to mirror its home to Discord.

    mirror = Mirror.from_env(home)   # MirrorConfigError on a bad NAVI_DISCORD_* variable (exit 2)
    mirror.start()                   # returns at once; the relay works in its own thread
    mirror.notice()                  # one line to show once: off, on, or who holds the relay
    mirror.state()                   # "off", "delivering", "retrying (3 queued)", "no relay: ..."
    mirror.close()                   # at exit: a short, bounded last delivery

Nothing has to be fed to it: the relay follows the store, which the trainer writes anyway.
Every method is safe to call from any thread.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .config import OFF_HINT, MirrorConfig, load_config
from .redact import register_secrets
from .relay import Relay, RelayState, Tuning


class Mirror:
    def __init__(self, home: Path, config: MirrorConfig | None, tuning: Tuning | None = None, *,
                 follow: bool = True):
        """Runs created from now on are announced when they start; see Relay for follow."""
        self.home, self.config = Path(home), config
        self._relay = Relay(self.home, config, tuning, follow=follow) if config is not None else None
        if config is not None:
            register_secrets(config.secrets)

    @classmethod
    def from_env(cls, home: Path, environ: Mapping[str, str] | None = None, tuning: Tuning | None = None, *,
                 follow: bool = True) -> "Mirror":
        """Read NAVI_DISCORD_*; raises MirrorConfigError before anything is started or written."""
        return cls(home, load_config(os.environ if environ is None else environ), tuning, follow=follow)

    @property
    def enabled(self) -> bool:
        return self._relay is not None

    @property
    def started(self) -> bool:
        return self._relay is not None and self._relay.started

    def start(self) -> "Mirror":
        if self._relay is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            self._relay.start()
        return self

    def relay_state(self) -> RelayState:
        return self._relay.state if self._relay is not None else RelayState("off")

    def state(self) -> str:
        s = self.relay_state()
        if s.mode == "no relay":
            return f"no relay: another console ({s.detail}) holds the lock"
        if s.mode == "retrying":
            return f"retrying ({s.queued} queued)"
        if s.mode in ("delivering", "stopped") and s.queued:
            return f"{s.mode} ({s.queued} queued)"
        return s.mode

    def last_error(self) -> str:
        """Why the last delivery failed (never holding a secret), or ""."""
        s = self.relay_state()
        return s.detail if s.mode == "retrying" else ""

    def notice(self) -> str:
        """What to tell the operator once, when the console or the run starts."""
        if self.config is None:
            return f"discord: off ({OFF_HINT})"
        if self.relay_state().mode == "no relay":
            return (f"discord: no relay here: another console ({self.relay_state().detail}) holds "
                    f"{self.home / 'discord-relay.lock'} and mirrors this home")
        return f"discord: mirroring {self.home} to a {self.config.describe()}"

    def summary(self) -> str:
        """After close(): what was delivered and what waits for the next relay."""
        if self._relay is None:
            return "discord: off"
        s = self._relay.state
        if s.mode == "no relay":
            return self.notice()
        waiting = (f"; {s.queued} message(s) wait in the outbox for the next relay"
                   + (f" ({s.detail})" if s.detail else "")) if s.queued else ""
        return f"discord: {self._relay.delivered} message(s) delivered{waiting}"

    def close(self, flush_timeout: float = 5.0, *, until_empty: bool = False) -> None:
        """Stop the relay after at most flush_timeout of delivery (see Relay.close)."""
        if self._relay is not None:
            self._relay.close(flush_timeout, until_empty=until_empty)

    def __enter__(self) -> "Mirror":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()
