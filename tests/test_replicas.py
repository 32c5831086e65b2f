"""Redis replicas and Sentinel: ``redis+sentinel://`` URLs, clients that reach (and follow) the master
through real Sentinels, and the replica wait (``WAIT``) before a webhook is acknowledged.

The failover itself, with real processes, is ``tests/test_failover.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge.cli.check import _redis_outcome
from bridge.events import parse_magnews_body
from bridge.simulators import Simulators
from bridge.store.connections import open_redis, redis_location
from bridge.store.ingest import EventWriter
from bridge.store.replicas import ReplicaWait
from config.errors import ConfigError, ReplicasUnconfirmed, StoreUnavailable
from config.sentinel_url import parse_sentinel_url
from config.settings import Settings
from config.values import mask_url_credentials
from tests.support.events import magnews_event
from tests.support.processes import start_arq, stop_process
from tests.support.sentinel import MASTER_NAME, SentinelSet
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import sim_state
from workers.worker import redis_settings

URL = "redis+sentinel://app:p%40ss@10.0.0.1,10.0.0.2:26380,[fd00::3]:26381/cache-main/2?sentinel_password=s%26cret"


def test_a_sentinel_url_is_read_and_shown_without_its_passwords() -> None:
    target = parse_sentinel_url(URL, "url")
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("fd00::3", 26381))
    assert (target.master, target.database) == ("cache-main", 2)
    assert (target.username, target.password, target.sentinel_password) == ("app", "p@ss", "s&cret")
    shown = redis_location(URL)
    assert shown == "cache-main/2 via sentinels 10.0.0.1:26379,10.0.0.2:26380,[fd00::3]:26381"
    masked = mask_url_credentials(URL)
    assert "p%40ss" not in masked and "s%26cret" not in masked and masked.endswith("?sentinel_password=***")


def test_arq_own_command_line_gets_arqs_sentinel_settings() -> None:
    plain = Settings(_env_file=None, redis_url="redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/3")
    arq = redis_settings(plain)
    assert arq.sentinel and arq.sentinel_master == "mymaster"
    assert (arq.host, arq.database, arq.password) == ([("127.0.0.1", 1), ("127.0.0.1", 2)], 3, "pw")
    # arq hands the Sentinels no password: its command line refuses a URL that needs one, in one line.
    with pytest.raises(ConfigError, match=r"cannot authenticate to Sentinels.*magbridge worker"):
        redis_settings(Settings(_env_file=None, redis_url=URL))


@pytest.mark.slow
async def test_arqs_own_command_line_delivers_through_sentinel(
    tmp_path: Path, make_settings: SettingsFactory, simulators: Simulators
) -> None:
    """``arq workers.worker.WorkerSettings`` on a ``redis+sentinel://`` URL: arq's own Sentinel support."""
    redis_set = SentinelSet(tmp_path / "redis", sentinels=1, password="data pw")  # no Sentinel password
    redis_set.start()
    try:
        settings = make_settings(redis_url=redis_set.url)
        store = open_redis(redis_set.url)
        try:
            body = magnews_event("arq-s-1", "contacts/delete")
            await EventWriter(store, retention_seconds=3600, batch_size=100).ingest(
                parse_magnews_body(body, received_at="now", max_events=1)
            )
        finally:
            await store.aclose()
        output = tmp_path / "arq.log"
        worker = await start_arq(settings, "workers.worker.WorkerSettings", "--burst", cwd=tmp_path, output=output)
        try:
            returncode = await asyncio.wait_for(worker.wait(), 60)
        finally:
            await stop_process(worker)
        assert returncode == 0, output.read_text()
        assert (await sim_state(simulators.endpoints.magicbell_base_url))["side_effects"] == 1
    finally:
        redis_set.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary, one replica and one Sentinel, both with passwords (no failover needs a quorum here)."""
    redis_set = SentinelSet(tmp_path, sentinels=1, password="data pw", sentinel_password="sentinel:pw")
    redis_set.start()
    yield redis_set
    redis_set.stop()


async def _port(client: Any) -> int:
    return int((await client.info("server"))["tcp_port"])


async def _clients(sentinel_set: SentinelSet) -> int:
    client = sentinel_set.sentinels[0].client()
    try:
        return int((await client.info("clients"))["connected_clients"]) - 1  # less this one
    finally:
        await client.aclose()


async def test_open_redis_reaches_the_master_through_sentinel_and_closes_every_connection(
    sentinel_set: SentinelSet,
) -> None:
    before = await _clients(sentinel_set)
    client = open_redis(sentinel_set.url)
    await client.set("k", "v")
    assert await _port(client) == sentinel_set.nodes[0].port
    assert await _clients(sentinel_set) > before  # the client asked the Sentinel where the master is
    await client.aclose()
    assert await _clients(sentinel_set) == before  # and closed that connection with its own


@pytest.mark.slow
async def test_open_redis_follows_a_failover(sentinel_set: SentinelSet) -> None:
    client = open_redis(sentinel_set.url)
    try:
        await sentinel_set.wait_ready()  # the Sentinel knows the replica it is to promote
        await client.set("before", "1")
        old, new = sentinel_set.nodes[0].port, sentinel_set.nodes[1].port
        assert await _port(client) == old
        await client.execute_command("WAIT", 1, 1000)
        sentinel_set.nodes[0].kill()
        failures, killed = 0, time.monotonic()
        while True:  # as the receiver does: fail fast while there is no master, then go to the new one
            try:
                await client.set("after", "1")
                break
            except RedisConnectionError:
                failures += 1
                assert time.monotonic() - killed < 20, "the client did not find the new master"
                await asyncio.sleep(0.05)
        assert await _port(client) == new
        assert await client.get("before") == b"1"
        print(f"\nmaster killed: {failures} commands failed, the next one went to the new master "
              f"{time.monotonic() - killed:.1f}s later")  # fmt: skip
        assert failures > 0
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_open_redis_leaves_a_master_the_sentinels_no_longer_name(sentinel_set: SentinelSet) -> None:
    """After ``SENTINEL FAILOVER`` the old master stays up, and a master until Sentinel demotes it some
    seconds later; what it takes meanwhile is dropped then. The client moves within about a second."""
    client = open_redis(sentinel_set.url)
    old_node, new_node = sentinel_set.nodes
    old = old_node.client()
    try:
        await sentinel_set.wait_ready()
        await client.set("k", "0")
        assert await _port(client) == old_node.port
        sentinel = sentinel_set.sentinels[0].client()
        try:
            await sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        finally:
            await sentinel.aclose()
        await sentinel_set.wait_failover(old_node.port)
        switched = time.monotonic()
        while await _port(client) != new_node.port:
            assert time.monotonic() - switched < 3, "the client stayed on the old master"
            await client.set("k", "1")
            await asyncio.sleep(0.05)
        moved = time.monotonic() - switched
        assert (await old.info("replication"))["role"] == "master", "the client moved, not the old master"
        print(f"\nclient on the new master {moved:.2f}s after the Sentinels named it; the old one still a master")
    finally:
        await old.aclose()
        await client.aclose()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[SentinelSet]:
    """A primary and one replica, reached directly (``nodes[0].url``)."""
    redis_set = SentinelSet(tmp_path, sentinels=0)
    redis_set.start()
    asyncio.run(redis_set.wait_ready())
    yield redis_set
    redis_set.stop()


async def test_the_replica_wait_covers_writes_made_on_other_connections(replicated: SentinelSet) -> None:
    primary, replica = replicated.nodes
    writer_redis = open_redis(primary.url)
    # A client of its own: its connection has written nothing before, so a bare WAIT would return at once.
    waiting_redis = open_redis(primary.url)
    replica_redis = open_redis(replica.url)  # reads only
    writer = EventWriter(writer_redis, retention_seconds=3600, batch_size=100)
    wait = ReplicaWait(waiting_redis, replicas=1, timeout_ms=300)
    try:
        assert await wait.confirm() == 1
        replica.freeze()
        try:
            await writer.ingest(
                parse_magnews_body(magnews_event("rw-1", "contacts/delete"), received_at="now", max_events=1)
            )
            started = time.monotonic()
            with pytest.raises(ReplicasUnconfirmed) as refused:
                await wait.confirm()
            assert time.monotonic() - started >= 0.3
            assert (refused.value.required, refused.value.confirmed) == (1, 0)
        finally:
            replica.thaw()
        assert await wait.confirm() == 1
        # Confirmed: the replica holds the event and its arq job, written on the writer's connections.
        assert await replica_redis.hget("mb:event:rw-1", "status") == b"queued"
        assert len(await replica_redis.queued_jobs()) == 1
    finally:
        for client in (writer_redis, waiting_redis, replica_redis):
            await client.aclose()


async def test_the_receiver_answers_503_until_replicas_confirm_then_200_for_the_resend(
    replicated: SentinelSet, make_settings: SettingsFactory, start_service: Any
) -> None:
    primary, replica = replicated.nodes
    waiting: Service = await start_service(
        make_settings(redis_url=primary.url, redis_min_replicas_ack=1, redis_replica_ack_timeout_ms=200)
    )
    plain: Service = await start_service(make_settings(redis_url=primary.url))
    replica.freeze()
    try:
        started = time.monotonic()
        async with waiting.post_webhook(magnews_event("w-1", "contacts/delete")) as response:
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            problem = await response.json()
        assert time.monotonic() - started >= 0.2
        assert "0 of the 1 replicas required (MAGBRIDGE_REDIS_MIN_REPLICAS_ACK)" in problem["detail"]
        assert "within 200 ms" in problem["detail"] and "send it again" in problem["detail"]
        # Without the wait, the same frozen replica changes nothing: acknowledged at once.
        async with plain.post_webhook(magnews_event("p-1", "contacts/delete")) as response:
            assert response.status == 200
    finally:
        replica.thaw()
    async with waiting.post_webhook(magnews_event("w-1", "contacts/delete")) as response:
        assert response.status == 200
        assert await response.json() == {"accepted": 0, "duplicates": 1, "event_ids": ["w-1"]}
    replica_client = replica.client()
    try:
        assert await replica_client.hget("mb:event:w-1", "status") == b"queued"
    finally:
        await replica_client.aclose()


@pytest.mark.parametrize("through", ["sentinel", "plain"])
def test_a_connection_the_server_reset_is_a_lost_connection_under_uvloop(
    sentinel_set: SentinelSet, through: str
) -> None:
    """uvloop (the loop magbridge runs on) raises RuntimeError for a write to a reset connection; the
    worker supervisor and the receiver's 503 know only Redis's ConnectionError."""

    async def write_to_a_reset_connection() -> None:
        client = open_redis(sentinel_set.url if through == "sentinel" else sentinel_set.nodes[0].url)
        try:
            await client.ping()
            connection = await client.connection_pool.get_connection()
            try:
                connection._writer.transport.abort()  # the reset, as uvloop sees it
                with pytest.raises(RedisConnectionError, match="the connection to Redis was reset"):
                    await connection.send_packed_command(connection.pack_command("PING"), check_health=False)
            finally:
                await client.connection_pool.release(connection)
            assert await client.ping()  # and the next command reconnects
        finally:
            await client.aclose()

    uvloop.run(write_to_a_reset_connection())


async def test_check_counts_the_replicas_the_wait_needs(replicated: SentinelSet) -> None:
    """``magbridge check`` fails when fewer replicas are connected than the wait needs (every webhook
    would get 503), and warns when there is no spare."""
    primary, _ = replicated.nodes
    redis = open_redis(primary.url)
    try:
        spare = await _redis_outcome(redis, primary.url, 0)
        assert "replica" not in spare.detail
        exact = await _redis_outcome(redis, primary.url, 1)
        assert (
            exact.status == "WARN" and "1 replica(s) connected" in exact.detail and "no spare replica" in exact.detail
        )
        with pytest.raises(StoreUnavailable, match="MAGBRIDGE_REDIS_MIN_REPLICAS_ACK=2 needs that many replicas"):
            await _redis_outcome(redis, primary.url, 2)
    finally:
        await redis.aclose()
