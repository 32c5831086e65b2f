"""What keeps a worker right for months unattended: rules reload, Magnews token renewal, its probes.

Started in the worker's startup and stopped in its shutdown (before the HTTP session closes):

- :class:`~workers.rules_reload.RulesReloader`: SIGHUP and a content check of the rules file.
- :func:`~workers.destinations.magnews_auth.keep_fresh`: with the refresh-token flow, renews the Magnews access
  token before it lapses even while there is nothing to deliver.
- :func:`~workers.probes.start_probes`: ``/healthz`` and ``/readyz`` when ``WORKER_PROBES`` is on,
  except inside ``magbridge run``, whose web service already answers them on that port.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from config.settings import Settings
from workers.destinations.magnews_auth import MagnewsTokens, RefreshingToken, keep_fresh
from workers.probes import start_probes
from workers.rules_reload import RulesHolder, RulesReloader

__all__ = ["Upkeep", "start_upkeep"]


@dataclass(slots=True)
class Upkeep:
    """The running duties; ``stop`` ends them all."""

    reloader: RulesReloader
    token_keeper: asyncio.Task[None] | None
    probes: web.AppRunner | None

    async def stop(self) -> None:
        await self.reloader.stop()
        if self.token_keeper is not None:
            self.token_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.token_keeper
        if self.probes is not None:
            await self.probes.cleanup()


async def start_upkeep(
    settings: Settings,
    holder: RulesHolder,
    redis: aioredis.Redis,
    magnews_tokens: MagnewsTokens | None,
    *,
    embedded: bool = False,
) -> Upkeep:
    """Start the duties for one worker process; ``embedded`` is true inside ``magbridge run``."""
    reloader = RulesReloader(holder, settings.rules_file, interval=settings.rules_reload_seconds)
    reloader.start()
    keeper = None
    if isinstance(magnews_tokens, RefreshingToken):
        keeper = asyncio.create_task(keep_fresh(magnews_tokens), name="magnews-token-keeper")
    probes = await start_probes(settings, redis) if settings.worker_probes and not embedded else None
    return Upkeep(reloader, keeper, probes)
