"""``magbridge demo``: the whole bridge against the built-in simulators, with live progress.

Starts the three simulators, the web service and a worker in this process, registers the
receiver with the Magnews simulator (which sends its test request), has the simulator send a
realistic stream of webhook events (with resends, as Magnews does on timeouts), then checks the
bridge's own records against what the simulators received.

The receiver requires a webhook secret the demo generates for each run, and the demo registers
its URL with ``?token=`` as an operator would (``magbridge magnews-webhook register``). Where its
Redis comes from (a private redis-server, or an empty database it is given, cleaned up at the end)
is ``bridge.cli.demo_redis``; ``run_demo`` runs on ``settings.redis_url``.

Magnify traffic: the worker polls the Magnify simulator's small account every second with the
simulator's client credentials; more metrics are appended while the demo runs, and the summary
checks that every metric the simulator holds was ingested once and delivered by the rules.

The demo configures the bridge for the reading of the specs it runs the simulators under, as an
operator of such a vendor would: under ``magnews.primary_key=email`` it sets
``MAGNEWS_PRIMARY_KEY=email``. Merges that end ``unmatched`` or ``superseded`` are final without a
request, so the Magnews check compares the merges the bridge delivered (``confirmed`` by a read-back
included) with the merge items the simulator accepted (``ok: true``; not its 200 answers, as a
``batchmerge`` answer can refuse single items).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from yarl import URL

from bridge.events import magnify_envelope
from bridge.simulators import SimulatorEndpoints, run_simulators
from bridge.simulators.magnews import PRIMARY_KEYS
from bridge.simulators.magnify import MAGNIFY_ACCOUNTS, MAGNIFY_BACKEND, MagnifyBackend
from bridge.store import keys
from bridge.store.connections import open_redis
from bridge.store.reads import EventReader
from bridge.store.stats import series_name
from bridge.web.app import create_app
from config.settings import Settings

__all__ = ["DemoSummary", "run_demo"]

# A campaign's webhook mix: mostly engagement, a few contact changes and delivery problems.
_TOPIC_WEIGHTS = {
    "communications/msg/sent": 18,
    "communications/msg/open": 22,
    "communications/msg/click": 10,
    "contacts/update": 14,
    "contacts/create": 10,
    "contacts/unsubscription": 6,
    "communications/msg/bounce": 6,
    "transactionals/msg/bounce": 3,
    "communications/msg/complaint": 3,
    "contacts/delete": 3,
    "transactionals/msg/sent": 5,
}
_TERMINAL = ("delivered", "ignored", "failed")
_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Frances", "Edsger", "Radia")


@dataclass(slots=True)
class DemoSummary:
    sent: int = 0
    resent: int = 0
    accepted: int = 0
    duplicates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    broadcasts_by_bridge: int = 0
    broadcasts_at_magicbell: int = 0
    merges_by_bridge: int = 0
    merges_confirmed: int = 0  # of merges_by_bridge: an answer without outcome, confirmed by a read-back
    merges_unmatched: int = 0  # final without a request: no contact to merge into
    merges_superseded: int = 0  # final without a request: a newer merge of the contact went
    merges_at_magnews: int = 0  # merge items the simulator accepted
    broadcasts_created: int = 0  # broadcasts the MagicBell simulator created (its side effects)
    magnify_metrics: int = 0  # what the Magnify simulator holds, appended metrics included
    magnify_appended: int = 0
    magnify_ingested: int = 0
    magnify_statuses: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    @property
    def events_sent(self) -> int:
        """Webhook events sent and Magnify metrics the simulator holds (resends not counted)."""
        return self.sent + self.magnify_metrics

    @property
    def events_delivered(self) -> int:
        return self.statuses["delivered"] + self.magnify_statuses["delivered"]

    @property
    def events_ignored(self) -> int:
        return self.statuses["ignored"] + self.magnify_statuses["ignored"]

    @property
    def events_dead(self) -> int:
        """Events with a dead letter (status ``failed``)."""
        return self.statuses["failed"] + self.magnify_statuses["failed"]

    @property
    def duplicated(self) -> int:
        """Side effects at the simulators beyond what the bridge delivered (a broadcast or merge twice)."""
        return max(0, self.broadcasts_created - self.broadcasts_by_bridge) + max(
            0, self.merges_at_magnews - self.merges_by_bridge
        )

    @property
    def consistent(self) -> bool:
        """Every accepted event finished, and each simulator holds exactly what the bridge says it sent."""
        finished = sum(self.statuses[status] for status in _TERMINAL)
        magnify_finished = sum(self.magnify_statuses[status] for status in _TERMINAL)
        return (
            finished == self.accepted
            and self.accepted == self.sent
            and self.magnify_ingested == self.magnify_metrics == magnify_finished
            and self.broadcasts_by_bridge == self.broadcasts_at_magicbell
            and self.merges_by_bridge == self.merges_at_magnews
            and self.duplicated == 0
        )


def _tally_growth(before: dict[str, int], after: dict[str, int], name: str, source: str) -> int:
    """How much the store's tally ``name`` of ``source`` grew (``keys.STATS``, see ``bridge.store.stats``)."""
    field = series_name(name, {"source": source})
    return after.get(field, 0) - before.get(field, 0)


