"""Redis bytes per event at rest, by record kind, and the sizing table (docs/performance.md#sizing).

    python benchmarks/memory.py [--events 2000] [--json benchmarks/results/memory.json]

Starts a private Redis, the simulators and one ``magbridge worker``; stores ``--events`` events of
about 1 KB (the wrk bodies' size) and lets the worker deliver them to the MagicBell simulator, then
as many again that MagicBell refuses for good (422: dead letters). At rest it measures
``MEMORY USAGE`` of every key of each kind (the event record, its actions, its ledger entries, its
dedupe marker), each index's bytes per member, and ``used_memory`` per event, and prints the table
of bytes per event by kind and the sizing table (events per day -> Redis memory) computed from the
measured kinds and the default windows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import PY, TOKENS, _env, _wait_http, preload, process, sim_post  # noqa: E402
from bridge.events import Envelope  # noqa: E402
from bridge.store import keys  # noqa: E402
from config.settings import Settings  # noqa: E402
from tests.support.redis_server import RedisServer, free_port  # noqa: E402

_PADDING = "x" * 800  # about 1 KB payloads, as benchmarks/post_events.lua posts
DAILY_EVENTS = (100_000, 1_000_000, 10_000_000, 86_400_000)  # the last: 1,000 events/s


def _event(number: int, prefix: str) -> Envelope:
    payload = {"topic": "contacts/delete", "data": {"email": f"u{number}@example.com", "note": _PADDING}}
    return Envelope(id=f"{prefix}-{number:08d}", source="magnews", type="contacts/delete",
                    occurred_at="2025-11-14T13:00:00.000Z", payload=payload)  # fmt: skip


def _kinds() -> dict[str, str]:
    """Record kind -> key prefix; the dedupe marker only where this version of the bridge has one."""
    kinds = {"event record": keys.EVENT_PREFIX, "actions": keys.ACTIONS_PREFIX, "ledger": keys.LEDGER_PREFIX}
    seen = getattr(keys, "SEEN_PREFIX", None)
    if seen is not None:
        kinds["dedupe marker"] = seen
    return kinds


def _key_bytes(client: redis.Redis, prefix: str, ids: list[str]) -> tuple[float, int]:
    """Mean ``MEMORY USAGE`` of the keys of one kind that belong to ``ids``, and how many exist (a
    kind with several keys per event, the ledger, is found by a scan)."""
    if prefix == keys.LEDGER_PREFIX:
        found = [key for key in client.scan_iter(match=prefix + "*", count=1000)]
    else:
        found = [prefix + event_id for event_id in ids if client.exists(prefix + event_id)]
    sizes = [int(client.memory_usage(key, samples=0) or 0) for key in found]
    return (sum(sizes) / len(ids) if ids else 0.0), len(found)


def _other_keys(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Every key family not measured per event (arq's job results, counters, the gate): keys, bytes."""
    counted = tuple(_kinds().values())
    families: dict[str, dict[str, int]] = {}
    for raw in client.scan_iter(count=1000):
        key = raw.decode()
        if key.startswith(counted):
            continue
        family = ":".join(key.split(":")[:2])
        entry = families.setdefault(family, {"keys": 0, "bytes": 0})
        entry["keys"] += 1
        entry["bytes"] += int(client.memory_usage(key, samples=0) or 0)
    return families


def _index_bytes(client: redis.Redis, key: str) -> float:
    members = int(client.zcard(key))
    return int(client.memory_usage(key, samples=0) or 0) / members if members else 0.0


def _wait_final(client: redis.Redis, expected: int, timeout: float = 300) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if client.zcard(keys.PENDING_INDEX) == 0 and client.zcard(keys.EVENTS_INDEX) >= expected:
            return
        time.sleep(0.1)
    raise RuntimeError(f"events still pending after {timeout}s")


