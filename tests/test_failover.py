"""A Redis failover under load, with and without the replica wait: nothing acknowledged is lost.

Real processes throughout: a primary, a replica and three Sentinels (``redis-server``, Sentinels in
sentinel mode), two ``magbridge web`` receivers and one ``magbridge worker`` on the same
``redis+sentinel://`` URL, the real simulators. One receiver answers 200 when Redis has stored an
event (``REDIS_MIN_REPLICAS_ACK=0``, the default); the other also waits for one replica (``=1``).

1. **Streaming.** Both receive a stream of webhooks (unique ids, resent after a 503 as Magnews
   does) and the primary is SIGKILLed mid-stream: both answer 503 during the switch and 200 after it
   (the receiver with the wait once a replica is back: the old primary, restarted as the operator's
   tooling would), and every event acknowledged with 200 is delivered exactly once.
2. **A burst just before the primary dies, the replica behind.** The replica is frozen (SIGSTOP) and
   its link cut for the length of a burst, as when replication lags, and the worker is
   frozen too, as when it has a backlog, so that what the burst stored is on the primary only; the
   primary is SIGKILLed right after the burst. Without the wait, every event of the burst was
   acknowledged and is gone; with it, none was acknowledged before a replica held it, and the
   resends are delivered.

3. **A failover with the old master still up** (``SENTINEL FAILOVER``): the last test below.

The figures are printed (``pytest tests/test_failover.py -s``); docs/deployment.md quotes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.simulators import Simulators
from bridge.simulators.common import SIM_CORE
from bridge.simulators.magicbell import MAGICBELL_STORE
from bridge.store import keys
from bridge.store.connections import open_redis
from config.settings import Settings
from tests.support.processes import settings_env, stop_process
from tests.support.redis_server import free_port
from tests.support.sentinel import MASTER_NAME, RedisNode, SentinelSet, answer_or_false
from tests.support.service import Service, SettingsFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BURST = 100
WAIT_TIMEOUT_MS = 500


@dataclass
class Receiver:
    """A receiver (``magbridge web``) and every answer it gave, by phase."""

    label: str
    url: str
    answers: list[tuple[float, str, int]] = field(default_factory=list)  # (when, event id, status; 0: none)
    acknowledged: dict[str, float] = field(default_factory=dict)  # event id -> when it got its 200
    sent: dict[str, str] = field(default_factory=dict)  # event id -> phase

    async def send(self, session: aiohttp.ClientSession, event_id: str, phase: str, *, resend_for: float) -> None:
        """Post one event; resend it after a 503 or no answer, for ``resend_for`` seconds (0: once)."""
        self.sent[event_id] = phase
        body = {"id": event_id, "topic": "contacts/delete", "data": {"email": f"{event_id}@example.com"}}
        deadline = time.monotonic() + resend_for
        while True:
            try:
                async with session.post(f"{self.url}/webhooks/magnews", json=body) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            now = time.monotonic()
            self.answers.append((now, event_id, status))
            if status == 200:
                self.acknowledged[event_id] = now
                return
            assert status in (0, 503), f"{self.label} answered {status}"
            if now >= deadline:
                return
            await asyncio.sleep(0.05)

    async def stream(self, session: aiohttp.ClientSession, stop: asyncio.Event, lanes: int = 3) -> None:
        async def lane(number: int) -> None:
            sequence = 0
            while not stop.is_set():
                await self.send(session, f"{self.label}-s{number}-{sequence}", "stream", resend_for=30)
                sequence += 1
                await asyncio.sleep(0.01)

        await asyncio.gather(*(lane(n) for n in range(lanes)))

    def statuses(self, since: float, until: float = float("inf")) -> Counter[int]:
        return Counter(status for when, _, status in self.answers if since <= when < until)


async def _spawn(command: str, settings: Settings, log: Path) -> asyncio.subprocess.Process:
    """``magbridge <command>`` with the settings in its environment, run beside ``log`` (away from any
    ``.env`` of the working tree); its output goes to ``log``."""
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", command,
            env=settings_env(settings), cwd=log.parent, stdout=sink, stderr=sink,
        )  # fmt: skip


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[SentinelSet]:
    redis_set = SentinelSet(tmp_path / "redis", down_after_ms=1000, failover_timeout_ms=3000)
    redis_set.start()
    yield redis_set
    redis_set.stop()


@contextlib.asynccontextmanager
async def _bridge(
    make_settings: SettingsFactory, redis_set: SentinelSet, logs: Path
) -> AsyncIterator[tuple[Receiver, Receiver, Any]]:
    """Two receivers (without and with the replica wait) and a worker, on the Sentinel set."""
    logs.mkdir()
    # job_timeout 2 s: a job the kill interrupted runs again once arq's in-progress lock lapses (22 s).
    base: dict[str, Any] = {"redis_url": redis_set.url, "job_timeout_seconds": 2, "http_timeout_seconds": 1}
    plain_port, waiting_port = free_port(), free_port()
    plain = make_settings(**base, host="127.0.0.1", port=plain_port)
    waiting = make_settings(
        **base, host="127.0.0.1", port=waiting_port,
        redis_min_replicas_ack=1, redis_replica_ack_timeout_ms=WAIT_TIMEOUT_MS,
    )  # fmt: skip
    processes = [
        await _spawn("web", plain, logs / "web-plain.log"),
        await _spawn("web", waiting, logs / "web-wait.log"),
        await _spawn("worker", make_settings(**base), logs / "worker.log"),
    ]
    receivers = (
        Receiver("plain", f"http://127.0.0.1:{plain_port}"),
        Receiver("wait", f"http://127.0.0.1:{waiting_port}"),
    )
    try:
        yield receivers[0], receivers[1], processes[2]
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)
            await stop_process(process, timeout=30)


async def _served(session: aiohttp.ClientSession, receiver: Receiver) -> bool:
    try:
        async with session.get(f"{receiver.url}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _fail_primary(redis_set: SentinelSet) -> tuple[int, int, float, float]:
    """SIGKILL the master; once a majority of the Sentinels name another, start the old one again as
    its replica. The old and new master's ports, when the kill happened and the switch was seen."""
    old = await redis_set.master_port()
    assert old is not None
    redis_set.node(old).kill()
    killed = time.monotonic()
    new = await redis_set.wait_failover(old)
    switched = time.monotonic()
    redis_set.restart_as_replica(redis_set.node(old), new)
    return old, new, killed, switched


