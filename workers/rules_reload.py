"""Rules reload without a restart: on SIGHUP, and when the rules file's content changes.

The file is looked at every ``RULES_RELOAD_SECONDS`` (0: SIGHUP only) and compared by content hash,
which also sees a Kubernetes ConfigMap update (a symlink swap that leaves mtimes unreliable). A file
that does not validate is refused with the reason (``rules reload refused``) and the rules in use
stay; the same bad content is reported once, not at every look. A job reads ``deps.rules`` once at
its start, so a running job finishes with the rules it began with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
from pathlib import Path
from typing import Protocol

import structlog

from config.errors import ConfigError
from config.rules import RuleSet, load_rules

__all__ = ["RulesHolder", "RulesReloader"]

_log = structlog.get_logger("magbridge.rules")
_UNREADABLE = "unreadable"


class RulesHolder(Protocol):
    """Where the rules in use live (the worker's ``WorkerDeps``)."""

    rules: RuleSet


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return _UNREADABLE


class RulesReloader:
    """Swaps ``holder.rules`` for a valid new file; see the module docstring."""

    def __init__(self, holder: RulesHolder, path: Path, *, interval: float) -> None:
        self._holder = holder
        self._path = path
        self._interval = interval
        self._seen = _digest(path)  # the content last loaded or refused
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reloads = 0
        self.refusals = 0

    def reload(self, trigger: str) -> bool:
        """Load the file now; ``True`` when the new rules are in use, ``False`` when they were refused."""
        # The hash is taken before loading: if the file changes while it is read, the next look reloads.
        self._seen = _digest(self._path)
        old = self._holder.rules
        try:
            new = load_rules(self._path)
        except ConfigError as exc:
            self.refusals += 1
            _log.error("rules reload refused", trigger=trigger, reason=str(exc), rules_kept=len(old.rules))
            return False
        self._holder.rules = new
        self.reloads += 1
        before = {rule.name for rule in old.rules}
        after = {rule.name for rule in new.rules}
        _log.info(
            "rules reloaded",
            trigger=trigger,
            file=str(self._path),
            rules=len(new.rules),
            added=sorted(after - before),
            removed=sorted(before - after),
        )
        return True

    def start(self) -> None:
        """Reload on SIGHUP (where the platform has it) and, with an interval, when the file changes."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
            self._loop = loop
        if self._interval > 0:
            self._task = asyncio.create_task(self._watch(), name="rules-reload")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGHUP)
            self._loop = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if _digest(self._path) != self._seen:
                self.reload("file changed")