def measure(count: int, listpack_value: int | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="magbridge-mem-"))
    server = RedisServer(tmp)
    ports = [free_port() for _ in range(3)]
    magicbell = f"http://127.0.0.1:{ports[1]}"
    peaks: dict[str, float] = {}
    server.start()
    client = redis.Redis.from_url(server.url)
    if listpack_value is not None:  # a Redis setting, not the bridge's: docs/performance.md#sizing
        client.config_set("hash-max-listpack-value", listpack_value)
    sim_args = [PY, "-m", "bridge.cli", "simulate", "--magnify-port", str(ports[0]),
                "--magicbell-port", str(ports[1]), "--magnews-port", str(ports[2])]  # fmt: skip
    env = _env(MAGBRIDGE_REDIS_URL=server.url, MAGBRIDGE_MAGICBELL_BASE_URL=magicbell,
               MAGBRIDGE_MAGNEWS_BASE_URL=f"http://127.0.0.1:{ports[2]}", **TOKENS)  # fmt: skip
    result: dict[str, Any] = {"events": count, "hash-max-listpack-value": client.config_get("hash-max-listpack-value")}
    try:
        with process(sim_args, _env(), "simulators", peaks):
            _wait_http(f"{magicbell}/_sim/state")
            with process([PY, "-m", "bridge.cli", "worker"], env, "worker", peaks):
                time.sleep(2.0)
                before = int(client.info("memory")["used_memory"])
                delivered = [_event(n, "ok") for n in range(count)]
                asyncio.run(preload(server.url, delivered))
                _wait_final(client, count)
                after_delivered = int(client.info("memory")["used_memory"])
                sim_post(magicbell, "/_sim/faults", {"error_rate": 1.0, "error_status": 422})
                dead = [_event(n, "dead") for n in range(count)]
                asyncio.run(preload(server.url, dead))
                _wait_final(client, 2 * count)
                after_dead = int(client.info("memory")["used_memory"])
        result["used_memory_per_delivered"] = (after_delivered - before) / count
        result["used_memory_per_dead_letter"] = (after_dead - after_delivered) / count
        for group, batch in (("delivered", delivered), ("dead letter", dead)):
            ids = [envelope.id for envelope in batch]
            kinds = _kinds()
            if group == "dead letter":
                kinds.pop("ledger")  # nothing delivered: no ledger entry
            for kind, prefix in kinds.items():
                mean, found = _key_bytes(client, prefix, ids)
                result[f"{group}: {kind}"] = {"bytes": mean, "keys": found}
        result["ttl_ms"] = _check_windows(client, delivered[0].id, Settings())
        result["other keys"] = _other_keys(client)
        result["index: mb:events per member"] = _index_bytes(client, keys.EVENTS_INDEX)
        result["index: mb:dead per member"] = _index_bytes(client, keys.DEAD_INDEX)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def kinds_table(result: dict[str, Any]) -> str:
    lines = ["| record kind | bytes per event | keys |", "|---|---:|---:|"]
    for name, value in result.items():
        if isinstance(value, dict) and isinstance(value.get("bytes"), float):
            lines.append(f"| {name} | {value['bytes']:,.0f} | {value['keys']:,} |")
        elif name.startswith("index:"):
            lines.append(f"| {name} | {value:,.0f} | |")
    for family, entry in result["other keys"].items():
        lines.append(f"| (other) {family}: {entry['keys']:,} keys, {entry['bytes']:,} B in all | | |")
    lines.append(f"| used_memory per delivered event (all of it) | {result['used_memory_per_delivered']:,.0f} | |")
    lines.append(f"| used_memory per dead letter (all of it) | {result['used_memory_per_dead_letter']:,.0f} | |")
    return "\n".join(lines)


def sizing(result: dict[str, Any], dedupe_days: float, record_hours: float) -> float:
    """Bytes at rest per event received a day, from the measured kinds, when each keeps its own
    window: the dedupe marker the dedupe window; a delivered record, its actions, its ledger entries
    and its listing entry the record retention. Dead letters are extra: each is kept until handled."""
    record = sum(result[f"delivered: {kind}"]["bytes"] for kind in ("event record", "actions", "ledger"))
    record += result["index: mb:events per member"]
    marker = result.get("delivered: dedupe marker", {"bytes": 0.0})["bytes"]
    return float(record * record_hours / 24 + marker * dedupe_days)


def sizing_columns(result: dict[str, Any], settings: Settings) -> dict[str, float]:
    """Bytes per daily event: before the windows were separated (everything kept the dedupe window,
    no marker), with ``settings``' windows, and with a one-hour record retention."""
    days = settings.retention_seconds / 86400
    record_hours = settings.record_retention_seconds / 3600
    before = {**result, "delivered: dedupe marker": {"bytes": 0.0}}
    return {
        f"before: everything {days:g} days": sizing(before, days, days * 24),
        f"records {record_hours:g} h, markers {days:g} days": sizing(result, days, record_hours),
        f"records 1 h, markers {days:g} days": sizing(result, days, 1),
    }


def sizing_table(columns: dict[str, float]) -> str:
    lines = ["| events per day | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
    for daily in DAILY_EVENTS:
        cells = [f"{daily * per_event / 2**30:,.1f} GiB" for per_event in columns.values()]
        lines.append(f"| {daily:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check_windows(client: redis.Redis, event_id: str, settings: Settings) -> dict[str, int]:
    """The expiry (ms) of one delivered event's keys, checked against the windows they must keep."""
    ttls = {kind: int(client.pttl(prefix + event_id)) for kind, prefix in _kinds().items() if kind != "ledger"}
    record_ms, window_ms = settings.record_retention_seconds * 1000, settings.retention_seconds * 1000
    for kind in ("event record", "actions"):
        if not 0 < ttls[kind] <= record_ms:
            raise RuntimeError(f"a delivered {kind} expires in {ttls[kind]} ms, not within {record_ms} ms")
    if "dedupe marker" in ttls and not window_ms - 600_000 < ttls["dedupe marker"] <= window_ms:
        raise RuntimeError(f"a dedupe marker expires in {ttls['dedupe marker']} ms, not the window")
    return ttls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events of each group (delivered, dead)")
    parser.add_argument("--hash-max-listpack-value", type=int, help="set this Redis setting first (default: 64)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/memory.json")
    args = parser.parse_args()
    result = measure(args.events, args.hash_max_listpack_value)
    settings = Settings()
    result["sizing_bytes_per_daily_event"] = columns = sizing_columns(result, settings)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(kinds_table(result))
    print()
    print(sizing_table(columns))


if __name__ == "__main__":
    main()
