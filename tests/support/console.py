"""The operator console over HTTP as a browser uses it: a cookie jar, and forms sent with their CSRF token."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy

__all__ = ["TOKEN", "Answer", "ConsoleClient", "console_client", "csrf_of"]

TOKEN = "console-admin-token-0123456789abcdef"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")


class ConsoleClient:
    """One browser's worth of console: its cookies persist across calls; redirects are not followed."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession):
        self.base_url = base_url
        self.session = session

    async def get(self, path: str) -> Answer:
        async with self.session.get(self.base_url + path, allow_redirects=False) as response:
            return Answer(response.status, response.headers, await response.text())

    async def post(self, path: str, fields: Sequence[tuple[str, str]]) -> Answer:
        async with self.session.post(self.base_url + path, data=list(fields), allow_redirects=False) as response:
            return Answer(response.status, response.headers, await response.text())

    async def page(self, path: str) -> str:
        """A page that must answer 200."""
        answer = await self.get(path)
        assert answer.status == 200, (answer.status, answer.location, answer.text[:500])
        return answer.text

    async def login(self, token: str = TOKEN, next_page: str = "/console/") -> Answer:
        form = await self.page("/console/login?next=" + next_page)
        return await self.post("/console/login", [("csrf", csrf_of(form)), ("token", token), ("next", next_page)])

    def cookie(self, name: str) -> str | None:
        for cookie in self.session.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None


@asynccontextmanager
async def console_client(base_url: str) -> AsyncIterator[ConsoleClient]:
    # unsafe: the cookie jar keeps cookies of an IP address (the tests' 127.0.0.1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield ConsoleClient(base_url, session)
