"""The operator console's speed with a full store: every page timed over real HTTP.

    python benchmarks/console.py [--events 100000] [--requests 200] [--json benchmarks/results/console.json]

Starts a private Redis, the simulators (``magbridge simulate``), ``magbridge web`` and ``magbridge
worker`` as processes. Stores ``--events`` webhook events through the store's own writer
(``EventWriter``, as ``benchmarks/run.py`` preloads), a mix of ignored updates, broadcasts (2% of
which MagicBell refuses with a 400: dead letters) and Magnify engagement merges, lets the worker
deliver them all (and poll the simulator's Magnify account), registers the Magnews subscription,
then stops the worker and logs in to the console. Each page is then asked for ``--requests`` times
in a row by one client over loopback (after a warm-up) and timed from request to last byte: median,
p99 and max, and the Redis commands one request costs (``INFO commandstats``, which also shows that
no page ran ``SCAN`` or ``KEYS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import TOKENS, _env, _wait_http, preload, process, sim_post, wait_finished  # noqa: E402  # noqa: E402
from bridge.events import Envelope, magnify_envelope  # noqa: E402
from bridge.store import keys  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402

PY = sys.executable
ADMIN_TOKEN = "console-benchmark-admin-token-0123456789"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _magnews(number: int, topic: str) -> Envelope:
    payload = {
        "id": f"{topic.replace('/', '-')}-{number}",
        "topic": topic,
        "timestamp": "2025-11-14T13:00:00Z",
        "data": {"idcontact": number, "iddatabase": 7, "email": f"u{number}@example.com", "fields": {"name": "Ada"}},
    }
    return Envelope(payload["id"], "magnews", topic, "2025-11-14T13:00:00.000Z", payload)


def _magnify(number: int) -> Envelope:
    return magnify_envelope(
        {
            "account": {"id": "acc_1", "name": "Acme"},
            "user": {"id": f"user_{number % 5000}", "name": f"User {number}"},
            "motion": {"id": "00000000-0000-0000-0000-000000000001", "name": "M", "version": "1"},
            "emailEvent": {"templateId": "t", "templateVersion": 1, "type": "magnify_send_email_open"},
            "occurredAt": 1640995200000 + number,
        }
    )


def workload(count: int) -> list[Envelope]:
    """40% ignored updates, 20% deletions and 10% bounces (broadcasts), 30% Magnify opens (merges)."""
    kinds = ["contacts/update"] * 4 + ["contacts/delete"] * 2 + ["communications/msg/bounce"] + ["magnify"] * 3
    return [_magnify(n) if kinds[n % 10] == "magnify" else _magnews(n, kinds[n % 10]) for n in range(count)]


class Client:
    """One logged-in browser's worth of console over HTTP."""

    def __init__(self, base: str, session: aiohttp.ClientSession):
        self.base = base
        self.session = session

    async def login(self) -> None:
        async with self.session.get(f"{self.base}/console/login") as response:
            csrf = _CSRF.search(await response.text())
        assert csrf is not None
        form = {"csrf": csrf.group(1), "token": ADMIN_TOKEN, "next": "/console/"}
        async with self.session.post(f"{self.base}/console/login", data=form, allow_redirects=False) as response:
            assert response.status == 303, response.status

    async def csrf(self) -> str:
        async with self.session.get(f"{self.base}/console/") as response:
            found = _CSRF.search(await response.text())
        assert found is not None
        return found.group(1)

    async def once(self, method: str, path: str, data: Any = None) -> tuple[float, int, int]:
        started = time.perf_counter()
        async with self.session.request(method, self.base + path, data=data, allow_redirects=False) as response:
            body = await response.read()
        return (time.perf_counter() - started) * 1000, response.status, len(body)


def _commands(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


Page = tuple[str, str, str, list[tuple[str, str]] | None]


async def time_pages(base: str, pages: list[Page], requests: int, store: redis.Redis) -> list[dict[str, Any]]:
    rows = []
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as anonymous,
    ):
        client = Client(base, session)
        await client.login()
        csrf = await client.csrf()
        for name, method, path, fields in pages:
            body = None if fields is None else [*fields, ("csrf", csrf)]
            # The login form is for those without a session (it redirects the others).
            client = Client(base, anonymous if path == "/console/login" else session)
            for _ in range(10):  # warm-up: connections, template compilation, caches
                await client.once(method, path, body)
            store.config_resetstat()
            timings = []
            for _ in range(requests):
                ms, status, size = await client.once(method, path, body)
                assert status == 200, (name, status)
                timings.append(ms)
            commands = _commands(store)
            timings.sort()
            rows.append(
                {
                    "page": name,
                    "path": path,
                    "median_ms": statistics.median(timings),
                    "p99_ms": timings[max(0, int(len(timings) * 0.99) - 1)],
                    "max_ms": timings[-1],
                    "bytes": size,
                    "redis_commands": round(sum(commands.values()) / requests, 1),
                    "scans": sum(commands.get(name, 0) for name in ("scan", "keys")),
                }
            )
            print(f"  {name:<40} median {rows[-1]['median_ms']:6.1f} ms  p99 {rows[-1]['p99_ms']:6.1f} ms", flush=True)
    return rows


