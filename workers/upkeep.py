"""What keeps a worker right for months unattended: rules reload and Magnews token renewal.

Started in the worker's startup and stopped in its shutdown (before the HTTP session closes):

- :class:`~workers.rules_reload.RulesReloader`: SIGHUP and a content check of the rules file.
- :func:`~workers.destinations.magnews_auth.keep_fresh`: with the refresh-token flow, renews the Magnews access
  token before it lapses even while there is nothing to deliver.

The worker's probes outlive a Redis outage, so ``workers.supervisor`` runs them instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from config.settings import Settings
from workers.destinations.magnews_auth import MagnewsTokens, RefreshingToken, keep_fresh
from workers.rules_reload import RulesHolder, RulesReloader

__all__ = ["Upkeep", "start_upkeep"]


@dataclass(slots=True)
class Upkeep:
    """The running duties; ``stop`` ends them all."""

    reloader: RulesReloader
    token_keeper: asyncio.Task[None] | None

    async def stop(self) -> None:
        await self.reloader.stop()
        if self.token_keeper is not None:
            self.token_keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.token_keeper


async def start_upkeep(
    settings: Settings,
    holder: RulesHolder,
    magnews_tokens: MagnewsTokens | None,
) -> Upkeep:
    """Start the duties for one worker process."""
    reloader = RulesReloader(holder, settings.rules_file, interval=settings.rules_reload_seconds)
    reloader.start()
    keeper = None
    if isinstance(magnews_tokens, RefreshingToken):
        keeper = asyncio.create_task(keep_fresh(magnews_tokens), name="magnews-token-keeper")
    return Upkeep(reloader, keeper)
