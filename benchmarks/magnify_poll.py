"""Magnify poll benchmark: a first full poll and a steady-state cycle on the simulator's large account.

    python benchmarks/magnify_poll.py [--order oldest_first|newest_first|both] [--latency-ms 0]
                                      [--append 500] [--concurrency 4] [--redis-url URL]

Starts the Magnify simulator with ``MAGNIFY_ACCOUNTS["large"]`` (400 motions of very different sizes,
about 40,000 metrics) in a process of its own, so that its CPU does not share the poller's event
loop, and a private redis-server unless ``--redis-url`` names one (which must be an empty database).
Then runs the real poller (``workers.magnify.poller.MagnifyPoller``, default settings but the credentials):

1. the first full poll: cycles until no motion is left incomplete (one cycle unless the budget,
   ``job_timeout - http_timeout - 1`` seconds, runs out first);
2. a steady-state cycle on the unchanged account;
3. with ``--append N``: N new metrics spread over the running motions, then one cycle.

For each it prints the requests by endpoint (counted by the client, checked against the simulator's
own request log), the metrics ingested and the seconds, and checks that every metric the simulator
holds was ingested exactly once. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bridge.logs import configure_logging
from bridge.simulators import run_simulators
from bridge.simulators.magnify import MAGNIFY_ACCOUNTS
from bridge.store.connections import open_redis
from bridge.store.private_redis import PrivateRedis, RedisServerMissing
from config.settings import Settings
from workers.magnify.poller import MagnifyPoller


def _serve_simulator(order: str, pipe: Connection) -> None:
    """Child process: the three simulators, the Magnify one with the large account, until killed."""

    async def serve() -> None:
        async with run_simulators(magnify={**MAGNIFY_ACCOUNTS["large"], "order": order}) as sims:
            pipe.send(sims.endpoints.magnify_base_url)
            await asyncio.Event().wait()

    asyncio.run(serve())


def _private_redis(workdir: Path) -> PrivateRedis:
    try:
        server = PrivateRedis(workdir)
    except RedisServerMissing:
        raise SystemExit("redis-server is not installed; pass --redis-url") from None
    server.start()
    return server


@dataclass
class Phase:
    name: str
    cycles: int = 0
    seconds: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    simulator_requests: int = 0
    ingested: int = 0
    duplicates: int = 0


async def _simulator(http: aiohttp.ClientSession, root: str, route: str, body: Any = None) -> Any:
    method = "POST" if body is not None else "GET"
    async with http.request(method, f"{root}/_sim/{route}", json=body) as response:
        return await response.json()


async def _phase(name: str, poller: MagnifyPoller, http: aiohttp.ClientSession, root: str) -> Phase:
    phase = Phase(name)
    before = len(await _simulator(http, root, "requests"))
    while True:
        report = await poller.poll_once()
        if report.outcome != "ok":
            raise SystemExit(f"{name}: poll {report.outcome}: {report.error}")
        phase.cycles += 1
        phase.seconds += report.seconds
        phase.requests += report.requests
        phase.ingested += report.ingested
        phase.duplicates += report.duplicates
        if not report.incomplete:
            break
    phase.simulator_requests = len(await _simulator(http, root, "requests")) - before
    return phase


async def _run_order(order: str, args: argparse.Namespace, redis_url: str) -> list[Phase]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve_simulator, args=(order, child), daemon=True)
    process.start()
    try:
        base_url: str = parent.recv()
        root = base_url.removesuffix("/v1/partner")
        settings = Settings(
            _env_file=None,
            redis_url=redis_url,
            magnify_base_url=base_url,
            magnify_token_url=root + "/oauth2/token",
            magnify_client_id="sim-client",
            magnify_client_secret="sim-secret",
            magnify_concurrency=args.concurrency,
            magnify_start="everything",  # the figures are of a first read of the whole history
            log_level="warning",
        )
        redis = open_redis(redis_url)
        async with aiohttp.ClientSession() as http:
            await redis.flushdb()
            if args.latency_ms:
                await _simulator(http, root, "faults", {"latency_ms": args.latency_ms})
            async with aiohttp.ClientSession() as session:
                poller = MagnifyPoller.from_settings(redis, session, settings)
                phases = [await _phase("first full poll", poller, http, root)]
                phases.append(await _phase("steady-state cycle", poller, http, root))
                if args.append:
                    await _simulator(http, root, "append", {"count": args.append})
                    phases.append(await _phase(f"cycle after {args.append} new", poller, http, root))
            held = (await _simulator(http, root, "state"))["metrics"]
        stored = await redis.zcard("mb:events")
        await redis.aclose()
        if stored != held or sum(phase.ingested for phase in phases) != held:
            raise SystemExit(f"{order}: the simulator holds {held} metrics, the bridge stored {stored}")
        print(f"\n{order}: {held} metrics in {MAGNIFY_ACCOUNTS['large']['motions']} motions, all ingested once")
        return phases
    finally:
        process.kill()
        process.join()


def _table(order: str, phases: list[Phase]) -> None:
    print(f"{'phase':<24} {'cycles':>6} {'requests':>9} {'token':>6} {'motions':>8} {'metrics':>8} "
          f"{'ingested':>9} {'dupl.':>6} {'seconds':>8}")  # fmt: skip
    for p in phases:
        total = sum(p.requests.values())
        assert total == p.simulator_requests, (order, p.name, total, p.simulator_requests)
        print(
            f"{p.name:<24} {p.cycles:>6} {total:>9} {p.requests['token']:>6} {p.requests['motions']:>8} "
            f"{p.requests['metrics']:>8} {p.ingested:>9} {p.duplicates:>6} {p.seconds:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--order", choices=["oldest_first", "newest_first", "both"], default="both")
    parser.add_argument("--latency-ms", type=float, default=0, help="simulated latency of every API request")
    parser.add_argument("--append", type=int, default=500, help="metrics appended before the last cycle (0: none)")
    parser.add_argument("--concurrency", type=int, default=4, help="MAGBRIDGE_MAGNIFY_CONCURRENCY")
    parser.add_argument("--redis-url", help="an empty Redis database (default: a private redis-server)")
    args = parser.parse_args()
    configure_logging("warning", "console")
    workdir = tempfile.TemporaryDirectory()
    private = None if args.redis_url else _private_redis(Path(workdir.name))
    redis_url = args.redis_url or (private.url if private else "")
    started = time.monotonic()
    try:
        orders = ["oldest_first", "newest_first"] if args.order == "both" else [args.order]
        for order in orders:
            _table(order, asyncio.run(_run_order(order, args, redis_url)))
    finally:
        if private is not None:
            private.stop()
        workdir.cleanup()
    print(
        f"\ndone in {time.monotonic() - started:.1f}s (python {sys.version.split()[0]}, latency {args.latency_ms:g} ms)"
    )


if __name__ == "__main__":
    main()
