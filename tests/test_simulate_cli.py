"""``magbridge simulate`` as a real process prints the settings that point a bridge at it, with the
credentials its simulators accept; ``magbridge check`` accepts them, in both Magnews token modes."""

from __future__ import annotations

import asyncio
import io
import signal
import sys

import pytest
import redis.asyncio as aioredis

from bridge.cli.check import run_check
from tests.support.processes import stop_process
from tests.support.service import SettingsFactory

pytestmark = pytest.mark.slow


async def _check(make_settings: SettingsFactory, env: dict[str, str]) -> dict[str, str]:
    values = {name.removeprefix("MAGBRIDGE_").lower(): value for name, value in env.items()}
    out = io.StringIO()
    assert await run_check(make_settings(**values), out=out) == 0, out.getvalue()
    return {line.split()[1]: line for line in out.getvalue().splitlines()[:-1]}


async def test_simulate_prints_what_its_simulators_accept(
    make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "simulate", "--magnify-port", "0", "--magicbell-port", "0",
        "--magnews-port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any(line.startswith("# MAGBRIDGE_MAGNEWS_TOKEN_URL=") for line in lines):
                lines.append((await process.stdout.readline()).decode().rstrip("\n"))
        settings = dict(line.split("=", 1) for line in lines if line.startswith("MAGBRIDGE_"))
        refresh_flow = dict(line[2:].split("=", 1) for line in lines if line.startswith("# MAGBRIDGE_"))
        assert set(settings) >= {
            "MAGBRIDGE_MAGICBELL_TOKEN",
            "MAGBRIDGE_MAGNEWS_TOKEN",
            "MAGBRIDGE_MAGNIFY_CLIENT_SECRET",
        }

        checked = await _check(make_settings, settings)
        assert checked["magicbell"].startswith("ok    magicbell  token accepted by http://127.0.0.1:")
        assert "static token (MAGBRIDGE_MAGNEWS_TOKEN): accepted" in checked["magnews"]
        assert "client credentials accepted" in checked["magnify"]
        checked = await _check(make_settings, {**settings, **refresh_flow, "MAGBRIDGE_MAGNEWS_TOKEN": None})  # type: ignore[dict-item]
        assert checked["magnews"].startswith("ok") and "refresh-token flow" in checked["magnews"]

        process.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(process.stdout.read(), 30)).decode()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        await stop_process(process, signal.SIGKILL)
    output = "\n".join(lines) + rest
    assert "magbridge started" in output and "command=simulate" in output and "magbridge stopped" in output
    assert "reason=SIGTERM" in output
