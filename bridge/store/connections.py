"""Long-lived connections: the Redis client every process opens once and passes down.

A ``redis+sentinel://`` URL (``config.sentinel_url``) is opened with redis-py's own Sentinel support:
a new connection asks the Sentinels where the master is; the pool also asks once a second and
moves its connections when the answer changes (``_SentinelPool``), and a connection still held by a
demoted master fails (``ReadOnlyError`` becomes ``ConnectionError``). During a failover commands
fail as they do while a lone Redis is down (the receiver answers 503, the worker supervisor waits),
then go to the new master without a restart. On every URL, a connection the server reset is a
``ConnectionError`` under uvloop too (``_ResetIsLost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
    parse_url,
)
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from yarl import URL

from bridge.store.queue import deserialize_job, serialize_job
from config.sentinel_url import SentinelUrl, is_sentinel_url, parse_sentinel_url

__all__ = ["open_redis", "redis_location"]

# Short timeouts: a dead Redis must give a fast 503, not a hung request. ``socket_timeout`` also
# bounds the replica wait (``bridge.store.replicas``), whose own timeout is kept below it.
_TIMEOUTS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2}
_POOL: dict[str, Any] = {**_TIMEOUTS, "health_check_interval": 15, "max_connections": 256}
# A Sentinel's answers are small and near: a slow one is skipped for the next.
_SENTINEL_TIMEOUTS: dict[str, Any] = {"socket_timeout": 1, "socket_connect_timeout": 1}
_MASTER_CHECK_SECONDS = 1.0  # how often a Sentinel pool asks where the master is (``_SentinelPool``)


def open_redis(url: str) -> ArqRedis:
    """A Redis client that can also queue arq jobs.

    redis-py reconnects on the next command, so the process recovers by itself when Redis returns
    (or, through Sentinel, when another host has become the master).
    """
    if is_sentinel_url(url):
        return _open_sentinel(parse_sentinel_url(url, "MAGBRIDGE_REDIS_URL"))
    # The class redis-py picks for the URL's scheme, with resets seen as lost connections.
    connection_class = _RESET_IS_LOST[parse_url(url).get("connection_class", Connection)]
    pool = ConnectionPool.from_url(url, connection_class=connection_class, **_POOL)
    client = ArqRedis(pool, job_serializer=serialize_job, job_deserializer=deserialize_job)
    client.auto_close_connection_pool = True  # as ``Redis.from_url`` does: ``aclose`` closes the pool too
    return client


class _ResetIsLost(AbstractConnection):
    """A connection the server has reset is a lost connection (``ConnectionError``), whatever the loop.

    uvloop (``magbridge``'s event loop) raises ``RuntimeError`` ("the handler is closed") when a
    command is written to a connection the server has already reset, where redis-py expects an
    ``OSError``. It happens in every Sentinel failover (Sentinel closes all client connections of a
    node it reconfigures: ``CLIENT KILL TYPE normal``), and on ``CLIENT KILL`` or a restart; left as it
    is, it crashed the worker instead of letting its supervisor start a new one
    (``tests/test_failover.py``), and made the receiver answer 500 instead of 503.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:  # redis-py has disconnected it already
            if "closed" not in str(exc):
                raise
            raise RedisConnectionError(f"the connection to Redis was reset: {exc}") from exc


class _Connection(_ResetIsLost, Connection):
    pass


class _SSLConnection(_ResetIsLost, SSLConnection):
    pass


class _UnixConnection(_ResetIsLost, UnixDomainSocketConnection):
    pass


class _SentinelConnection(_ResetIsLost, SentinelManagedConnection):
    pass


_RESET_IS_LOST: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


class _SentinelPool(SentinelConnectionPool):
    """redis-py's pool of master connections, with two additions.

    It asks the Sentinels where the master is (redis-py's ``get_master_address``) at most once a
    second as it hands out a connection, and reconnects a connection still open to a host they no
    longer name. redis-py's asyncio pool asks only when it opens a connection, so an old master that
    stays up (a failover asked for with ``SENTINEL FAILOVER``, or a master cut off from the Sentinels)
    kept the connections open to it until Sentinel demoted it, about ten seconds later, and then
    dropped every write it had taken meanwhile (``tests/test_failover.py``). While no Sentinel
    answers, connections are used as they are.

    It also closes its Sentinel clients when it is closed: ``Sentinel`` keeps a client per Sentinel
    that nothing else closes, and a process that replaces its pools (the worker supervisor, after each
    outage) would leave their sockets open.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any):
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._master_checked = float("-inf")
        self._master_check: asyncio.Task[None] | None = None

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        self._check_master()
        address = self.master_address
        if (
            isinstance(connection, SentinelManagedConnection)
            and connection.is_connected
            and address is not None
            and (connection.host, connection.port) != tuple(address)
        ):
            await connection.disconnect()  # reconnects to the master the Sentinels name now
        await super().ensure_connection(connection)

    def _check_master(self) -> None:
        """Ask the Sentinels in the background (the pool's lock is held here, and a Sentinel may be
        slow to answer), at most once a second; the next connection handed out sees the answer."""
        now = time.monotonic()
        if now - self._master_checked < _MASTER_CHECK_SECONDS:
            return
        self._master_checked = now
        self._master_check = asyncio.ensure_future(self._ask_master())

    async def _ask_master(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.get_master_address()  # type: ignore[no-untyped-call]  # drops idle ones if it moved

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the client is closing; a master change disconnects idle ones only
            if self._master_check is not None:
                self._master_check.cancel()
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.aclose()


def _open_sentinel(target: SentinelUrl) -> ArqRedis:
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        list(target.sentinels),
        sentinel_kwargs={**_SENTINEL_TIMEOUTS, "password": target.sentinel_password},
    )
    client: ArqRedis = sentinel.master_for(
        target.master,
        redis_class=ArqRedis,
        connection_pool_class=_SentinelPool,
        connection_class=_SentinelConnection,
        db=target.database,
        username=target.username,
        password=target.password,
        **_POOL,
    )
    # As arq's own ``create_pool`` does for the clients it opens through Sentinel.
    client.job_serializer = serialize_job
    client.job_deserializer = deserialize_job
    return client


def redis_location(url: str) -> str:
    """Where ``url`` points, for logs and messages: ``host:port/db`` (``(TLS)`` for ``rediss``) or
    ``unix:/path``, or ``master/db via sentinels host:port,...``; never a user or password."""
    if is_sentinel_url(url):
        return parse_sentinel_url(url, "the Redis URL").location
    parsed = URL(url)
    if parsed.scheme == "unix":
        return f"unix:{parsed.path}"
    host = f"[{parsed.host}]" if parsed.host and ":" in parsed.host else parsed.host
    database = parsed.path.strip("/") or parsed.query.get("db") or "0"
    return f"{host}:{parsed.port or 6379}/{database}{' (TLS)' if parsed.scheme == 'rediss' else ''}"