def _delivered(simulators: Simulators) -> Counter[str]:
    """Broadcasts the MagicBell simulator holds, per event id."""
    broadcasts = simulators.magicbell_app[MAGICBELL_STORE].broadcasts.values()
    return Counter(broadcast["custom_attributes"]["magbridge_event_id"] for broadcast in broadcasts)


async def test_failover_loses_no_acknowledged_event(
    redis_set: SentinelSet, make_settings: SettingsFactory, simulators: Simulators, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with (
        _bridge(make_settings, redis_set, tmp_path / "logs") as (plain, waiting, worker),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
    ):
        await redis_set.wait_ready()
        await _until(lambda: _served(session, plain), 30, "plain receiver up")
        await _until(lambda: _served(session, waiting), 30, "waiting receiver up")
        store = open_redis(redis_set.url)
        try:
            await _until(lambda: store.exists(keys.WORKER_HEARTBEAT), 30, "worker up")
        finally:
            await store.aclose()

        # 1. Streaming; the primary dies mid-stream.
        stop = asyncio.Event()
        streams = asyncio.gather(plain.stream(session, stop), waiting.stream(session, stop))
        await asyncio.sleep(1.5)
        _, _, killed, switched = await _fail_primary(redis_set)
        await redis_set.wait_ready()
        replica_back = time.monotonic()
        await asyncio.sleep(1.5)
        stop.set()
        await streams

        # 2. A burst on the primary alone (replica behind, worker behind), then the primary dies.
        master = await redis_set.master_port()
        assert master is not None
        replica = next(node for node in redis_set.nodes if node.port != master)
        os.kill(worker.pid, signal.SIGSTOP)
        # Frozen first, then cut off by the master: a replica that is not frozen reconnects at once.
        replica.freeze()
        master_client = redis_set.node(master).client()
        try:
            await master_client.execute_command("CLIENT", "KILL", "TYPE", "replica")
            await _until(lambda: _no_replica(master_client), 5, "the master to see its replica go")
        finally:
            await master_client.aclose()
        waiting_burst = asyncio.gather(
            *(waiting.send(session, f"wait-b-{n}", "burst", resend_for=40) for n in range(BURST))
        )
        await asyncio.gather(*(plain.send(session, f"plain-b-{n}", "burst", resend_for=0) for n in range(BURST)))
        old = master
        redis_set.node(old).kill()
        burst_end = time.monotonic()
        replica.thaw()
        os.kill(worker.pid, signal.SIGCONT)
        new = await redis_set.wait_failover(old)
        second_switch = time.monotonic()
        redis_set.restart_as_replica(redis_set.node(old), new)
        await waiting_burst

        # Every acknowledged event still in the store is delivered; the lost ones never will be.
        store = open_redis(redis_set.url)
        try:
            acknowledged = [*plain.acknowledged, *waiting.acknowledged]

            async def settled() -> bool:
                delivered = _delivered(simulators)
                async with store.pipeline(transaction=False) as pipe:
                    for event_id in acknowledged:
                        pipe.exists(keys.event(event_id))
                    stored = await pipe.execute()
                return all(delivered[e] for e, kept in zip(acknowledged, stored, strict=True) if kept)

            await _until(lambda: answer_or_false(settled()), 60, "every acknowledged event in the store delivered")
            await asyncio.sleep(1)  # a repeat would show up now
        finally:
            await store.aclose()
        assert worker.returncode is None, "the worker process carried on through both failovers"

    delivered = _delivered(simulators)
    requests = Counter(
        record.body["custom_attributes"]["magbridge_event_id"]
        for record in simulators.magicbell_app[SIM_CORE].records
        if record.path == "/broadcasts" and record.method == "POST" and isinstance(record.body, dict)
    )
    figures = {}
    for receiver in (plain, waiting):
        for phase in ("stream", "burst"):
            ids = [e for e, p in receiver.sent.items() if p == phase]
            acked = [e for e in ids if e in receiver.acknowledged]
            figures[receiver.label, phase] = {
                "sent": len(ids),
                "acknowledged": len(acked),
                "delivered": sum(1 for e in ids if delivered[e]),
                "lost": sum(1 for e in acked if not delivered[e]),
                "repeated": sum(1 for e in ids if delivered[e] > 1),
                "requests": sum(requests[e] for e in ids),
            }
    print(f"\nfailover 1 (mid-stream): Sentinels switched {switched - killed:.1f}s after the kill; "
          f"replica back {replica_back - killed:.1f}s after it")  # fmt: skip
    for receiver in (plain, waiting):
        back = min(when for when, _, status in receiver.answers if status == 200 and when > switched)
        print(f"  {receiver.label:5}: answers from the kill to the switch {dict(receiver.statuses(killed, switched))}, "
              f"to the replica's return {dict(receiver.statuses(switched, replica_back))}, "
              f"then {dict(receiver.statuses(replica_back, replica_back + 1.5))}; "
              f"first 200 {back - killed:.1f}s after the kill")  # fmt: skip
    print(f"failover 2 (primary killed right after a burst, {BURST} events per receiver): switched "
          f"{second_switch - burst_end:.1f}s after the kill")  # fmt: skip
    for (label, phase), numbers in figures.items():
        print(f"  {label:5} {phase:6}: " + ", ".join(f"{name} {value}" for name, value in numbers.items()))
    print(f"  whole test {time.monotonic() - started:.0f}s")

    for receiver in (plain, waiting):
        during = receiver.statuses(killed, switched)
        assert during[503] > 0, f"{receiver.label}: 503 while no master was known"
        assert receiver.statuses(replica_back, replica_back + 1.5)[200] > 0, f"{receiver.label}: 200 after"
        stream = figures[receiver.label, "stream"]
        assert stream["sent"] == stream["acknowledged"] == stream["delivered"], stream
        assert stream["lost"] == stream["repeated"] == 0, stream
    with_wait, without_wait = figures["wait", "burst"], figures["plain", "burst"]
    # With the wait: nothing of the burst acknowledged while the primary alone had it; every resend
    # acknowledged on the new primary, and delivered once.
    assert not [s for when, e, s in waiting.answers if e.startswith("wait-b-") and when < burst_end and s == 200]
    assert with_wait["acknowledged"] == with_wait["delivered"] == BURST, with_wait
    assert with_wait["lost"] == with_wait["repeated"] == 0, with_wait
    # Without it, the burst was acknowledged from the primary alone, and went with it.
    assert without_wait["acknowledged"] == BURST, without_wait
    assert without_wait["lost"] > 0 and without_wait["repeated"] == 0, without_wait


async def _no_replica(client: Any) -> bool:
    info = await client.info("replication")
    return int(info["connected_slaves"]) == 0


async def test_a_failover_with_the_old_master_up_loses_acknowledged_writes_unless_the_receiver_waits(
    redis_set: SentinelSet, make_settings: SettingsFactory, start_service: Any
) -> None:
    """A failover the operator asks for (``SENTINEL FAILOVER``; a master cut off by the network is the
    same case): the old master stays up, a master until the Sentinels demote it some ten seconds
    later, and then drops what it took meanwhile. The clients leave it within a second of the
    Sentinels naming the new one (``bridge.store.connections``), but between the promotion and that
    moment the old master still acknowledged writes. No trick needed: the receiver without the wait
    loses some of what it acknowledged; the receiver with it, nothing (its old master had no replica
    left to confirm)."""
    plain_service: Service = await start_service(make_settings(redis_url=redis_set.url))
    waiting_service: Service = await start_service(
        make_settings(redis_url=redis_set.url, redis_min_replicas_ack=1, redis_replica_ack_timeout_ms=200)
    )
    plain, waiting = Receiver("plain", plain_service.url), Receiver("wait", waiting_service.url)
    await redis_set.wait_ready()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        streams = asyncio.gather(plain.stream(session, stop, lanes=1), waiting.stream(session, stop, lanes=1))
        await asyncio.sleep(0.5)
        old = await redis_set.master_port()
        assert old is not None
        sentinel = redis_set.sentinels[0].client()
        try:
            await sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        finally:
            await sentinel.aclose()
        asked = time.monotonic()
        await redis_set.wait_failover(old)
        switched = time.monotonic()
        await _until(lambda: _demoted(redis_set.node(old)), 30, "the old master demoted")
        demoted = time.monotonic()
        await asyncio.sleep(1)
        stop.set()
        await streams
    store = open_redis(redis_set.url)
    try:
        lost = {}
        for receiver in (plain, waiting):
            acknowledged = list(receiver.acknowledged)
            async with store.pipeline(transaction=False) as pipe:
                for event_id in acknowledged:
                    pipe.exists(keys.event(event_id))
                kept = await pipe.execute()
            lost[receiver.label] = sum(1 for present in kept if not present)
            print(f"\n{receiver.label:5}: {len(receiver.sent)} sent, {len(acknowledged)} acknowledged, "
                  f"{lost[receiver.label]} of those gone from the store; answers from the failover to the "
                  f"switch {dict(receiver.statuses(asked, switched))}, to the demotion "
                  f"{dict(receiver.statuses(switched, demoted))}")  # fmt: skip
    finally:
        await store.aclose()
    print(f"switch {switched - asked:.1f}s after SENTINEL FAILOVER, old master demoted {demoted - asked:.1f}s after it")
    assert lost["wait"] == 0
    assert waiting.statuses(asked, demoted)[503] > 0, "the demoted master could not confirm: 503, resent"
    assert lost["plain"] > 0, "without the wait, the demoted master's acknowledgements were dropped"


async def _demoted(node: RedisNode) -> bool:
    """The node has become a replica and is in sync with its new master."""

    async def check() -> bool:
        client = node.client()
        try:
            info = await client.info("replication")
        finally:
            await client.aclose()
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    return await answer_or_false(check())
