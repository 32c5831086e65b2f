"""The operator console over real HTTP against real Redis: its security (login, the session cookie,
CSRF, headers, logout, token rotation, the console off without a token), what each page shows, and
that pages stay bounded (no SCAN, a bounded number of commands whatever the store holds).

The same flows in a real browser: ``tests/test_console_browser.py``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from multidict import CIMultiDictProxy
from yarl import URL

from bridge.events import Envelope
from bridge.logs import configure_logging
from bridge.simulators import Simulators
from bridge.store import keys
from bridge.store.throughput import per_minute
from bridge.web.console.guard import SECURITY_HEADERS
from config.settings import Settings
from tests.support.commands import magnews_webhook
from tests.support.console import TOKEN, console_client, csrf_of
from tests.support.events import magnews_event
from tests.support.magnify import magnify_settings, open_poller
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import set_faults, sim_requests
from tests.support.store import ingest, mark_dead
from tests.support.workers import run_worker_burst

StartService = Callable[[Settings], Any]
PAGES = ("/console/", "/console/events", "/console/dead-letters", "/console/magnify", "/console/magnews")


async def console(start_service: StartService, settings: Settings) -> Service:
    service: Service = await start_service(settings)
    return service


async def post_events(service: Service, *events: dict[str, Any]) -> None:
    async with service.post_webhook(list(events)) as response:
        assert response.status == 200, await response.text()


def cookie_header(headers: CIMultiDictProxy[str], name: str) -> str:
    [value] = [line for line in headers.getall("Set-Cookie", []) if line.startswith(f"{name}=")]
    return value


# --- security -------------------------------------------------------------------------------------------


async def test_the_console_is_off_without_an_admin_token(start_service: StartService, settings: Settings) -> None:
    service = await console(start_service, settings)  # no admin_token
    async with console_client(service.url) as client:
        for path in ("/console/", "/console/login", "/console/events"):
            answer = await client.get(path)
            assert answer.status == 503
            assert "MAGBRIDGE_ADMIN_TOKEN is not set" in answer.text
            assert answer.headers["Content-Type"].startswith("text/html")
        answer = await client.post("/console/login", [("token", "anything")])
        assert answer.status == 503


async def test_login_exchanges_the_token_for_a_strict_expiring_session_cookie(
    start_service: StartService, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN, console_session_minutes=30))
    async with console_client(service.url) as client:
        answer = await client.get("/console/events?status=failed")
        assert answer.status == 303
        assert answer.location == "/console/login?next=%2Fconsole%2Fevents%3Fstatus%3Dfailed"

        answer = await client.login(next_page="/console/events?status=failed")
        assert answer.status == 303 and answer.location == "/console/events?status=failed"
        cookie = cookie_header(answer.headers, "magbridge_console")
        attributes = {part.strip().split("=")[0] for part in cookie.split(";")[1:]}
        assert attributes == {"HttpOnly", "Max-Age", "Path", "SameSite"}  # no Secure over plain http
        assert "SameSite=Strict" in cookie and "Path=/console" in cookie and "Max-Age=1800" in cookie
        assert TOKEN not in str(answer.headers) and TOKEN not in answer.text
        [session_key] = await redis.keys(keys.console_session("*"))
        assert 1790 <= await redis.ttl(session_key) <= 1800

        for path in PAGES:
            html = await client.page(path)
            assert TOKEN not in html


async def test_the_cookie_is_secure_when_configured(
    start_service: StartService, make_settings: SettingsFactory
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN, console_secure_cookie=True))
    async with console_client(service.url) as client:
        form = await client.get("/console/login")
        assert "Secure" in cookie_header(form.headers, "magbridge_console_login")
        answer = await client.post(
            "/console/login", [("csrf", csrf_of(form.text)), ("token", TOKEN), ("next", "/console/")]
        )
        # Over plain http the test's cookie jar does not send a Secure cookie back, as a browser would not:
        # the login is refused for want of its nonce cookie.
        assert answer.status == 403


async def test_a_wrong_token_is_refused_and_logged_without_it(
    start_service: StartService,
    make_settings: SettingsFactory,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    configure_logging("info", "json")
    service = await console(start_service, make_settings(admin_token=TOKEN))
    async with console_client(service.url) as client:
        answer = await client.login("not-the-token-at-all")
        assert answer.status == 401
        assert "That is not the admin token." in answer.text
        assert client.cookie("magbridge_console") is None
        assert (await client.get("/console/")).status == 303  # still not logged in
        assert (await client.login()).status == 303
    output = capsys.readouterr().out
    assert '"event":"console login refused"' in output and '"event":"console login"' in output
    assert "not-the-token-at-all" not in output and TOKEN not in output


async def test_forms_without_their_csrf_token_are_refused(
    start_service: StartService, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    await post_events(service, magnews_event("kept", "contacts/delete"))
    await mark_dead(redis, "kept", "magicbell: 400")
    async with console_client(service.url) as client:
        # The login form: no token field, a made-up one, or no login cookie at all.
        form = await client.page("/console/login")
        assert (await client.post("/console/login", [("token", TOKEN)])).status == 403
        assert (await client.post("/console/login", [("csrf", "x" * 43), ("token", TOKEN)])).status == 403
        client.session.cookie_jar.clear()
        answer = await client.post("/console/login", [("csrf", csrf_of(form)), ("token", TOKEN)])
        assert answer.status == 403 and "CSRF" in answer.text

        await client.login()
        csrf = csrf_of(await client.page("/console/dead-letters"))
        for path, fields in [
            ("/console/replay/preview", [("event_id", "kept")]),
            ("/console/replay", [("event_id", "kept")]),
            ("/console/logout", []),
        ]:
            missing = await client.post(path, fields)
            assert missing.status == 403 and "lacks its CSRF token" in missing.text
            wrong = await client.post(path, [("csrf", csrf[::-1]), *fields])
            assert wrong.status == 403 and "is not this session" in wrong.text
        assert await redis.zscore(keys.DEAD_INDEX, "kept") is not None, "nothing was replayed"
        assert (await client.get("/console/")).status == 200, "nor logged out"
        # Another session's token is refused as well.
        async with console_client(service.url) as other:
            await other.login()
            other_csrf = csrf_of(await other.page("/console/"))
        assert (await client.post("/console/replay", [("csrf", other_csrf), ("event_id", "kept")])).status == 403


async def test_a_form_posted_without_a_session_is_refused(
    start_service: StartService, make_settings: SettingsFactory
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    async with console_client(service.url) as client:
        answer = await client.post("/console/replay", [("csrf", "x"), ("scope", "all")])
        assert answer.status == 401 and "log in again" in answer.text


async def test_logging_out_ends_the_session_for_a_copied_cookie_too(
    start_service: StartService, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    async with console_client(service.url) as client, console_client(service.url) as thief:
        await client.login()
        copied = client.cookie("magbridge_console")
        assert copied is not None
        thief.session.cookie_jar.update_cookies({"magbridge_console": copied}, response_url=_url(service))
        assert (await thief.get("/console/")).status == 200

        answer = await client.post("/console/logout", [("csrf", csrf_of(await client.page("/console/")))])
        assert answer.status == 303 and answer.location == "/console/login?bye=1"
        assert "You are logged out" in await client.page("/console/login?bye=1")
        assert (await client.get("/console/")).status == 303
        assert (await thief.get("/console/")).status == 303, "the copied cookie died with the session"
        assert await redis.keys(keys.console_session("*")) == []


def _url(service: Service) -> URL:
    return URL(service.url + "/console/")


def _signed(token: str, payload: dict[str, Any]) -> str:
    """A cookie value made as ``bridge.web.console.sessions`` documents it, independently of its code."""
    key = hmac.new(token.encode(), b"magbridge console session v1", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    body = b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{b64(hmac.new(key, f'cookie|{body}'.encode(), hashlib.sha256).digest())}"


async def test_forged_expired_and_other_tokens_cookies_are_refused(
    start_service: StartService, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    rotated = await console(start_service, make_settings(admin_token=TOKEN + "-rotated"))
    async with console_client(service.url) as client:
        await client.login()
        good = client.cookie("magbridge_console")
        assert good is not None
        payload, mac = good.split(".")

        async def with_cookie(target: Service, value: str) -> int:
            async with console_client(target.url) as other:
                other.session.cookie_jar.update_cookies({"magbridge_console": value}, response_url=_url(target))
                return (await other.get("/console/")).status

        assert await with_cookie(service, good) == 200
        assert await with_cookie(service, f"{payload}.{mac[:-2]}AA") == 303
        assert await with_cookie(service, f"{payload[:-2]}{mac[:2]}.{mac}") == 303
        assert await with_cookie(rotated, good) == 303, "a new admin token logs everyone out"
        session_id = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["s"]
        live = {"p": "session", "s": session_id, "e": int(time.time()) + 60}
        assert await with_cookie(service, _signed(TOKEN, live)) == 200, "the format is the documented one"
        # The session is still in Redis: the expiry signed into the cookie alone ends it.
        assert await with_cookie(service, _signed(TOKEN, {**live, "e": int(time.time()) - 1})) == 303
        # A login nonce cookie is signed by the same key, for another purpose: it is no session.
        assert await with_cookie(service, _signed(TOKEN, {**live, "p": "login"})) == 303
        assert await redis.exists(keys.console_session(session_id)) == 1


async def test_after_login_only_console_pages_are_next(
    start_service: StartService, make_settings: SettingsFactory
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    for wanted in ("//evil.example/console/", "https://evil.example/", "/console/\\evil", "/metrics"):
        async with console_client(service.url) as client:
            answer = await client.login(next_page=quote(wanted, safe=""))
            assert answer.status == 303 and answer.location == "/console/", wanted


async def test_every_answer_carries_strict_security_headers_and_no_inline_code(
    start_service: StartService, make_settings: SettingsFactory
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    async with console_client(service.url) as client:
        login = await client.get("/console/login")
        assert login.headers["Cache-Control"] == "no-store"
        await client.login()
        for path in (*PAGES, "/console/no-such-page", "/console/events/no-such-event"):
            answer = await client.get(path)
            for name, value in SECURITY_HEADERS.items():
                assert answer.headers.get(name) == value, (path, name)
            assert answer.headers["Cache-Control"] == "no-store", path
            html = answer.text
            assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], f"inline script on {path}"
            assert re.findall(r"\sstyle=|<style", html) == [], f"inline style on {path}"
            assert re.findall(r"\son[a-z]+=", html) == [], f"inline handler on {path}"
        assert (await client.get("/console/no-such-page")).status == 404
        missing = await client.get("/console/events/no-such-event")
        assert missing.status == 404 and "never received" in missing.text
        css = await client.get(re.findall(r'href="(/console/static/console\.css\?v=\w+)"', html)[0])
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
        assert css.headers["Cache-Control"] == "public, max-age=86400"
        assert (await client.get("/console/static/..%2Fsessions.py")).status == 404


# --- pages ------------------------------------------------------------------------------------------------


async def test_overview_shows_events_in_and_out_per_minute_and_the_queue(
    start_service: StartService, settings: Settings, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    await post_events(service, *(magnews_event(f"o{n}", "contacts/delete") for n in range(3)))
    await post_events(service, magnews_event("o-ignored", "contacts/update"))
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/")
        assert re.search(r'id="queue-depth">4<', html), "four events wait for a worker"
        await run_worker_burst(settings)

        minutes = await per_minute(redis, minutes=2, now_ms=int(time.time() * 1000))
        assert sum(m.received for m in minutes) == 4
        assert {status: sum(m.finished.get(status, 0) for m in minutes) for status in ("delivered", "ignored")} == {
            "delivered": 3,
            "ignored": 1,
        }
        html = await client.page("/console/")
        assert re.search(r'id="queue-depth">0<', html)
        assert "in 4, out 4" in html  # the current minute's bar in the chart
        assert 'id="destination-magicbell"' in html and ">closed<" in html
        assert "magnews 4" in html  # received totals by source


async def test_overview_shows_a_paused_destination_and_an_open_breaker(
    start_service: StartService, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    now = int(time.time() * 1000)
    _, holders, breaker, _ = keys.gate("magicbell")
    await redis.hset(breaker, mapping={"failures": 5, "open_until": now + 30_000})
    await redis.zadd(holders, {"held": now + 10_000})
    await redis.hset(
        keys.gate_paused("magnews"), mapping={"since": now, "at": now, "status": 401, "retry_at": now + 5000}
    )
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/")
    magicbell = html.split('id="destination-magicbell"')[1].split("</tr>")[0]
    magnews = html.split('id="destination-magnews"')[1].split("</tr>")[0]
    assert ">open<" in magicbell and "every request deferred until" in magicbell and "1 of 10" in magicbell
    assert "5 transient failures in a row" in magicbell
    assert ">paused<" in magnews and "HTTP 401" in magnews


async def test_events_page_filters_pages_and_links_each_row(
    start_service: StartService, make_settings: SettingsFactory
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    topics = ["contacts/delete", "communications/msg/bounce"]
    await post_events(service, *(magnews_event(f"p{n:03d}", topics[n % 2]) for n in range(120)))
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/events?type=*%2Fmsg%2Fbounce&since=1h")
        ids = re.findall(r'class="event-link" href="/console/events/([^"]+)"', html)
        assert ids == [f"p{n:03d}" for n in range(119, 19, -2)], "newest first, 50 a page, bounces only"
        assert "120 events stored, 120 received in this time range" in html
        next_page = re.search(r'id="next-page" href="([^"]+)"', html)
        assert next_page is not None
        html = await client.page(next_page.group(1).replace("&amp;", "&"))
        ids = re.findall(r'class="event-link" href="/console/events/([^"]+)"', html)
        assert ids == [f"p{n:03d}" for n in range(19, 0, -2)]
        assert 'id="next-page"' not in html and "First page" in html

        answer = await client.get("/console/events?since=yesterday")
        assert answer.status == 400 and "since: &#39;yesterday&#39; is not an ISO 8601 date-time" in answer.text
        assert (await client.get("/console/events?cursor=nonsense")).status == 400
        html = await client.page("/console/events?status=failed")
        assert "No event matches" in html


async def test_event_page_shows_actions_attempts_timeline_and_a_redacted_payload(
    start_service: StartService, settings: Settings, make_settings: SettingsFactory, simulators: Simulators
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    event = magnews_event("a/b?c", "contacts/delete", fields={"name": "Ada", "api_key": "sk-live-123456"})
    event["data"]["callback"] = "https://example.com/hook?token=hunter2hunter2"
    await post_events(service, event)
    await set_faults(simulators.endpoints.magicbell_base_url, fail_next=[503])
    await run_worker_burst(settings)
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/events/" + quote("a/b?c", safe=""))
    assert "<code>a/b?c</code>" in html and ">delivered<" in html
    assert "magicbell.broadcast" in html
    assert "received" in html and "magicbell.broadcast: transient HTTP 503" in html  # the timeline
    assert "magicbell.broadcast: delivered HTTP 201" in html or "magicbell.broadcast: delivered HTTP 200" in html
    payload = html.split('id="payload">')[1].split("</pre>")[0]
    assert "sk-live-123456" not in payload and "&#34;api_key&#34;: &#34;***&#34;" in payload
    assert "hunter2" not in payload and "token=***" in payload
    assert "&#34;name&#34;: &#34;Ada&#34;" in payload


async def test_dead_letters_are_previewed_replayed_and_followed(
    start_service: StartService,
    settings: Settings,
    make_settings: SettingsFactory,
    simulators: Simulators,
    redis: aioredis.Redis,
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    await post_events(service, magnews_event("dl-1", "contacts/delete"), magnews_event("dl-2", "contacts/delete"))
    await set_faults(simulators.endpoints.magicbell_base_url, fail_next=[400, 400])
    await run_worker_burst(settings)
    assert await redis.zcard(keys.DEAD_INDEX) == 2
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/dead-letters")
        assert 'id="dead-total">2<' in html and "magicbell.broadcast: magicbell: HTTP 400" in html
        csrf = csrf_of(html)

        preview = await client.post(
            "/console/replay/preview", [("csrf", csrf), ("scope", "selected"), ("event_id", "dl-1")]
        )
        assert preview.status == 200 and "<strong>1</strong> event would be queued again" in preview.text
        assert await redis.zcard(keys.DEAD_INDEX) == 2, "a preview changes nothing"
        nothing = await client.post("/console/replay/preview", [("csrf", csrf), ("scope", "selected")])
        assert nothing.status == 400 and "Select at least one dead letter" in nothing.text
        everything = await client.post(
            "/console/replay/preview", [("csrf", csrf), ("scope", "all"), ("source", ""), ("type", "contacts/*")]
        )
        assert "<strong>2</strong> events would be queued again" in everything.text

        done = await client.post("/console/replay", [("csrf", csrf_of(preview.text)), ("event_id", "dl-1")])
        assert done.status == 303 and done.location == "/console/dead-letters?replayed=1&watch=dl-1"
        html = await client.page(done.location)
        assert 'id="dead-total">1<' in html and 'data-refresh="2"' in html and ">queued<" in html
        await run_worker_burst(settings)
        html = await client.page(done.location)
        assert ">delivered<" in html and "It is final." in html
        assert 'data-live="watch" data-refresh' not in html, "the page stops refreshing"
        detail = await client.page("/console/events/dl-1")
        assert "replayed by console" in detail
    sent = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    delivered = [r["body"]["custom_attributes"]["magbridge_event_id"] for r in sent if r["status"] in (200, 201)]
    assert delivered == ["dl-1"], "the replayed dead letter reached MagicBell; the other stays dead"
    assert await redis.zrange(keys.DEAD_INDEX, 0, -1) == [b"dl-2"]


async def test_magnify_page_shows_checkpoints_and_the_last_cycle(
    start_service: StartService, make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    settings = magnify_settings(make_settings, simulators, admin_token=TOKEN)
    async with open_poller(settings, redis) as poller:
        report = await poller.poll_once()
    assert report.outcome == "ok" and report.ingested > 0
    service = await console(start_service, settings)
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/magnify")
        overview = await client.page("/console/")
    motions = re.findall(r"<td><code>([0-9a-f-]{36})</code></td>", html)
    assert len(motions) == await redis.hlen(keys.MAGNIFY_CHECKPOINTS) > 0
    assert f"{report.ingested} metrics ingested" in html and ">ok<" in html
    assert "oldest first" in html
    assert f"{report.ingested} metrics ingested" in overview


async def test_magnews_page_shows_the_subscription_as_magnews_reports_it(
    start_service: StartService, make_settings: SettingsFactory, simulators: Simulators
) -> None:
    secret = "hook-secret-5e2d"
    receiver = await console(start_service, make_settings(webhook_secret=secret))
    settings = make_settings(admin_token=TOKEN, webhook_secret=secret, public_url=receiver.url)
    assert (await magnews_webhook(settings, "register"))[0] == 0
    service = await console(start_service, settings)
    async with console_client(service.url) as client:
        await client.login()
        html = await client.page("/console/magnews")
        assert "this bridge" in html and "covers every rule topic" in html and ">active<" in html
        assert secret not in html and "token=***" in html
        await set_faults(simulators.endpoints.magnews_base_url, down=True)
        html = await client.page("/console/magnews")
        assert "Magnews refused:" in html and "503" in html


async def test_pages_never_scan_and_stay_bounded_whatever_the_store_holds(
    start_service: StartService, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await console(start_service, make_settings(admin_token=TOKEN))
    envelopes = [
        Envelope(f"b{n}", "magnews", "contacts/update", "2025-11-14T13:00:00.000Z", {"n": n}) for n in range(3000)
    ]
    for start in range(0, len(envelopes), 500):
        await ingest(redis, envelopes[start : start + 500])
    async with console_client(service.url) as client:
        await client.login()
        for path in (*PAGES, "/console/events?status=failed", "/console/events/b1"):
            await redis.config_resetstat()
            await client.page(path)
            stats = await redis.info("commandstats")
            calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
            assert not {"scan", "keys", "sscan", "zscan"} & set(calls), (path, calls)
            # Reading headers is the largest cost: at most one per index entry a page looks through.
            assert calls.get("hmget", 0) <= 1000 and sum(calls.values()) <= 1100, (path, sum(calls.values()))
