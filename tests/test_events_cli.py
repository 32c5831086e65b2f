"""``magbridge events list|show`` and ``magbridge dead-letters``: the admin API's reads from a shell,
the same bodies as the admin routes (compared side by side), as tables, and as real processes."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge.cli.events import add_events_parsers, run_events_command
from bridge.simulators import Simulators
from bridge.store import keys
from tests.support.events import magnews_event
from tests.support.processes import settings_env
from tests.support.redis_server import free_port
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import set_faults
from tests.support.workers import run_worker_burst

TOKEN = "admin-token-events-cli-0123"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_events_parsers(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


async def cli(redis_url: str, *argv: str) -> tuple[int, str, str]:
    """The command in this process (its own event loop, in a thread): status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    status = await asyncio.to_thread(run_events_command, _args(*argv), redis_url, out, err)
    return status, out.getvalue(), err.getvalue()


async def admin(service: Service, path: str, **params: str) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with service.session.get(f"{service.url}{path}", params=params, headers=headers) as response:
        assert response.status == 200
        return await response.json()


@pytest.fixture
async def bridge(
    start_service: Any, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> tuple[Service, str]:
    """Events in every state worth showing: delivered, ignored, and two dead letters (MagicBell 400).
    Events received in the same millisecond are listed by id, descending, as the admin API does."""
    settings = make_settings(admin_token=TOKEN)
    service: Service = await start_service(settings)
    async with service.post_webhook(
        [magnews_event("ok-1", "contacts/create"), magnews_event("ig-1", "contacts/update")]
    ) as r:
        assert r.status == 200
    await run_worker_burst(settings)
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=1.0, error_status=400)
    async with service.post_webhook(
        [magnews_event("dead-1", "contacts/delete"), magnews_event("dead-2", "communications/msg/bounce")]
    ) as r:
        assert r.status == 200
    await run_worker_burst(settings)
    await set_faults(simulators.endpoints.magicbell_base_url, error_rate=0.0)
    return service, settings.redis_url


@pytest.mark.parametrize(
    ("argv", "path", "params"),
    [
        (["events", "list"], "/admin/events", {}),
        (["events", "list", "--status", "ignored"], "/admin/events", {"status": "ignored"}),
        (["events", "list", "--source", "magnews", "--type", "contacts/*", "--since", "1h", "--limit", "1"],
         "/admin/events", {"source": "magnews", "type": "contacts/*", "since": "1h", "limit": "1"}),
        (["dead-letters"], "/admin/dead-letters", {}),
        (["dead-letters", "--type", "*/msg/bounce"], "/admin/dead-letters", {"type": "*/msg/bounce"}),
    ],
)  # fmt: skip
async def test_json_is_the_admin_apis_body(
    bridge: tuple[Service, str], argv: list[str], path: str, params: dict[str, str]
) -> None:
    service, redis_url = bridge
    status, out, err = await cli(redis_url, *argv, "--json")
    assert (status, err) == (0, "")
    assert json.loads(out) == await admin(service, path, **params)


async def test_show_is_the_admin_apis_body_and_a_cursor_pages_on(bridge: tuple[Service, str]) -> None:
    service, redis_url = bridge
    status, out, _ = await cli(redis_url, "events", "show", "dead-1", "--json")
    shown, served = json.loads(out), await admin(service, "/admin/events/dead-1")
    assert status == 0 and shown.pop("expires_in_seconds") is None is served.pop("expires_in_seconds"), "kept"
    assert shown == served and shown["actions"][0]["status"] == "dead"

    _, out, _ = await cli(redis_url, "events", "list", "--limit", "3", "--json")
    first = json.loads(out)
    _, out, _ = await cli(redis_url, "events", "list", "--limit", "3", "--cursor", first["next_cursor"], "--json")
    rest = json.loads(out)
    assert [e["id"] for e in first["events"] + rest["events"]] == ["dead-2", "dead-1", "ok-1", "ig-1"]
    assert rest["next_cursor"] is None


async def test_tables_and_the_readable_event(bridge: tuple[Service, str]) -> None:
    _, redis_url = bridge
    status, out, _ = await cli(redis_url, "events", "list")
    header, *rows, summary = out.splitlines()
    assert status == 0 and header.split() == ["RECEIVED", "STATUS", "SOURCE", "TYPE", "ID", "ERROR"]
    assert [row.split()[4] for row in rows] == ["dead-2", "dead-1", "ok-1", "ig-1"]
    assert rows[3].split()[1:4] == ["ignored", "magnews", "contacts/update"] and summary == "4 events"

    status, out, _ = await cli(redis_url, "dead-letters")
    header, *rows, summary = out.splitlines()
    assert header.split()[:3] == ["DEAD", "SINCE", "SOURCE"] and [row.split()[3] for row in rows] == [
        "dead-2",
        "dead-1",
    ]
    assert "magicbell: " in rows[0] and "400" in rows[0] and summary == "2 dead letters of 2"

    status, out, _ = await cli(redis_url, "events", "show", "dead-1")
    assert status == 0 and out.startswith("event       dead-1\nsource      magnews\ntype        contacts/delete\n")
    assert "status      failed (generation 0, 1 run(s))" in out and '\n    "id": "dead-1",\n' in out
    assert "magnews-contact-lost #0  magicbell.broadcast -> magicbell  dead" in out and "HTTP 400" in out
    assert "last error: " in out


async def test_bad_filters_and_missing_events(bridge: tuple[Service, str], redis: aioredis.Redis) -> None:
    _, redis_url = bridge
    status, out, err = await cli(redis_url, "events", "list", "--since", "last tuesday")
    assert (status, out) == (2, "") and err.startswith("magbridge events list: --since: 'last tuesday' is not")
    status, _, err = await cli(redis_url, "dead-letters", "--cursor", "not-a-cursor")
    assert status == 2 and err == "magbridge dead-letters: --cursor: not a cursor this service gave out\n"
    status, out, err = await cli(redis_url, "events", "show", "never-seen")
    assert (status, out) == (1, "") and "no event 'never-seen'" in err
    await redis.delete(keys.event("ig-1"), keys.actions("ig-1"))  # its record expired, its marker has not
    status, out, err = await cli(redis_url, "events", "show", "ig-1")
    assert (status, out) == (1, "") and "its record has expired" in err and "still answered as a duplicate" in err
    with pytest.raises(SystemExit):
        _args("events", "list", "--limit", "501")


@pytest.mark.slow
async def test_real_processes(bridge: tuple[Service, str], make_settings: SettingsFactory) -> None:
    async def run(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", *argv,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    env = settings_env(make_settings())
    status, out, _ = await run(env, "dead-letters", "--json")
    assert status == 0 and [letter["id"] for letter in json.loads(out)["dead_letters"]] == ["dead-2", "dead-1"]
    status, out, _ = await run(env, "events", "show", "ok-1")
    assert status == 0 and "status      delivered" in out
    nothing_there = settings_env(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    status, out, err = await run(nothing_there, "events", "list")
    assert status == 1 and out == "" and err.startswith("magbridge events list: redis: ")
    assert "Traceback" not in err
