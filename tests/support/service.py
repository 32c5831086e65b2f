"""The web app on a real socket as the tests drive it, and the type of the ``make_settings`` fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from config.settings import Settings

__all__ = ["Service", "SettingsFactory"]

SettingsFactory = Callable[..., Settings]


class Service:
    """The web app on a real socket, with a client session pointed at it."""

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self.url = url
        self.session = session

    def post_webhook(self, body: Any, **kwargs: Any) -> Any:
        return self.session.post(f"{self.url}/webhooks/magnews", json=body, **kwargs)
