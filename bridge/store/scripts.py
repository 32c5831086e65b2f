"""Lua scripts as ``.lua`` files beside the module that calls them, read once per process.

``script(redis, __package__, "ingest.lua")`` registers the file's text with a client; redis-py's
``Script`` sends ``EVALSHA`` and loads the script into Redis on the first ``NOSCRIPT``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

__all__ = ["lua_source", "script"]


@cache
def lua_source(package: str, name: str) -> str:
    """The text of ``name`` in ``package`` (read from disk once per process)."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def script(redis: aioredis.Redis, package: str | None, name: str) -> AsyncScript:
    """``name`` of ``package`` registered with ``redis``."""
    assert package, "call with the calling module's __package__"
    return redis.register_script(lua_source(package, name))
