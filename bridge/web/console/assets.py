"""The console's stylesheet and script (``static/``), read once and served from memory.

Each is linked with its content hash in the query (``/console/static/console.css?v=1a2b3c4d5e``), so a
browser may keep it for a day and still picks up a new release at once. Only these files are
served: the name is looked up, never joined to a path.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from aiohttp import web

__all__ = ["Assets"]

_TYPES = {"console.css": "text/css", "console.js": "text/javascript"}


class Assets:
    def __init__(self) -> None:
        folder = files("bridge.web.console").joinpath("static")
        self._files = {name: folder.joinpath(name).read_bytes() for name in _TYPES}
        self._versions = {name: hashlib.sha256(body).hexdigest()[:10] for name, body in self._files.items()}

    def url(self, name: str) -> str:
        return f"/console/static/{name}?v={self._versions[name]}"

    async def serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._files:
            raise web.HTTPNotFound(text=f"no console asset {name[:60]!r}")
        etag = self._versions[name]
        if request.headers.get("If-None-Match", "").strip('"') == etag:
            return web.Response(status=304, headers={"ETag": f'"{etag}"'})
        response = web.Response(body=self._files[name], content_type=_TYPES[name], charset="utf-8")
        response.headers["ETag"] = f'"{etag}"'
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response
