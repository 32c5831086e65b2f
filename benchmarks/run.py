"""The magbridge benchmark: real processes on loopback, one run, a table and a JSON report.

    python benchmarks/run.py [--quick] [--json benchmarks/results/latest.json]

Starts a private Redis (AOF everysec, noeviction), the simulators (``magbridge simulate``),
``magbridge web`` and ``magbridge worker`` as processes, drives them with wrk (64 connections,
~1 KB bodies) and a lean paced sender (``benchmarks/paced_sender.py``), and measures side by side:

- ingest: events/s and p50/p99 of ``POST /webhooks/magnews``, next to a bare aiohttp handler;
- delivery: events/s from queued to acknowledged by the MagicBell simulator, at 0 and 50 ms
  simulated latency, next to a bare aiohttp client posting to the same simulator, and Magnews
  contacts merged per second;
- end-to-end latency (receipt to delivery) at a steady 1,000 events/s;
- peak RSS of each process and Redis memory per retained event;
- the naive baseline (one arq job per event, ``enqueue_job`` per request, arq defaults).

Every request goes to 127.0.0.1 only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from arq.constants import default_queue_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.paced_sender import send_paced  # noqa: E402
from bridge.events import Envelope, magnify_envelope  # noqa: E402
from bridge.store.connections import open_redis  # noqa: E402
from bridge.store.ingest import EventWriter  # noqa: E402
from config.settings import Settings  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402

PY = sys.executable
TOKENS = {
    "MAGBRIDGE_MAGICBELL_TOKEN": "sim-magicbell-token",
    "MAGBRIDGE_MAGNEWS_TOKEN": "sim-magnews-token",
    "MAGBRIDGE_MAGNEWS_DATABASE_ID": "7",
    "MAGBRIDGE_MAGICBELL_RECIPIENTS": "ops@example.com",
    "MAGBRIDGE_MAGICBELL_MAX_RPS": "0",
    "MAGBRIDGE_MAGNEWS_MAX_RPS": "0",
    "MAGBRIDGE_MAGICBELL_MAX_CONCURRENCY": "200",
    "MAGBRIDGE_MAGNEWS_MAX_CONCURRENCY": "200",
    # wrk and the paced sender post without a token, as the measurements before the secret became
    # required did; the receiver's token check costs one SHA-256 and one compare per request.
    "MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS": "true",
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGBRIDGE_")}
    env.update(extra)
    return env


def _wait_http(url: str, timeout: float = 20) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def process(
    args: list[str], env: dict[str, str], name: str, peaks: dict[str, float]
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            peaks[name] = max(peaks.get(name, 0.0), _peak_rss_mib(proc.pid))
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wrk(url: str, seconds: int, connections: int = 64) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", str(ROOT / "benchmarks/post_events.lua"), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    line = next(line for line in out.splitlines() if line.startswith("WRKJSON "))
    data = json.loads(line.removeprefix("WRKJSON "))
    return {
        "requests": data["requests"],
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": data["errors"] + data["non2xx"],
    }


def sim_records(base_url: str, path: str) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/_sim/requests?path={path}&method=POST", timeout=30) as response:
        records: list[dict[str, Any]] = json.loads(response.read())
    return records


def sim_post(base_url: str, route: str, body: dict[str, Any]) -> None:
    import urllib.request

    request = urllib.request.Request(f"{base_url}{route}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10):
        pass


async def preload(redis_url: str, envelopes: list[Envelope]) -> None:
    """Store and queue ``envelopes`` 500 at a time, as the receiver does under a burst."""
    client = open_redis(redis_url)
    settings = Settings()
    writer = EventWriter(
        client,
        retention_seconds=settings.retention_seconds,
        record_retention_seconds=settings.record_retention_seconds,
        batch_size=settings.worker_batch_size,
    )
    for start in range(0, len(envelopes), 500):
        await writer.ingest(envelopes[start : start + 500])
    await client.aclose()


def wait_finished(client: redis.Redis, expected: int, timeout: float) -> float:
    """Seconds until ``expected`` events are stored and none is pending (all final); Redis starts empty."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with client.pipeline(transaction=False) as pipe:
            stored, pending = pipe.zcard("mb:events").zcard("mb:pending").execute()
        if stored >= expected and pending == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"only part of {expected} events finished within {timeout}s")


def delivery_rate(records: list[dict[str, Any]], status: int) -> float:
    times = sorted(r["at"] for r in records if r["status"] == status)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


