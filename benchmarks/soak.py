"""A memory soak: the receiver and one worker under a steady load, RSS sampled as it goes.

    python benchmarks/soak.py [--minutes 10] [--rate 200]

Starts a private Redis, the simulators, ``magbridge web`` and ``magbridge worker`` as processes,
sends ``rate`` webhook events per second to 127.0.0.1 for ``minutes`` (``benchmarks/paced_sender.py``),
and prints the events accepted so far, the resident memory of web and worker and Redis's used
memory every 30 s, then whether every event was delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.paced_sender import send_paced  # noqa: E402
from benchmarks.run import PY, Bench, _wait_http, paced_body, process, wait_finished  # noqa: E402
from tests.support.redis_server import free_port  # noqa: E402


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _sample(pids: dict[str, int], client: redis.Redis) -> None:
    """Every 30 s: events accepted so far, each process's RSS and Redis's used memory."""
    started = time.monotonic()
    while True:
        rss = ", ".join(f"{name} {_rss_mib(pid):.0f} MiB" for name, pid in pids.items())
        used = int(client.info("memory")["used_memory"]) / 2**20
        accepted = int(client.zcard("mb:events"))
        print(f"{time.monotonic() - started:5.0f}s  accepted {accepted:>7,}  {rss}, redis {used:.0f} MiB", flush=True)
        await asyncio.sleep(30)


async def _soak(url: str, rate: int, seconds: int, pids: dict[str, int], client: redis.Redis) -> int:
    """Send ``rate`` events a second for ``seconds`` while sampling memory; returns how many were accepted."""
    sampler = asyncio.create_task(_sample(pids, client))
    try:
        result = await send_paced(url, paced_body("soak"), rate=rate, seconds=seconds)
    finally:
        sampler.cancel()
    return result.ok


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
            sent = asyncio.run(_soak(url, args.rate, int(args.minutes * 60), pids, client))
            wait_finished(client, sent, timeout=300)
            print(f"sent {sent:,}, all delivered")
    finally:
        bench.redis.stop()


if __name__ == "__main__":
    main()
