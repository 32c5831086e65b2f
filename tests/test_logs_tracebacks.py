"""Every log line names its logger, and an exception is text: arq's own line for a failing job
(a real arq ``Worker`` in burst mode), our own ``exception`` lines, and stdlib loggers alike."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog
from arq import Worker, create_pool, func
from arq.connections import RedisSettings

from bridge.logs import configure_logging
from tests.support.redis_server import RedisServer

SECRET = "s3cr3t-in-a-url"


async def _boom(ctx: dict[str, Any]) -> None:
    raise RuntimeError(f"boom calling https://api.example.com/x?token={SECRET}")


def _lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_a_failing_arq_job_logs_its_traceback_as_text(
    redis_server: RedisServer, redis: aioredis.Redis, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("info", "json")  # after capsys took stdout, so the lines land in the capture
    redis_settings = RedisSettings.from_dsn(redis_server.url)
    pool = await create_pool(redis_settings)
    try:
        assert await pool.enqueue_job("boom", _job_id="boom-1") is not None
    finally:
        await pool.aclose()
    worker = Worker(
        functions=[func(_boom, name="boom", max_tries=1)],
        redis_settings=redis_settings,
        burst=True,
        poll_delay=0,
        handle_signals=False,
        keep_result=0,
    )
    try:
        await worker.main()
    finally:
        await worker.close()
    assert worker.jobs_failed == 1

    output = capsys.readouterr().out
    lines = _lines(output)
    [failed] = [line for line in lines if line["logger"] == "arq.worker" and line["level"] == "error"]
    assert "boom-1:boom failed, RuntimeError: boom calling" in failed["event"]
    exception = failed["exception"]
    assert isinstance(exception, str) and exception.startswith("Traceback (most recent call last):")
    assert "in _boom" in exception and "RuntimeError: boom calling https://api.example.com/x?token=***" in exception
    assert "<traceback object" not in output and "exc_info" not in failed
    assert SECRET not in output, "a traceback is redacted like any other value"
    assert all(line.get("logger") for line in lines), [line for line in lines if not line.get("logger")]


def test_every_line_names_its_logger_and_exceptions_are_text(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging("info", "json")
    structlog.get_logger("magbridge.test").info("named")
    structlog.get_logger().info("unnamed")
    logging.getLogger("aiohttp.server").warning("from the standard library")
    try:
        raise ValueError("inside")
    except ValueError:
        structlog.get_logger("magbridge.test").exception("caught")
        logging.getLogger("aiohttp.server").exception("caught by aiohttp")
    lines = {line["event"]: line for line in _lines(capsys.readouterr().out)}
    assert lines["named"]["logger"] == "magbridge.test"
    assert lines["unnamed"]["logger"] == "magbridge"
    assert lines["from the standard library"]["logger"] == "aiohttp.server"
    for event in ("caught", "caught by aiohttp"):
        assert lines[event]["exception"].startswith("Traceback (most recent call last):"), event
        assert lines[event]["exception"].endswith("ValueError: inside"), event