def table(rows: list[dict[str, Any]], stored: int) -> str:
    lines = [
        f"| page ({stored:,} events stored) | median | p99 | max | Redis commands per request |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['page']} | {row['median_ms']:.1f} ms | {row['p99_ms']:.1f} ms | {row['max_ms']:.1f} ms "
            f"| {row['redis_commands']:g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/console.json")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="magbridge-console-bench-"))
    server = RedisServer(tmp)
    ports = [free_port() for _ in range(4)]
    magnify, magicbell, magnews, web_port = ports
    base = f"http://127.0.0.1:{web_port}"
    peaks: dict[str, float] = {}
    server.start()
    try:
        store = redis.Redis.from_url(server.url)
        env = _env(
            MAGBRIDGE_REDIS_URL=server.url,
            MAGBRIDGE_HOST="127.0.0.1",
            MAGBRIDGE_PORT=str(web_port),
            MAGBRIDGE_PUBLIC_URL=base,
            MAGBRIDGE_ADMIN_TOKEN=ADMIN_TOKEN,
            MAGBRIDGE_MAGICBELL_BASE_URL=f"http://127.0.0.1:{magicbell}",
            MAGBRIDGE_MAGNEWS_BASE_URL=f"http://127.0.0.1:{magnews}",
            MAGBRIDGE_MAGNIFY_BASE_URL=f"http://127.0.0.1:{magnify}/v1/partner",
            MAGBRIDGE_MAGNIFY_TOKEN_URL=f"http://127.0.0.1:{magnify}/oauth2/token",
            MAGBRIDGE_MAGNIFY_CLIENT_ID="sim-client",
            MAGBRIDGE_MAGNIFY_CLIENT_SECRET="sim-secret",
            MAGBRIDGE_MAGNIFY_START="everything",
            MAGBRIDGE_LOG_LEVEL="warning",
            **TOKENS,
        )
        sim_args = [PY, "-m", "bridge.cli", "simulate", "--magnify-port", str(magnify),
                    "--magicbell-port", str(magicbell), "--magnews-port", str(magnews)]  # fmt: skip
        with (
            process(sim_args, _env(), "simulators", peaks),
            process([PY, "-m", "bridge.cli", "web"], env, "magbridge web", peaks) as web,
        ):
            _wait_http(f"http://127.0.0.1:{magicbell}/_sim/state")
            _wait_http(f"{base}/healthz")
            sim_post(f"http://127.0.0.1:{magicbell}", "/_sim/faults", {"error_rate": 0.02, "error_status": 400})
            started = time.monotonic()
            print(f"storing {args.events:,} events ...", flush=True)
            asyncio.run(preload(server.url, workload(args.events)))
            print(f"  stored in {time.monotonic() - started:.0f}s; delivering ...", flush=True)
            with process([PY, "-m", "bridge.cli", "worker"], env, "magbridge worker", peaks):
                wait_finished(store, args.events, timeout=1800)
                while not store.exists(keys.MAGNIFY_LAST_CYCLE):  # the worker's first Magnify poll
                    time.sleep(0.2)
                wait_finished(store, args.events, timeout=600)
            print(f"  delivered in {time.monotonic() - started:.0f}s", flush=True)
            subprocess.run(
                [PY, "-m", "bridge.cli", "magnews-webhook", "register"], env=env, check=True, capture_output=True
            )
            stored, dead = int(store.zcard(keys.EVENTS_INDEX)), int(store.zcard(keys.DEAD_INDEX))
            dead_ids = [member.decode() for member in store.zrange(keys.DEAD_INDEX, 0, 49)]
            broadcast = _magnews(4, "contacts/delete").id  # the workload's first deletion
            pages: list[Page] = [
                ("login form", "GET", "/console/login", None),
                ("overview", "GET", "/console/", None),
                ("events, newest 50", "GET", "/console/events", None),
                ("events, type contacts/delete", "GET", "/console/events?type=contacts%2Fdelete", None),
                ("events, status failed (2% match)", "GET", "/console/events?status=failed", None),
                ("events, received in the last 10 min", "GET", "/console/events?since=10m", None),
                ("event detail (a delivered broadcast)", "GET", f"/console/events/{broadcast}", None),
                ("dead letters, newest 50", "GET", "/console/dead-letters", None),
                ("replay preview of 50 dead letters (dry run)", "POST", "/console/replay/preview",
                 [("scope", "selected"), *(("event_id", event_id) for event_id in dead_ids)]),
                ("Magnify checkpoints", "GET", "/console/magnify", None),
                ("Magnews subscription (asks the simulator)", "GET", "/console/magnews", None),
            ]  # fmt: skip
            print(f"timing {len(pages)} pages, {args.requests} requests each ({stored:,} events, {dead:,} dead)")
            cpu_before = _cpu(web.pid)
            rows = asyncio.run(time_pages(base, pages, args.requests, store))
            cpu_ms = (_cpu(web.pid) - cpu_before) * 1000 / (len(pages) * (args.requests + 10))
        results = {
            "events_stored": stored,
            "dead_letters": dead,
            "requests_per_page": args.requests,
            "web_cpu_ms_per_request": cpu_ms,
            "machine": {"cores": os.cpu_count()},
            "pages": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print()
        print(table(rows, stored))
        print(f"\nweb CPU {cpu_ms:.1f} ms per request on average; no page ran SCAN or KEYS: "
              f"{all(row['scans'] == 0 for row in rows)}; JSON in {args.json}")  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
