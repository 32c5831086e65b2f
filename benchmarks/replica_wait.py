"""What the replica wait costs: webhook latency with ``REDIS_MIN_REPLICAS_ACK`` 0 and 1.

    python benchmarks/replica_wait.py [--requests 3000] [--concurrency 1 32] [--json FILE]

Starts a private primary and one replica (``redis-server``, on loopback) and two ``magbridge web``
processes on the primary, one without the wait and one with it (``WAIT 1``), then posts one-event
webhooks to each, alternating blocks of 250 requests between the two so that a change in the
machine's load falls on both alike. Per receiver and concurrency: p50, p90, p99 and max of the
request latency as the client sees it, and requests per second. At concurrency 1 the difference is
the cost of one request's wait; with more requests at once, concurrent requests share one ingest
script call and one ``WAIT`` (``bridge.web.ingest_batcher``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.redis_server import free_port  # noqa: E402
from tests.support.sentinel import SentinelSet  # noqa: E402

BLOCK = 250


def _env(redis_url: str, port: int, replicas: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAGBRIDGE_")}
    env.update(
        MAGBRIDGE_REDIS_URL=redis_url,
        MAGBRIDGE_HOST="127.0.0.1",
        MAGBRIDGE_PORT=str(port),
        MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS="true",
        MAGBRIDGE_LOG_LEVEL="warning",
        MAGBRIDGE_REDIS_MIN_REPLICAS_ACK=str(replicas),
        MAGBRIDGE_REDIS_REPLICA_ACK_TIMEOUT_MS="1000",
    )
    return env


async def _ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            async with session.get(f"{url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        await asyncio.sleep(0.1)


async def _block(
    session: aiohttp.ClientSession, url: str, prefix: str, count: int, concurrency: int
) -> tuple[list[float], float]:
    """Latencies (ms) of ``count`` posts, ``concurrency`` at a time, and the block's wall time (s)."""
    latencies: list[float] = []
    numbers = iter(range(count))

    async def lane() -> None:
        for number in numbers:
            body = {"id": f"{prefix}-{number}", "topic": "contacts/update", "data": {"email": "a@example.com"}}
            started = time.perf_counter()
            async with session.post(f"{url}/webhooks/magnews", json=body) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def _summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    centiles = statistics.quantiles(ordered, n=100)
    return {
        "requests": len(ordered),
        "p50_ms": round(centiles[49], 2),
        "p90_ms": round(centiles[89], 2),
        "p99_ms": round(centiles[98], 2),
        "max_ms": round(ordered[-1], 2),
        "requests_per_s": round(len(ordered) / seconds),
    }


async def _measure(urls: dict[int, str], requests: int, concurrencies: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(limit=max(concurrencies) * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in urls.values():
            await _ready(session, url)
            await _block(session, url, f"warm-{url[-5:]}", 200, 8)
        for concurrency in concurrencies:
            latencies: dict[int, list[float]] = {replicas: [] for replicas in urls}
            seconds = dict.fromkeys(urls, 0.0)
            for block in range(max(1, requests // BLOCK)):
                for replicas, url in urls.items():
                    got, took = await _block(session, url, f"c{concurrency}-r{replicas}-b{block}", BLOCK, concurrency)
                    latencies[replicas] += got
                    seconds[replicas] += took
            for replicas in urls:
                rows.append(
                    {
                        "concurrency": concurrency,
                        "replicas_ack": replicas,
                        **_summary(latencies[replicas], seconds[replicas]),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="per receiver and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        redis_set = SentinelSet(Path(folder), sentinels=0)
        redis_set.start()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            asyncio.run(redis_set.wait_ready())
            urls: dict[int, str] = {}
            for replicas in (0, 1):
                port = free_port()
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bridge.cli", "web"],
                        env=_env(redis_set.nodes[0].url, port, replicas),
                        cwd=folder,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                urls[replicas] = f"http://127.0.0.1:{port}"
            rows = asyncio.run(_measure(urls, args.requests, args.concurrency))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            redis_set.stop()
    print(f"{'concurrency':>11} {'replicas':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'req/s':>6}")
    for row in rows:
        print(
            f"{row['concurrency']:>11} {row['replicas_ack']:>8} {row['p50_ms']:>7} {row['p90_ms']:>7} "
            f"{row['p99_ms']:>7} {row['max_ms']:>7} {row['requests_per_s']:>6}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
