"""The Redis ``magbridge demo`` runs on: a private redis-server of its own, or an empty database it is given.

- No ``--redis-url`` and no ``MAGBRIDGE_REDIS_URL`` (the default): a redis-server of the demo's own
  (``bridge.store.private_redis``) on a free loopback port, its folder in the temporary directory,
  stopped and removed when the demo ends. Nothing of the demo ever lands in an operator's Redis.
  Without ``redis-server`` on the ``PATH``: one line saying how to get one.
- A URL given: its database must be empty. The demo writes what a bridge writes (counters, gauges,
  gate and checkpoint state, arq's queue and cron jobs), which a real bridge on the same database
  would take for its own and which cannot be told from a real bridge's afterwards; so there is no
  ``--force`` for a database in use. Any Redis has a free database number to give instead. When the
  demo ends, however it ends, it deletes every key of that database: all of them appeared while it
  ran (its events, ledger, counters, and arq's queue, job records and cron jobs), and taking all of
  them needs no knowledge of arq's key names. SCAN and UNLINK, not FLUSHDB, which managed Redis
  services often disable.

Every refusal is a ``ConfigError`` with one line naming the problem and the way out (exit status 2).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TextIO

from arq.connections import ArqRedis
from redis.exceptions import RedisError
from yarl import URL

from bridge.store.connections import open_redis
from bridge.store.private_redis import PrivateRedis, RedisServerMissing
from config.errors import ConfigError

__all__ = ["NO_REDIS_SERVER", "demo_redis"]

NO_REDIS_SERVER = (
    "the demo runs on a redis-server of its own, and there is none on the PATH: install one "
    "(apt-get install redis-server, or make install as root), or give --redis-url with an empty database"
)


def _where(url: str, database: str | None = None) -> str:
    """``host:port/db`` of a Redis URL (or of another database of its server), without the password."""
    parsed = URL(url)
    if parsed.scheme == "unix":
        return f"{parsed.path}?db={database or parsed.query.get('db', '0')}"
    return f"{parsed.host}:{parsed.port or 6379}/{database or parsed.path.strip('/') or '0'}"


@asynccontextmanager
async def demo_redis(given: str | None, source: str, out: TextIO) -> AsyncIterator[str]:
    """The URL the demo runs on, for as long as the block runs; ``given`` is None for a private server.

    ``source`` names where ``given`` came from (``--redis-url`` or ``MAGBRIDGE_REDIS_URL``) in messages.
    """
    if given is None:
        async with _private(out) as url:
            yield url
    else:
        async with _given(given, source, out) as url:
            yield url


@asynccontextmanager
async def _private(out: TextIO) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="magbridge-demo-") as folder:
        try:
            server = PrivateRedis(Path(folder))
        except RedisServerMissing:
            raise ConfigError(NO_REDIS_SERVER) from None
        try:
            await asyncio.to_thread(server.start)
        except RuntimeError as exc:
            raise ConfigError(f"the demo's own {exc}") from None
        out.write(f"redis: a private redis-server on 127.0.0.1:{server.port}, stopped when the demo ends\n")
        try:
            yield server.url
        finally:
            await asyncio.to_thread(server.stop)


@asynccontextmanager
async def _given(url: str, source: str, out: TextIO) -> AsyncIterator[str]:
    try:
        where = _where(url)
        redis = open_redis(url)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        try:
            held = await redis.dbsize()
        except (RedisError, OSError) as exc:
            raise ConfigError(
                f"no Redis answers at {where} ({source}): {exc}; start it, or drop {source} "
                "and the demo runs a redis-server of its own"
            ) from None
        if held:
            spare = _where(url, "14" if where == _where(url, "15") else "15")
            raise ConfigError(
                f"the Redis database at {where} ({source}) holds {held} keys and the demo runs only on an "
                f"empty one: give a database number nothing uses (e.g. {spare}), "
                f"or drop {source} and the demo runs a redis-server of its own"
            )
        out.write(f"redis: the empty database at {where}; the demo deletes its keys there when it ends\n")
        try:
            yield url
        finally:
            try:
                removed = await _delete_demo_keys(redis)
            except (RedisError, OSError) as exc:
                out.write(f"redis: could not delete the demo's keys from {where} ({exc}): empty it by hand\n")
            else:
                out.write(f"redis: deleted the demo's {removed} keys from {where}\n")
    finally:
        await redis.aclose()


async def _delete_demo_keys(redis: ArqRedis) -> int:
    """Delete every key of the database (it was empty when the demo began); the count deleted."""
    removed = 0
    batch: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        batch.append(key)
        if len(batch) == 1000:
            removed += await redis.unlink(*batch)
            batch.clear()
    if batch:
        removed += await redis.unlink(*batch)
    return removed
