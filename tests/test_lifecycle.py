"""Say what you are: ``magbridge --version``, and the one start line and one stop line of ``web``,
``worker`` and ``run``, read from real processes' JSON logs (a Redis with a password, never shown)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.simulators import Simulators
from config.settings import DEFAULT_RULES_FILE
from tests.support.processes import settings_env, stop_process
from tests.support.redis_server import RedisServer, free_port
from tests.support.service import SettingsFactory

PASSWORD = "lifecycle-pa55word-7f3e"
SECRET = "hook-secret-never-shown-91c2"

pytestmark = pytest.mark.slow


def test_version_comes_from_the_package_metadata() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "--version"], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout == f"magbridge {version('magbridge')}\n"


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A private Redis that wants a password: its URL (with the password) and its port."""
    server = RedisServer(tmp_path)
    server.start()
    redis.Redis(port=server.port).config_set("requirepass", PASSWORD)
    try:
        yield f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", server.port
    finally:
        server.stop()


async def _lines_until(
    stream: asyncio.StreamReader, event: str, seen: list[str], timeout: float = 30
) -> dict[str, Any]:
    """Read JSON log lines (keeping them in ``seen``) until one whose event is ``event``."""
    async with asyncio.timeout(timeout):
        while line := (await stream.readline()).decode():
            seen.append(line)
            if line.startswith("{") and (record := json.loads(line)).get("event") == event:
                return dict(record)
    raise AssertionError(f"no {event!r} line in {seen}")


@pytest.mark.parametrize(
    ("command", "sources", "listens"),
    [
        ("web", ["magnews webhooks"], True),
        ("worker", ["magnify poll"], False),
        ("run", ["magnews webhooks", "magnify poll"], True),
    ],
)
async def test_one_start_line_and_one_stop_line(
    command: str,
    sources: list[str],
    listens: bool,
    make_settings: SettingsFactory,
    simulators: Simulators,
    locked_redis: tuple[str, int],
) -> None:
    url, redis_port = locked_redis
    port = free_port()
    settings = make_settings(
        redis_url=url,
        host="127.0.0.1",
        port=port,
        webhook_secret=SECRET,
        allow_unauthenticated_webhooks=False,
        magnify_client_id="sim-client",
        magnify_client_secret="sim-secret",
        log_level="info",
        log_format="json",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", command,
        env=settings_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    seen: list[str] = []
    try:
        started = await _lines_until(process.stdout, "magbridge started", seen)
        process.send_signal(signal.SIGTERM)
        stopped = await _lines_until(process.stdout, "magbridge stopped", seen)
        seen.append((await process.stdout.read()).decode())
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await stop_process(process, signal.SIGKILL)
    output = "".join(seen) + (await process.stderr.read()).decode()

    assert started["command"] == command and started["pid"] == process.pid
    assert started["version"] == version("magbridge")
    assert started["listen"] == (f"127.0.0.1:{port}" if listens else None)
    assert started["redis"] == f"127.0.0.1:{redis_port}/0"
    assert started["rules_file"] == str(DEFAULT_RULES_FILE)
    assert started["rules_sha256"] == hashlib.sha256(DEFAULT_RULES_FILE.read_bytes()).hexdigest()[:16]
    assert started["sources"] == sources
    if listens:
        assert started["webhooks"] == "secret required"
        assert started["admin_api"] == "off (MAGBRIDGE_ADMIN_TOKEN unset)"
    assert [json.loads(line)["event"] for line in seen if '"magbridge st' in line] == [
        "magbridge started",
        "magbridge stopped",
    ], "one line each"
    assert stopped["command"] == command and stopped["version"] == started["version"]
    assert stopped["reason"] == "SIGTERM" and stopped["uptime_seconds"] >= 0
    assert PASSWORD not in output and SECRET not in output


async def test_an_unbindable_port_is_one_line(make_settings: SettingsFactory, locked_redis: tuple[str, int]) -> None:
    url, redis_port = locked_redis  # a port something already listens on
    settings = make_settings(redis_url=url, host="127.0.0.1", port=redis_port, webhook_secret=SECRET)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "web",
        env=settings_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    [line] = stderr.decode().splitlines()
    assert line.startswith(f"magbridge: cannot listen on 127.0.0.1:{redis_port} (MAGBRIDGE_HOST, MAGBRIDGE_PORT)")
    assert b"magbridge started" not in stdout and b"magbridge stopped" not in stdout