def _demo_settings(
    settings: Settings, endpoints: SimulatorEndpoints, webhook_secret: str, primary_key: str
) -> Settings:
    return Settings(
        **{
            **settings.model_dump(),
            "magicbell_base_url": endpoints.magicbell_base_url,
            "magicbell_token": "sim-magicbell-token",
            "magnews_base_url": endpoints.magnews_base_url,
            "magnews_token": "sim-magnews-token",
            "magnews_database_id": settings.magnews_database_id or 7,
            # The field that keys the simulator's database under the reading chosen, as its operator sets it.
            "magnews_primary_key": primary_key,
            "magicbell_recipients": settings.magicbell_recipients or ["ops@example.com"],
            "magnify_base_url": endpoints.magnify_base_url,
            "magnify_token_url": endpoints.magnify_token_url,
            # A secret of this run's own, whatever the environment says: the receiver requires one,
            # and an operator's allow-list or proxies would refuse the simulator on 127.0.0.1.
            "webhook_secret": webhook_secret,
            "webhook_secret_previous": None,
            "webhook_allowed_networks": [],
            "trusted_proxies": [],
            # The simulators take any pace; the vendors' limits apply to the real APIs only.
            "magicbell_max_rps": 0,
            "magnews_max_rps": 0,
            # The Magnify simulator's client credentials: the worker polls it every second.
            "magnify_client_id": "sim-client",
            "magnify_client_secret": "sim-secret",
            "magnify_poll_seconds": 1,
            # The simulator's history is old; the demo checks that every metric it holds is ingested.
            "magnify_start": "everything",
        },
        _env_file=None,
    )


def _make_event(rng: random.Random, run: str, number: int) -> dict[str, Any]:
    topic = rng.choices(list(_TOPIC_WEIGHTS), weights=list(_TOPIC_WEIGHTS.values()))[0]
    contact = rng.randrange(1, 400)
    name = rng.choice(_NAMES)
    return {
        "id": f"demo-{run}-{number}",
        "topic": topic,
        "data": {
            "idcontact": 500000 + contact,
            "iddatabase": 7,
            "email": f"{name.lower()}.{contact}@example.com",
            "status": "unsubscribed" if topic == "contacts/unsubscription" else "subscribed",
            "fields": {"name": name},
        },
    }


