"""The demo end to end: it finishes, its summary agrees with the simulators' records under every
reading of the vendors' specs, and it never touches a Redis that is in use.

The safety tests run ``magbridge demo`` as a real process, with ``PATH`` arranged to hold
``redis-server`` or not, and the process's working folder away from any ``.env``.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.cli.demo import run_demo
from bridge.logs import configure_logging
from bridge.simulators import SIM_CORE, create_magicbell_app, create_magnews_app, create_magnify_app
from tests.support.redis_server import RedisServer, free_port
from tests.support.service import SettingsFactory

DEMO_EVENTS = 40


async def test_demo_runs_to_completion_and_matches_the_simulators(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    out = io.StringIO()
    summary = await run_demo(make_settings(), events=120, out=out, timeout=60)
    assert summary.consistent, out.getvalue()
    assert summary.sent == summary.accepted == 120
    assert summary.duplicates == summary.resent == 12
    assert sum(summary.statuses.values()) == 120
    assert summary.statuses["delivered"] > 0 and summary.statuses["ignored"] > 0
    assert summary.broadcasts_by_bridge == summary.broadcasts_at_magicbell > 0
    assert "CONSISTENT" in out.getvalue()
    # Magnify: every metric the simulator holds (some appended while the demo ran) ingested once,
    # mapped by the rules into Magnews merges (and ops broadcasts), each one at the simulator.
    assert summary.magnify_metrics == summary.magnify_ingested > summary.magnify_appended == 20
    assert sum(summary.magnify_statuses.values()) == summary.magnify_metrics
    assert summary.magnify_statuses["delivered"] > 0
    assert summary.merges_by_bridge == summary.merges_at_magnews > 0
    assert summary.merges_confirmed == summary.merges_unmatched == 0  # documented answers; keyed by user id
    assert "Magnify metrics" in out.getvalue()
    assert f"sent {120 + summary.magnify_metrics}, " in out.getvalue()
    assert "dead-lettered 0, duplicated 0" in out.getvalue()
    # The demo's own Redis records: every event it sent or polled is there with a final status.
    assert await redis.zcard("mb:events") == 120 + summary.magnify_metrics


async def test_demo_brings_its_own_webhook_secret_whatever_the_environment_says(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    # An operator's secret and allow-list would refuse the simulator's webhooks (401, 403): the demo
    # generates a secret of its own, registers it with Magnews as ?token=, and every event gets in.
    out = io.StringIO()
    summary = await run_demo(
        make_settings(webhook_secret="operators-secret", webhook_allowed_networks=["10.0.0.0/8"]),
        events=DEMO_EVENTS,
        out=out,
        timeout=60,
    )
    assert summary.consistent, out.getvalue()
    assert summary.accepted == DEMO_EVENTS


def _non_default_readings() -> list[str]:
    """``VENDOR.QUESTION=ANSWER`` for every answer but the default, from the simulators' own registries."""
    apps = {"magicbell": create_magicbell_app(), "magnews": create_magnews_app(), "magnify": create_magnify_app()}
    return [
        f"{vendor}.{question}={answer}"
        for vendor, app in apps.items()
        for question, answers in app[SIM_CORE].readings.choices.items()
        for answer in answers[1:]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("reading", _non_default_readings())
async def test_demo_is_consistent_under_every_reading(
    make_settings: SettingsFactory, redis: aioredis.Redis, restore_logging: None, reading: str
) -> None:
    configure_logging("error", "console")  # so that -s shows the table below, not the worker's log
    name, answer = reading.split("=")
    vendor, question = name.split(".")
    out = io.StringIO()
    summary = await run_demo(
        make_settings(), events=DEMO_EVENTS, out=out, timeout=15, readings={vendor: {question: answer}}
    )
    # One line per reading (pytest -k every_reading -s prints the table).
    s = summary
    print(
        f"\n{reading:<34} sent {s.events_sent}  delivered {s.events_delivered:>3}  ignored {s.events_ignored:>3}  "
        f"dead-lettered {s.events_dead}  duplicated {s.duplicated}  | merges {s.merges_by_bridge:>2} "
        f"(confirmed {s.merges_confirmed:>2}), unmatched {s.merges_unmatched:>2}, superseded {s.merges_superseded:>2}"
    )
    assert summary.consistent, out.getvalue()
    assert summary.accepted == summary.sent == DEMO_EVENTS
    assert summary.duplicates == summary.resent
    assert summary.magnify_ingested == summary.magnify_metrics > 0
    assert (summary.events_dead, summary.duplicated) == (0, 0), out.getvalue()
    if reading == "magnews.merge_result=message_only":
        # Every merge's answer lacks an outcome: each delivered one was confirmed by reading it back.
        assert summary.merges_confirmed == summary.merges_by_bridge > 0, out.getvalue()
    if reading == "magnews.primary_key=email":
        # Half the Magnify users have no contact carrying their id: recorded unmatched, not merged.
        assert summary.merges_unmatched > 0 and summary.merges_by_bridge > 0, out.getvalue()


# --- the demo as a process: where its data goes --------------------------------------------------------------


def _path_with(folder: Path, *programs: str) -> str:
    """A ``PATH`` of one folder holding links to just these programs."""
    folder.mkdir(exist_ok=True)
    for program in programs:
        found = shutil.which(program)
        assert found is not None, f"{program} is not installed"
        (folder / program).symlink_to(found)
    return str(folder)


async def _demo(tmp_path: Path, *argv: str, path: str, **env: str) -> tuple[int, str, str]:
    """``magbridge demo *argv`` as a process: exit status, standard output, standard error."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MAGBRIDGE_")}
    environment.update(PATH=path, TMPDIR=str(tmp_path / "tmp"), **env)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "demo", "--events", str(DEMO_EVENTS), *argv,
        cwd=tmp_path, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 90)
    finally:
        if process.returncode is None:  # timed out: never leave a demo (and its redis-server) behind
            process.terminate()  # the demo stops its private redis-server on SIGTERM
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def _snapshot(client: aioredis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """Every key of the database: its serialized value, and whether it still has an expiry."""
    return {key: (await client.dump(key), await client.pttl(key) > 0) async for key in client.scan_iter()}


async def _operators_keys(client: aioredis.Redis) -> dict[bytes, tuple[bytes | None, bool]]:
    """What a running bridge leaves in its database: counters, an event, a queued job, a lease."""
    await client.hset("mb:stats", mapping={"received": 1234, "delivered": 1200})
    await client.hset("mb:event:real-1", mapping={"status": "pending", "payload": "{}"})
    await client.zadd("mb:pending", {"real-1": 1})
    await client.zadd("arq:queue", {"deliver:real": 1})
    await client.set("mb:magnify:lock", "worker-7", ex=3600)
    await client.set("unrelated:app:key", "theirs")
    return await _snapshot(client)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("magbridge: "), stderr
    return lines[0]


@pytest.mark.slow
async def test_demo_on_a_given_database_leaves_nothing_and_touches_no_other(
    tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    before = await _operators_keys(redis)  # database 0: "the operator's"
    url = redis_server.url.removesuffix("/0") + "/1"
    status, out, err = await _demo(tmp_path, "--redis-url", url, path=os.environ["PATH"])
    assert status == 0, out + err
    assert "CONSISTENT" in out and "Traceback" not in err
    deleted = re.search(r"deleted the demo's (\d+) keys", out)
    assert deleted and int(deleted.group(1)) > DEMO_EVENTS, out
    demo_db = aioredis.Redis.from_url(url)
    try:
        assert await demo_db.dbsize() == 0, [key async for key in demo_db.scan_iter()]
    finally:
        await demo_db.aclose()
    assert await _snapshot(redis) == before


async def test_demo_refuses_a_database_in_use(tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis) -> None:
    before = await _operators_keys(redis)
    status, out, err = await _demo(tmp_path, path=os.environ["PATH"], MAGBRIDGE_REDIS_URL=redis_server.url)
    line = _one_line(err)
    assert status == 2 and out == ""
    assert f"127.0.0.1:{redis_server.port}/0 (MAGBRIDGE_REDIS_URL) holds {len(before)} keys" in line
    assert f"127.0.0.1:{redis_server.port}/15" in line  # the way out: a database nothing uses
    assert await _snapshot(redis) == before


async def test_demo_says_in_one_line_when_the_given_redis_does_not_answer(tmp_path: Path) -> None:
    port = free_port()
    status, out, err = await _demo(tmp_path, "--redis-url", f"redis://127.0.0.1:{port}/3", path=os.environ["PATH"])
    line = _one_line(err)
    assert status == 2 and out == ""
    assert f"no Redis answers at 127.0.0.1:{port}/3 (--redis-url)" in line


@pytest.mark.slow
async def test_demo_runs_its_own_redis_server_and_stops_it(tmp_path: Path) -> None:
    # No Redis given, none reachable: only redis-server on the PATH.
    path = _path_with(tmp_path / "bin", "redis-server")
    status, out, err = await _demo(tmp_path, path=path)
    assert status == 0, out + err
    assert "CONSISTENT" in out and "Traceback" not in err
    port = re.search(r"private redis-server on 127\.0\.0\.1:(\d+)", out)
    assert port, out
    with pytest.raises(OSError):  # stopped when the demo ended
        socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=1).close()
    assert list((tmp_path / "tmp").iterdir()) == []  # its folder removed


async def test_demo_without_redis_server_or_a_given_redis_says_how_to_get_one(tmp_path: Path) -> None:
    status, out, err = await _demo(tmp_path, path=_path_with(tmp_path / "bin"))
    line = _one_line(err)
    assert status == 2 and out == ""
    assert "redis-server" in line and "none on the PATH" in line
    assert "apt-get install redis-server" in line and "--redis-url" in line
    assert list((tmp_path / "tmp").iterdir()) == []
