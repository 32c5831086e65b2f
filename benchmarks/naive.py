"""The naive baseline the bridge is measured against: one arq job per event, enqueued per request,
arq's defaults (pickle, 0.5 s poll delay), one HTTP POST per job. No durability beyond arq's own.

    python benchmarks/naive.py web PORT          # receiver: enqueue_job per event
    python benchmarks/naive.py worker            # arq worker with default settings
Environment: REDIS_URL, MAGICBELL_URL.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import aiohttp
from aiohttp import web
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import run_worker

REDIS = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
POOL = web.AppKey("pool", ArqRedis)


async def receive(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    await request.app[POOL].enqueue_job("deliver", body)
    return web.json_response({"accepted": 1})


async def pool_ctx(app: web.Application) -> Any:
    app[POOL] = await create_pool(REDIS)
    yield
    await app[POOL].aclose()


async def deliver(ctx: dict[str, Any], body: dict[str, Any]) -> None:
    payload = {"title": f"Magnews {body['topic']}", "recipients": [{"email": "ops@example.com"}]}
    headers = {"Authorization": "Bearer sim-magicbell-token"}
    async with ctx["session"].post(os.environ["MAGICBELL_URL"] + "/broadcasts", json=payload, headers=headers) as r:
        r.raise_for_status()


async def startup(ctx: dict[str, Any]) -> None:
    ctx["session"] = aiohttp.ClientSession()


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["session"].close()


class WorkerSettings:
    functions = [deliver]  # noqa: RUF012
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = REDIS


if __name__ == "__main__":
    if sys.argv[1] == "web":
        app = web.Application()
        app.cleanup_ctx.append(pool_ctx)
        app.router.add_post("/webhooks/magnews", receive)
        web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
    else:
        run_worker(WorkerSettings)  # type: ignore[arg-type]
