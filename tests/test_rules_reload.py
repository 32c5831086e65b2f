"""Rules reload without a restart: a valid new file takes effect, an invalid one is refused and the old
rules stay. In a real worker, by file change (in process) and by SIGHUP (a ``magbridge worker`` process)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from bridge.simulators import SIM_CORE, Simulators
from bridge.web.health import WORKER_HEARTBEAT_KEY
from config.rules import load_rules
from tests.support.processes import settings_env
from tests.support.service import Service, SettingsFactory
from tests.support.waiting import wait_until
from tests.support.workers import running_worker
from workers.rules_reload import RulesReloader

_BROADCAST = '[[rules.actions]]\nkind = "magicbell.broadcast"\nrecipients = ["ops@example.com"]\ntitle = "{title}"\n'
V1 = '[[rules]]\nname = "created"\nsource = "magnews"\ntypes = ["contacts/create"]\n' + _BROADCAST.format(title="v1")
V2 = (
    V1
    + '[[rules]]\nname = "updated"\nsource = "magnews"\ntypes = ["contacts/update"]\n'
    + _BROADCAST.format(title="v2 {{ data.email }}")
)
INVALID = V1.replace('title = "v1"', 'title = ""')


def event(event_id: str, topic: str) -> dict[str, Any]:
    return {"id": event_id, "topic": topic, "data": {"email": "ada@example.com"}}


def broadcast_titles(simulators: Simulators) -> list[str]:
    records = simulators.magicbell_app[SIM_CORE].records
    return [r.body["title"] for r in records if r.path == "/broadcasts" and r.status == 201]


async def post(service: Service, *events: dict[str, Any]) -> None:
    async with service.post_webhook(list(events)) as response:
        assert response.status == 200


class _Holder:
    def __init__(self, path: Path) -> None:
        self.rules = load_rules(path)


async def test_reloader_swaps_valid_rules_and_keeps_old_ones_on_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(V1)
    holder = _Holder(path)
    reloader = RulesReloader(holder, path, interval=0)
    with capture_logs() as logs:
        path.write_text(V2)
        assert reloader.reload("test") is True
        assert [rule.name for rule in holder.rules.rules] == ["created", "updated"]
        path.write_text(INVALID)
        assert reloader.reload("test") is False
        path.unlink()
        assert reloader.reload("test") is False
    assert [rule.name for rule in holder.rules.rules] == ["created", "updated"], "the old rules stay"
    assert [entry["event"] for entry in logs] == ["rules reloaded", "rules reload refused", "rules reload refused"]
    assert logs[0]["added"] == ["updated"] and logs[0]["removed"] == []
    assert "actions.0.title: String should have at least 1 character" in logs[1]["reason"]
    assert "cannot be read" in logs[2]["reason"]


async def test_worker_reloads_a_changed_file_and_refuses_an_invalid_one(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(V1)
    settings = make_settings(rules_file=path, rules_reload_seconds=0.05)
    async with running_worker(settings) as worker:
        await wait_until(lambda: _true("upkeep" in worker.ctx), timeout=10, step=0.02)
        reloader = worker.ctx["upkeep"].reloader
        await post(service, event("r1", "contacts/update"))  # no rule yet: ignored
        await wait_until(lambda: _status(redis, "r1", "ignored"), timeout=10, step=0.02)

        path.write_text(V2)
        await wait_until(lambda: _true(reloader.reloads == 1), timeout=5, step=0.02)
        await post(service, event("r2", "contacts/update"))
        await wait_until(lambda: _status(redis, "r2", "delivered"), timeout=10, step=0.02)
        assert broadcast_titles(simulators) == ["v2 ada@example.com"]

        path.write_text(INVALID)
        await wait_until(lambda: _true(reloader.refusals == 1), timeout=5, step=0.02)
        await asyncio.sleep(0.2)
        assert reloader.refusals == 1, "the same bad content is reported once"
        await post(service, event("r3", "contacts/update"))
        await wait_until(lambda: _status(redis, "r3", "delivered"), timeout=10, step=0.02)
        assert [rule.name for rule in worker.ctx["deps"].rules.rules] == ["created", "updated"]
    assert broadcast_titles(simulators) == ["v2 ada@example.com"] * 2


async def _status(redis: aioredis.Redis, event_id: str, status: str) -> bool:
    value = await redis.hget(f"mb:event:{event_id}", "status")
    return value == status.encode()


async def _true(value: bool) -> bool:
    return value


@pytest.mark.slow
async def test_sighup_reloads_a_worker_process(
    service: Service, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(V1)
    settings = make_settings(rules_file=path, rules_reload_seconds=0, log_level="info")
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "worker", env=settings_env(settings), stdout=sink, stderr=sink
        )
    try:
        await wait_until(lambda: _started(redis), timeout=15, step=0.05)
        path.write_text(V2)
        worker.send_signal(signal.SIGHUP)
        await wait_until(lambda: _logged(log, "rules reloaded"), timeout=10, step=0.05)
        await post(service, event("h1", "contacts/update"))
        await wait_until(lambda: _status(redis, "h1", "delivered"), timeout=10, step=0.05)

        path.write_text(INVALID)
        worker.send_signal(signal.SIGHUP)
        await wait_until(lambda: _logged(log, "rules reload refused"), timeout=10, step=0.05)
        assert worker.returncode is None, "SIGHUP does not stop the worker"
        await post(service, event("h2", "contacts/update"))
        await wait_until(lambda: _status(redis, "h2", "delivered"), timeout=10, step=0.05)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 20) == 0
    assert broadcast_titles(simulators) == ["v2 ada@example.com"] * 2
    refused = [json.loads(line) for line in log.read_text().splitlines() if "rules reload refused" in line]
    assert "actions.0.title" in refused[0]["reason"] and refused[0]["trigger"] == "SIGHUP"


async def _logged(log: Path, text: str) -> bool:
    return text in log.read_text()


async def _started(redis: aioredis.Redis) -> bool:
    return bool(await redis.exists(WORKER_HEARTBEAT_KEY))
