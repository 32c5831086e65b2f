"""The one start line and the one stop line of every long-running command (web, worker, run, simulate).

    {"event": "magbridge started", "command": "web", "version": "0.1.0", "pid": 4242,
     "listen": "0.0.0.0:8080", "redis": "redis:6379/0", "rules_file": "/etc/magbridge/rules.toml",
     "rules_sha256": "9f2c1e0b7a4d3c55", "sources": ["magnews webhooks"], "webhooks": "secret required",
     "admin_api": "on", ...}
    {"event": "magbridge stopped", "command": "web", "version": "0.1.0", "pid": 4242,
     "reason": "SIGTERM", "uptime_seconds": 5123.4}

What an operator asks first: which version runs, where it listens, which Redis (never its password),
which rules (the hash tells two hosts' files apart) and which sources feed it. Both lines are logged
at ``info``. The stop line is written only after a start line, with the signal or the error that
ended the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from bridge.logs import redact
from bridge.store.connections import redis_location
from bridge.version import version
from config.settings import Settings

__all__ = ["Lifecycle", "bridge_facts", "catch_signals", "lifecycle", "listen_address", "rules_digest"]

_log = structlog.get_logger("magbridge")


def rules_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256: enough to tell two versions of it apart."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        return f"unreadable: {exc.strerror}"


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _webhook_access(settings: Settings) -> str:
    if settings.webhook_secret is None:
        return "open: no secret (MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS)"
    rotation = " or the previous one" if settings.webhook_secret_previous is not None else ""
    networks = (
        f", from {len(settings.webhook_allowed_networks)} network(s)" if settings.webhook_allowed_networks else ""
    )
    return f"secret{rotation} required{networks}"


def bridge_facts(settings: Settings, *, receiver: bool, worker: bool) -> dict[str, Any]:
    """The start line's fields for a process that runs the receiver, a worker, or both."""
    sources = []
    if receiver:
        sources.append("magnews webhooks")
    if worker and settings.magnify_enabled:
        sources.append("magnify poll")
    facts: dict[str, Any] = {
        "redis": redis_location(settings.redis_url),
        "rules_file": str(settings.rules_file),
        "rules_sha256": rules_digest(settings.rules_file),
        "sources": sources,
    }
    if receiver:
        facts["webhooks"] = _webhook_access(settings)
        facts["admin_api"] = "on" if settings.admin_token is not None else "off (MAGBRIDGE_ADMIN_TOKEN unset)"
    return facts


class Lifecycle:
    """One process's start and stop lines; ``reason`` says why it stopped (a signal's name by default)."""

    def __init__(self, command: str):
        self.command = command
        self.reason: str | None = None
        self._started_at: float | None = None

    def started(self, *, listen: str | None, **facts: Any) -> None:
        self._started_at = time.monotonic()
        _log.info("magbridge started", command=self.command, version=version(), pid=os.getpid(), listen=listen, **facts)

    def stopped_by(self, signum: int) -> None:
        self.reason = signal.Signals(signum).name

    def stopped(self) -> None:
        if self._started_at is None:  # it never started: the error that stopped it says enough
            return
        _log.info(
            "magbridge stopped",
            command=self.command,
            version=version(),
            pid=os.getpid(),
            reason=self.reason or "finished",
            uptime_seconds=round(time.monotonic() - self._started_at, 1),
        )


@contextmanager
def lifecycle(command: str) -> Iterator[Lifecycle]:
    """A ``Lifecycle`` whose stop line is written however the block ends (signal, error, return)."""
    life = Lifecycle(command)
    try:
        yield life
    except BaseException as exc:
        if life.reason is None:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            life.reason = redact(f"error: {what}"[:300])
        raise
    finally:
        life.stopped()


def catch_signals() -> asyncio.Future[signal.Signals]:
    """From now on SIGINT and SIGTERM end the returned future (with the signal) instead of the process.

    Called before the start line, so a signal that follows the line at once is caught too."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def receive(signum: signal.Signals) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, receive, signum)
    return received