class Bench:
    def __init__(self, quick: bool):
        self.quick = quick
        self.seconds = 5 if quick else 10
        self.events = 3000 if quick else 15000
        self.peaks: dict[str, float] = {}
        self.results: dict[str, Any] = {"machine": {"cores": os.cpu_count()}}
        self.tmp = Path(tempfile.mkdtemp(prefix="magbridge-bench-"))
        self.redis = RedisServer(self.tmp, appendonly=True)
        self.ports = [free_port() for _ in range(3)]

    @property
    def magicbell(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}"

    @property
    def magnews(self) -> str:
        return f"http://127.0.0.1:{self.ports[2]}"

    def bridge_env(self, **extra: str) -> dict[str, str]:
        return _env(
            MAGBRIDGE_REDIS_URL=self.redis.url,
            MAGBRIDGE_MAGICBELL_BASE_URL=self.magicbell,
            MAGBRIDGE_MAGNEWS_BASE_URL=self.magnews,
            **TOKENS,
            **extra,
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def reset(self) -> None:
        self.client().flushall()
        sim_post(self.magicbell, "/_sim/reset", {})
        sim_post(self.magnews, "/_sim/reset", {})

    def ingest(self) -> None:
        port = free_port()
        with process([PY, "benchmarks/bare_server.py", str(port)], _env(), "bare aiohttp", self.peaks) as bare:
            time.sleep(1.0)  # the bare server has no GET route to poll
            cpu = _cpu_seconds(bare.pid)
            self.results["ingest_bare"] = result = wrk(f"http://127.0.0.1:{port}", self.seconds)
            result["cpu_ms_per_request"] = (_cpu_seconds(bare.pid) - cpu) * 1000 / result["requests"]
        self.reset()
        port = free_port()
        env = self.bridge_env(MAGBRIDGE_PORT=str(port), MAGBRIDGE_HOST="127.0.0.1")
        with process([PY, "-m", "bridge.cli", "web"], env, "magbridge web", self.peaks) as web:
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            used_before = int(self.client().info("memory")["used_memory"])
            cpu = _cpu_seconds(web.pid)
            self.results["ingest_magbridge"] = result = wrk(f"http://127.0.0.1:{port}", self.seconds)
            result["cpu_ms_per_request"] = (_cpu_seconds(web.pid) - cpu) * 1000 / result["requests"]
            stored = int(self.client().zcard("mb:events"))
            used_after = int(self.client().info("memory")["used_memory"])
        result["stored"] = stored
        self.results["redis_bytes_per_event"] = (used_after - used_before) / max(stored, 1)
        self.results["ingest_ratio"] = result["rps"] / self.results["ingest_bare"]["rps"]

    def bare_client(self) -> None:
        """What one bare aiohttp process can post to this simulator here: the delivery yardstick."""
        self.reset()
        sim_post(self.magicbell, "/_sim/faults", {"latency_ms": 0})
        out = subprocess.run(
            [PY, "benchmarks/bare_client.py", self.magicbell, str(self.seconds)],
            capture_output=True, text=True, check=True, timeout=self.seconds + 60, cwd=ROOT,
        ).stdout  # fmt: skip
        self.results["delivery_bare_client"] = json.loads(out)

    def deliver(self, label: str, latency_ms: float, envelopes: list[Envelope], path: str) -> None:
        self.reset()
        sim_post(self.magicbell, "/_sim/faults", {"latency_ms": latency_ms})
        sim_post(self.magnews, "/_sim/faults", {"latency_ms": latency_ms})
        env = self.bridge_env()
        with process([PY, "-m", "bridge.cli", "worker"], env, "magbridge worker", self.peaks) as worker:
            time.sleep(2.0)  # started and idle, so its CPU time from here on is the events' alone
            cpu = _cpu_seconds(worker.pid)
            asyncio.run(preload(self.redis.url, envelopes))
            wait_finished(self.client(), len(envelopes), timeout=300)
            cpu_ms_per_event = (_cpu_seconds(worker.pid) - cpu) * 1000 / len(envelopes)
        base = self.magicbell if path == "/broadcasts" else self.magnews
        records = sim_records(base, path)
        if path == "/broadcasts":
            rate = delivery_rate(records, 201)
        else:
            times = sorted(r["at"] for r in records if r["status"] == 200)
            contacts = sum(len(r["body"].get("contacts", [1])) for r in records if r["status"] == 200)
            rate = contacts / (times[-1] - times[0]) if len(times) > 1 else 0.0
        self.results[label] = {"events": len(envelopes), "per_second": rate, "cpu_ms_per_event": cpu_ms_per_event}

    def end_to_end(self, rate: int) -> None:
        self.reset()
        sim_post(self.magicbell, "/_sim/faults", {"latency_ms": 0})
        port = free_port()
        env = self.bridge_env(MAGBRIDGE_PORT=str(port), MAGBRIDGE_HOST="127.0.0.1")
        seconds = 5 if self.quick else 10
        with (
            process([PY, "-m", "bridge.cli", "web"], env, "magbridge web", self.peaks),
            process([PY, "-m", "bridge.cli", "worker"], env, "magbridge worker", self.peaks),
        ):
            _wait_http(f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}/webhooks/magnews"
            sender = asyncio.run(send_paced(url, paced_body(f"e2e{rate}"), rate=rate, seconds=seconds))
            sent = sender.ok
            wait_finished(self.client(), sent, timeout=120)
        client = self.client()
        latencies = []
        for record in sim_records(self.magicbell, "/broadcasts"):
            event_id = record["body"]["custom_attributes"]["magbridge_event_id"]
            received = int(client.hget(f"mb:event:{event_id}", "received_at") or 0)
            latencies.append(record["at"] * 1000 - received)
        latencies.sort()
        self.results[f"end_to_end_{rate}"] = {
            "events": sent,
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
            "refused": sender.failed,
            "sender_cpu_ms_per_request": sender.cpu_ms_per_request,
        }

    def naive(self) -> None:
        self.reset()
        port = free_port()
        env = _env(REDIS_URL=self.redis.url, MAGICBELL_URL=self.magicbell)
        with process([PY, "benchmarks/naive.py", "web", str(port)], env, "naive web", self.peaks):
            time.sleep(1.0)
            self.results["ingest_naive"] = wrk(f"http://127.0.0.1:{port}", self.seconds)
        queued = int(self.client().zcard(default_queue_name))
        started = time.monotonic()
        with process([PY, "benchmarks/naive.py", "worker"], env, "naive worker", self.peaks):
            limit = 60 if self.quick else 120
            while self.client().zcard(default_queue_name) > 0 and time.monotonic() - started < limit:
                time.sleep(0.2)
        rate = delivery_rate(sim_records(self.magicbell, "/broadcasts"), 201)
        self.results["delivery_naive"] = {"events": queued, "per_second": rate}

    def run(self) -> dict[str, Any]:
        self.redis.start()
        self.redis_config()
        sim_args = [PY, "-m", "bridge.cli", "simulate", "--magnify-port", str(self.ports[0]),
                    "--magicbell-port", str(self.ports[1]), "--magnews-port", str(self.ports[2])]  # fmt: skip
        try:
            with process(sim_args, _env(), "simulators", self.peaks):
                _wait_http(f"{self.magicbell}/_sim/state")
                self.ingest()
                self.bare_client()
                broadcasts = [_broadcast_event(n) for n in range(self.events)]
                self.deliver("delivery_0ms", 0, broadcasts, "/broadcasts")
                self.deliver("delivery_50ms", 50, [_broadcast_event(n, "l") for n in range(self.events)], "/broadcasts")
                merges = [magnify_envelope(_engagement(n)) for n in range(self.events)]
                self.deliver("magnews_merges", 0, merges, "/v19/contacts")
                self.end_to_end(1000)
                self.end_to_end(200)
                self.naive()
        finally:
            self.redis.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.results["peak_rss_mib"] = self.peaks
        return self.results

    def redis_config(self) -> None:
        client = self.client()
        client.config_set("appendfsync", "everysec")
        client.config_set("maxmemory-policy", "noeviction")


def _broadcast_event(number: int, prefix: str = "d") -> Envelope:
    return Envelope(id=f"{prefix}-{number}", source="magnews", type="contacts/delete",
                    occurred_at="2025-11-14T13:00:00.000Z",
                    payload={"topic": "contacts/delete", "data": {"email": f"u{number}@example.com"}})  # fmt: skip


def _engagement(number: int) -> dict[str, Any]:
    return {
        "account": {"id": "acc_1", "name": "Acme"},
        "user": {"id": f"user_{number}", "name": f"User {number}"},
        "motion": {"id": "00000000-0000-0000-0000-000000000001", "name": "M", "version": "1"},
        "emailEvent": {"templateId": "t", "templateVersion": 1, "type": "magnify_send_email_open"},
        "occurredAt": 1640995200000 + number,
    }


def paced_body(prefix: str) -> Callable[[int], bytes]:
    """The n-th paced webhook: a contact deleted, which the default rules turn into one broadcast."""

    def body(number: int) -> bytes:
        event = {"id": f"{prefix}-{number}", "topic": "contacts/delete", "data": {"email": f"e{number}@example.com"}}
        return json.dumps(event).encode()

    return body


def _latency(result: dict[str, Any]) -> str:
    return f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"


def _end_to_end_row(rate: int, result: dict[str, Any]) -> tuple[str, str, str]:
    return (
        f"end to end at {rate:,} ev/s",
        f"p50 {result['p50_ms']:.0f} ms",
        f"p99 {result['p99_ms']:.0f} ms, {result['events']:,} events, {result['refused']} refused; "
        f"sender {result['sender_cpu_ms_per_request']:.3f} ms CPU per request",
    )


def table(results: dict[str, Any]) -> str:
    r = results
    rows = [
        ("ingest, bare aiohttp handler", f"{r['ingest_bare']['rps']:,.0f} req/s",
         f"{_latency(r['ingest_bare'])}; {r['ingest_bare']['cpu_ms_per_request']:.2f} ms CPU per request"),
        ("ingest, magbridge web (stored + queued)", f"{r['ingest_magbridge']['rps']:,.0f} ev/s",
         f"{_latency(r['ingest_magbridge'])}; {r['ingest_ratio']:.0%} of bare; "
         f"{r['ingest_magbridge']['cpu_ms_per_request']:.2f} ms CPU per request"),
        ("ingest, naive (enqueue_job per request)", f"{r['ingest_naive']['rps']:,.0f} ev/s",
         _latency(r["ingest_naive"])),
        ("delivery, bare aiohttp client (no bridge)", f"{r['delivery_bare_client']['per_second']:,.0f} req/s",
         f"the most one process posts to the simulator here; "
         f"{r['delivery_bare_client']['cpu_ms_per_request']:.2f} ms CPU per request"),
        ("delivery, 1 worker, 0 ms API latency", f"{r['delivery_0ms']['per_second']:,.0f} ev/s",
         f"{r['delivery_0ms']['events']:,} broadcasts; "
         f"{r['delivery_0ms']['per_second'] / r['delivery_bare_client']['per_second']:.0%} of the bare client; "
         f"{r['delivery_0ms']['cpu_ms_per_event']:.2f} ms CPU per event"),
        ("delivery, 1 worker, 50 ms API latency", f"{r['delivery_50ms']['per_second']:,.0f} ev/s",
         f"{r['delivery_50ms']['events']:,} broadcasts; {r['delivery_50ms']['cpu_ms_per_event']:.2f} ms CPU per event"),
        ("delivery, naive worker (arq defaults)", f"{r['delivery_naive']['per_second']:,.0f} ev/s",
         f"{r['delivery_naive']['events']:,} broadcasts"),
        ("Magnews merges, 1 worker (batchmerge)", f"{r['magnews_merges']['per_second']:,.0f} contacts/s",
         f"{r['magnews_merges']['events']:,} events; {r['magnews_merges']['cpu_ms_per_event']:.2f} ms CPU per event"),
        _end_to_end_row(1000, r["end_to_end_1000"]),
        _end_to_end_row(200, r["end_to_end_200"]),
        ("Redis memory per retained event", f"{r['redis_bytes_per_event']:,.0f} B",
         "in flight: event, dedupe marker, indexes, its place in a job's batch (at rest: benchmarks/memory.py)"),
    ]  # fmt: skip
    rows += [(f"peak RSS, {name}", f"{mib:.0f} MiB", "") for name, mib in r["peak_rss_mib"].items()]
    width = max(len(row[0]) for row in rows)
    lines = [f"| {'what'.ljust(width)} | result | notes |", f"|{'-' * (width + 2)}|---|---|"]
    lines += [f"| {name.ljust(width)} | {value} | {notes} |" for name, value, notes in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter phases (about a minute in all)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/latest.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk (make bench installs it)")
    started = time.monotonic()
    results = Bench(args.quick).run()
    results["elapsed_s"] = time.monotonic() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\n{results['elapsed_s']:.0f}s; JSON in {args.json}")


if __name__ == "__main__":
    main()
