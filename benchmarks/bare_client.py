"""The delivery yardstick: a bare aiohttp client posting MagicBell broadcasts to the simulator.

    python benchmarks/bare_client.py BASE_URL SECONDS [CONCURRENCY]

No Redis, no rules, no ledger: one request per broadcast as fast as ``CONCURRENCY`` loops can go,
on a keep-alive pool. It prints ``{"per_second": ..., "cpu_ms_per_request": ...}``: the most one
process can deliver to this simulator on this machine, and what one request costs it, next to which
the worker's figures are read.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid

import aiohttp
import uvloop


async def post_for(base_url: str, seconds: float, concurrency: int) -> dict[str, float]:
    sent = 0
    headers = {"Authorization": "Bearer sim-magicbell-token"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                key = str(uuid.uuid4())
                body = {"id": key, "title": "bench", "recipients": [{"email": "ops@example.com"}]}
                async with session.post(
                    f"{base_url}/broadcasts", json=body, headers={**headers, "Idempotency-Key": key}
                ) as response:
                    await response.read()
                    response.raise_for_status()
                sent += 1

        started, cpu = time.monotonic(), time.process_time()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return {
            "per_second": sent / (time.monotonic() - started),
            "cpu_ms_per_request": (time.process_time() - cpu) * 1000 / max(sent, 1),
        }


def main() -> None:
    base_url, seconds = sys.argv[1], float(sys.argv[2])
    concurrency = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    print(json.dumps(uvloop.run(post_for(base_url, seconds, concurrency))))


if __name__ == "__main__":
    main()
