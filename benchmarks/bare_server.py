"""The yardstick: a bare aiohttp handler that reads the body and answers 200."""

from __future__ import annotations

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"accepted": 1})


def main() -> None:
    app = web.Application()
    app.router.add_post("/webhooks/magnews", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
