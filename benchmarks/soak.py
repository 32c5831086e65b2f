"""A memory soak: the receiver and one worker under a steady load, RSS sampled as it goes.

    python benchmarks/soak.py [--minutes 10] [--rate 200]

Starts a private Redis, the simulators, ``magbridge web`` and ``magbridge worker`` as processes,
sends ``rate`` webhook events per second to 127.0.0.1 for ``minutes``, and prints the resident
memory of web and worker and Redis's used memory every 30 s, then whether every event was delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import PY, Bench, _wait_http, process, wait_finished  # noqa: E402
from tests.redis_server import free_port  # noqa: E402


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _send(url: str, rate: int, seconds: float, pids: dict[str, int], client: redis.Redis) -> int:
    sent = 0
    started = time.monotonic()
    next_sample = started
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(number: int) -> None:
            nonlocal sent
            body = {"id": f"soak-{number}", "topic": "contacts/delete", "data": {"email": f"s{number}@example.com"}}
            async with session.post(url, json=body) as response:
                sent += response.status == 200

        tasks: set[asyncio.Task[None]] = set()
        number = 0
        while (now := time.monotonic()) - started < seconds:
            if now >= next_sample:
                rss = ", ".join(f"{name} {_rss_mib(pid):.0f} MiB" for name, pid in pids.items())
                used = int(client.info("memory")["used_memory"]) / 2**20
                print(f"{now - started:5.0f}s  sent {sent:>7,}  {rss}, redis {used:.0f} MiB", flush=True)
                next_sample += 30
            task = asyncio.create_task(one(number))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            number += 1
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=200)
    args = parser.parse_args()
    bench = Bench(quick=True)
    bench.redis.start()
    bench.redis_config()
    port = free_port()
    env = bench.bridge_env(MAGBRIDGE_PORT=str(port), MAGBRIDGE_HOST="127.0.0.1")
    sim_args = [PY, "-m", "bridge.cli", "simulate", "--magnify-port", str(bench.ports[0]),
                "--magicbell-port", str(bench.ports[1]), "--magnews-port", str(bench.ports[2])]  # fmt: skip
    try:
        with (
            process(sim_args, env, "simulators", bench.peaks),
            process([PY, "-m", "bridge.cli", "web"], env, "web", bench.peaks) as web,
            process([PY, "-m", "bridge.cli", "worker"], env, "worker", bench.peaks) as worker,
        ):
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            client = bench.client()
            pids = {"web": web.pid, "worker": worker.pid}
            url = f"http://127.0.0.1:{port}/webhooks/magnews"
            sent = asyncio.run(_send(url, args.rate, args.minutes * 60, pids, client))
            wait_finished(client, sent, timeout=300)
            print(f"sent {sent:,}, all delivered")
    finally:
        bench.redis.stop()


if __name__ == "__main__":
    main()