class _Demo:
    def __init__(
        self,
        settings: Settings,
        webhook_secret: str,
        endpoints: SimulatorEndpoints,
        http: aiohttp.ClientSession,
        out: TextIO,
    ):
        self.settings = settings
        self.webhook_secret = webhook_secret
        self.endpoints = endpoints
        self.http = http
        self.out = out
        self.run = uuid.uuid4().hex[:8]
        self.summary = DemoSummary()
        self.event_ids: list[str] = []
        self.magnify_ids: list[str] = []

    async def register(self, receiver_url: str) -> None:
        uri = URL(f"{receiver_url}/webhooks/magnews").with_query(token=self.webhook_secret)
        async with self.http.post(
            f"{self.endpoints.magnews_base_url}/v19/webhooks/create",
            json={"uri": str(uri), "topics": ",".join(sorted(_TOPIC_WEIGHTS))},
            headers={"Authorization": "Bearer sim-magnews-token"},
        ) as response:
            body = await response.json()
            if response.status != 200:
                raise RuntimeError(f"webhook registration failed: {body}")
        self.out.write(f"registered webhook #{body['id']} with the Magnews simulator (test request answered 200)\n")

    async def emit(self, event: dict[str, Any]) -> None:
        async with self.http.post(f"{self.endpoints.magnews_base_url}/_sim/emit", json=event) as response:
            result = await response.json()
        statuses = [item["status"] for item in result.get("delivered", [])]
        if statuses != [200]:
            raise RuntimeError(f"the receiver did not acknowledge {event['id']}: {statuses}")

    async def send(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        events = [_make_event(rng, self.run, number) for number in range(count)]
        self.event_ids = [event["id"] for event in events]
        for start in range(0, count, 10):
            batch = events[start : start + 10]
            # Magnews resends when an acknowledgement is slow; one resend per batch of ten.
            resend = rng.choice(events[: start + len(batch)])
            await asyncio.gather(*(self.emit(event) for event in [*batch, resend]))
            self.summary.sent += len(batch)
            self.summary.resent += 1

    async def append_magnify(self, count: int) -> None:
        """New metrics on the Magnify simulator's running motions, as a live account produces them."""
        root = self.endpoints.magnify_base_url.removesuffix("/v1/partner")
        async with self.http.post(f"{root}/_sim/append", json={"count": count}) as response:
            if response.status != 200:
                raise RuntimeError(f"the Magnify simulator did not append metrics: {await response.text()}")
        self.summary.magnify_appended += count

    def expect_magnify(self, backend: MagnifyBackend) -> None:
        """The event ids of every metric the simulator holds (its motions worth polling)."""
        from workers.magnify.poller import POLLED_STATES

        motions = [motion for motion in backend.data.motions if motion.state in POLLED_STATES]
        self.magnify_ids = [magnify_envelope(metric).id for motion in motions for metric in motion.metrics]
        self.summary.magnify_metrics = len(self.magnify_ids)

    async def statuses(self, store: EventReader, ids: list[str] | None = None) -> Counter[str]:
        async with store.redis.pipeline(transaction=False) as pipe:
            for event_id in self.event_ids if ids is None else ids:
                pipe.hget(keys.event(event_id), "status")
            values = await pipe.execute()
        return Counter(value.decode() for value in values if value is not None)

    def progress(self, counts: Counter[str], final: bool = False) -> None:
        line = (
            f"sent {self.summary.sent:>4} (+{self.summary.resent} resends) · received {sum(counts.values()):>4} · "
            f"delivered {counts['delivered']:>4} · ignored {counts['ignored']:>4} · failed {counts['failed']:>3} · "
            f"in flight {sum(counts.values()) - sum(counts[s] for s in _TERMINAL):>4} · "
            f"magnify {sum(self.summary.magnify_statuses.values()):>3}/{len(self.magnify_ids)}"
        )
        self.out.write(("\r" + line + ("\n" if final else "")) if self.out.isatty() else line + "\n")
        self.out.flush()

    async def sim_requests(self, base_url: str, path: str) -> list[dict[str, Any]]:
        async with self.http.get(f"{base_url}/_sim/requests", params={"path": path, "method": "POST"}) as response:
            records: list[dict[str, Any]] = await response.json()
        return records

    async def sim_state(self, base_url: str) -> dict[str, Any]:
        async with self.http.get(f"{base_url}/_sim/state") as response:
            state: dict[str, Any] = await response.json()
        return state

    def count_action(self, action: dict[str, Any]) -> None:
        status, summary = action["status"], self.summary
        if action["destination"] == "magicbell":
            if status == "delivered":
                summary.broadcasts_by_bridge += len(action["requests"])
        elif status == "delivered":
            summary.merges_by_bridge += 1
            attempts = action.get("attempts") or [{}]
            if attempts[-1].get("outcome") == "confirmed":
                summary.merges_confirmed += 1
        elif status == "unmatched":
            summary.merges_unmatched += 1
        elif status == "superseded":
            summary.merges_superseded += 1

    async def reconcile(self, store: EventReader) -> None:
        ours = set(self.event_ids) | set(self.magnify_ids)
        for event_id in [*self.event_ids, *self.magnify_ids]:
            event = await store.get(event_id)
            for action in (event.actions if event else {}).values():
                self.count_action(action)
        broadcasts = {
            record["body"]["id"]
            for record in await self.sim_requests(self.endpoints.magicbell_base_url, "/broadcasts")
            if record["status"] == 201 and record["body"]["custom_attributes"]["magbridge_event_id"] in ours
        }
        self.summary.broadcasts_at_magicbell = len(broadcasts)
        self.summary.broadcasts_created = (await self.sim_state(self.endpoints.magicbell_base_url))["side_effects"]
        # Accepted items, not 200 answers: a batchmerge answered 200 can refuse some of its contacts.
        self.summary.merges_at_magnews = (await self.sim_state(self.endpoints.magnews_base_url))["merges_accepted"]


async def _watch(
    demo: _Demo, store: EventReader, sender: asyncio.Task[None], backend: MagnifyBackend, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = await demo.statuses(store)
        demo.expect_magnify(backend)
        demo.summary.magnify_statuses = await demo.statuses(store, demo.magnify_ids)
        magnify_done = sum(demo.summary.magnify_statuses[s] for s in _TERMINAL) == len(demo.magnify_ids)
        done = sender.done() and sum(counts[s] for s in _TERMINAL) == len(demo.event_ids) and magnify_done
        demo.progress(counts, final=done)
        if done:
            return
        await asyncio.sleep(0.5)
    demo.out.write("\ntimed out waiting for deliveries\n")


def _report(summary: DemoSummary, out: TextIO) -> None:
    s = summary
    lines = [
        "",
        "summary",
        f"  webhook events sent        {s.sent} (+{s.resent} resends of events already sent)",
        f"  accepted / duplicates      {s.accepted} / {s.duplicates}",
        "  outcomes                   " + ", ".join(f"{k} {v}" for k, v in sorted(s.statuses.items())),
        f"  MagicBell broadcasts       bridge delivered {s.broadcasts_by_bridge}, "
        f"simulator holds {s.broadcasts_at_magicbell}",
        f"  Magnews merges             bridge delivered {s.merges_by_bridge}"
        + (f" ({s.merges_confirmed} confirmed by read-back)" if s.merges_confirmed else "")
        + f", simulator holds {s.merges_at_magnews}; unmatched {s.merges_unmatched}, superseded {s.merges_superseded}",
        f"  Magnify metrics            simulator holds {s.magnify_metrics} ({s.magnify_appended} appended while "
        f"running), bridge ingested {s.magnify_ingested}",
        "  Magnify outcomes           " + ", ".join(f"{k} {v}" for k, v in sorted(s.magnify_statuses.items())),
        f"  events                     sent {s.events_sent}, delivered {s.events_delivered}, ignored "
        f"{s.events_ignored}, dead-lettered {s.events_dead}, duplicated {s.duplicated}",
        f"  elapsed                    {s.elapsed:.1f}s",
        "  result                     " + ("CONSISTENT" if s.consistent else "MISMATCH"),
    ]
    out.write("\n".join(lines) + "\n")


async def run_demo(
    settings: Settings,
    *,
    events: int,
    out: TextIO,
    seed: int = 7,
    timeout: float = 120,
    readings: Mapping[str, Mapping[str, str]] | None = None,
) -> DemoSummary:
    """Run the demo and return its summary (also printed to ``out``)."""
    from workers.supervisor import stop_running
    from workers.worker import create_worker

    started = time.monotonic()
    # A fresh Magnify account per run (seeded by a random run), so a re-run on the same Redis does
    # not find its metrics already ingested.
    magnify = {**MAGNIFY_ACCOUNTS["small"], "seed": random.randrange(2**32)}
    async with run_simulators(magnify=magnify, readings=readings) as sims, aiohttp.ClientSession() as http:
        webhook_secret = secrets.token_urlsafe(24)
        primary_key = (readings or {}).get("magnews", {}).get("primary_key", PRIMARY_KEYS[0])
        settings = _demo_settings(settings, sims.endpoints, webhook_secret, primary_key)
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        receiver = f"http://127.0.0.1:{runner.addresses[0][1]}"
        worker = create_worker(settings, handle_signals=False)
        worker_task = asyncio.create_task(worker.async_run())
        redis = open_redis(settings.redis_url)
        store = EventReader(redis)
        stats_before = await store.stats()
        demo = _Demo(settings, webhook_secret, sims.endpoints, http, out)
        try:
            out.write(f"demo run {demo.run}: simulators up, receiver at {receiver}, worker started\n")
            registered_before = await store.stats()
            await demo.register(receiver)
            registered_after = await store.stats()
            # Magnews's test request is unpublished; in some readings (an empty object, a sample
            # event) the receiver stores it as an event: not one of the events this demo sends.
            test_request_events, test_request_duplicates = (
                _tally_growth(registered_before, registered_after, name, "magnews")
                for name in ("received", "duplicates")
            )
            backend = sims.magnify_app[MAGNIFY_BACKEND]

            async def traffic() -> None:
                await demo.send(events, seed)
                await demo.append_magnify(20)  # Magnify metrics arriving while the bridge runs

            sender = asyncio.create_task(traffic())
            await _watch(demo, store, sender, backend, timeout)
            await sender
            stats_after = await store.stats()
            demo.summary.magnify_ingested = _tally_growth(stats_before, stats_after, "received", "magnify")
            demo.summary.accepted = (
                _tally_growth(stats_before, stats_after, "received", "magnews") - test_request_events
            )
            demo.summary.duplicates = (
                _tally_growth(stats_before, stats_after, "duplicates", "magnews") - test_request_duplicates
            )
            demo.summary.statuses = await demo.statuses(store)
            demo.expect_magnify(backend)
            demo.summary.magnify_statuses = await demo.statuses(store, demo.magnify_ids)
            await demo.reconcile(store)
        finally:
            await stop_running(worker, worker_task)
            await worker.close()
            await redis.aclose()
            await runner.cleanup()
    demo.summary.elapsed = time.monotonic() - started
    _report(demo.summary, out)
    return demo.summary
