"""Security of the receiver on a real socket: who may post, how much, how slowly, and that secrets stay secret."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import subprocess
import sys
import time
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
import structlog

from bridge.cli.check import run_check
from bridge.logs import configure_logging
from bridge.simulators import Simulators
from bridge.web.webhook_guard import client_address
from config.errors import ConfigError
from config.settings import Settings, load_settings
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import sim_requests
from tests.support.store import event_record
from tests.support.workers import run_worker_burst

JSON = {"Content-Type": "application/json"}
WEBHOOK = "/webhooks/magnews"


def _event(event_id: str = "evt-1", **data: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "topic": "contacts/update",
        "timestamp": "2025-11-14T13:00:00Z",
        "data": {"email": "a@example.com", **data},
    }


async def _post(service: Service, body: bytes, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """POST raw bytes; returns (status, content type, decoded body or text)."""
    async with service.session.post(
        f"{service.url}{WEBHOOK}", data=io.BytesIO(body), headers=headers or JSON, **kwargs
    ) as response:
        text = await response.text()
        try:
            decoded: Any = json.loads(text)
        except ValueError:
            decoded = text
        return response.status, response.content_type, decoded


def _port(service: Service) -> int:
    port = urlsplit(service.url).port
    assert port is not None
    return port


# --- authentication ---------------------------------------------------------------------------------


async def test_rotation_accepts_the_current_and_the_previous_secret_only(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_secret="new-secret", webhook_secret_previous="old-secret"))
    body = json.dumps(_event("r1")).encode()
    assert (await _post(service, body, params={"token": "new-secret"}))[0] == 200
    assert (await _post(service, body, headers={**JSON, "X-Webhook-Token": "old-secret"}))[0] == 200
    for wrong in ("older-secret", "new-secre", "new-secret ", "NEW-SECRET", "old-secretX"):
        status, content_type, problem = await _post(service, json.dumps(_event("r2")).encode(), params={"token": wrong})
        assert (status, content_type) == (401, "application/problem+json"), wrong
        assert problem["errors"] == [{"field": "token", "message": "does not match MAGBRIDGE_WEBHOOK_SECRET"}]
        assert wrong not in json.dumps(problem), "a refused token is never echoed"
    assert await redis.exists("mb:event:r1") == 1
    assert await redis.exists("mb:event:r2") == 0


async def test_missing_token_names_the_field_and_stores_nothing(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_secret="s3cret-value"))
    status, _, problem = await _post(service, json.dumps(_event()).encode())
    assert status == 401
    assert problem["errors"][0]["field"] == "token"
    assert "?token=" in problem["errors"][0]["message"] and "X-Webhook-Token" in problem["errors"][0]["message"]
    # Magnews' test request comes to the registered URL too: without the token it is refused.
    status, _, _ = await _post(service, b'{"test": true}')
    assert status == 401
    status, _, answer = await _post(service, b'{"test": true}', params={"token": "s3cret-value"})
    assert (status, answer["test"]) == (200, True)
    assert await redis.dbsize() == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"webhook_secret_previous": "old"}, "WEBHOOK_SECRET_PREVIOUS is set without"),
        ({"webhook_secret": ""}, "WEBHOOK_SECRET is empty"),
        ({"webhook_secret": "x", "webhook_secret_previous": "  "}, "WEBHOOK_SECRET_PREVIOUS is empty"),
        ({"webhook_allowed_networks": "10.0.0.1/8"}, "has host bits set"),
        ({"trusted_proxies": "proxy.internal"}, "not a network in CIDR notation"),
        ({"webhook_max_depth": 5000}, "WEBHOOK_MAX_DEPTH"),
    ],
)
def test_unusable_security_settings_stop_the_process(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_env_file=None, **overrides)


def test_networks_are_read_from_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGBRIDGE_WEBHOOK_ALLOWED_NETWORKS", "203.0.113.0/24, 2001:db8::/32")
    monkeypatch.setenv("MAGBRIDGE_TRUSTED_PROXIES", "127.0.0.1/32")
    settings = load_settings(_env_file=None)
    assert settings.webhook_allowed_networks == [ip_network("203.0.113.0/24"), ip_network("2001:db8::/32")]
    assert settings.trusted_proxies == [ip_network("127.0.0.1/32")]


# --- source networks and trusted proxies ------------------------------------------------------------

TRUSTED = [ip_network("127.0.0.0/8"), ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy that forwards nothing is the client
        ("198.51.100.9", ["203.0.113.7"], "198.51.100.9"),  # an untrusted peer: its header is ignored
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # two proxies deep
        ("127.0.0.1", ["203.0.113.7", "10.1.2.3"], "203.0.113.7"),  # repeated headers read as one list
        ("127.0.0.1", ["203.0.113.7, 198.51.100.1"], "198.51.100.1"),  # the rightmost untrusted hop counts
        ("127.0.0.1", ["1.2.3.4, 203.0.113.7"], "203.0.113.7"),  # a forged left part changes nothing
        ("127.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # IPv4-mapped peer on a dual-stack socket
        ("127.0.0.1", ["10.9.9.9, 127.0.0.2"], "10.9.9.9"),  # every hop trusted: the leftmost
        ("127.0.0.1", ["not-an-address"], None),
        ("127.0.0.1", ["203.0.113.7, garbage"], None),
        (None, [], None),
    ],
)
def test_client_address_believes_only_trusted_proxies(
    peer: str | None, forwarded: list[str], client: str | None
) -> None:
    expected = None if client is None else ip_address(client)
    assert client_address(peer, forwarded, TRUSTED) == expected


async def test_allow_list_refuses_other_networks_with_403(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    outside = await start_service(make_settings(webhook_allowed_networks=["10.0.0.0/8"]))
    status, content_type, problem = await _post(outside, json.dumps(_event("n1")).encode())
    assert (status, content_type) == (403, "application/problem+json")
    assert "127.0.0.1 is not in MAGBRIDGE_WEBHOOK_ALLOWED_NETWORKS" in problem["detail"]
    # Without a trusted proxy, X-Forwarded-For is the client's own claim and proves nothing.
    spoofed = {**JSON, "X-Forwarded-For": "10.1.2.3"}
    assert (await _post(outside, json.dumps(_event("n1")).encode(), headers=spoofed))[0] == 403
    assert await redis.dbsize() == 0
    inside = await start_service(make_settings(webhook_allowed_networks=["127.0.0.0/8", "::1/128"]))
    assert (await _post(inside, json.dumps(_event("n2")).encode()))[0] == 200


async def test_forwarded_for_counts_only_from_a_trusted_proxy(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(
        make_settings(webhook_allowed_networks=["203.0.113.0/24"], trusted_proxies=["127.0.0.1/32"])
    )
    cases = [
        ("203.0.113.7", 200),
        ("198.51.100.1", 403),
        ("203.0.113.7, 198.51.100.1", 403),
        ("198.51.100.1, 203.0.113.7", 200),
        ("garbage", 403),
    ]
    for index, (forwarded, expected) in enumerate(cases):
        headers = {**JSON, "X-Forwarded-For": forwarded}
        status, _, body = await _post(service, json.dumps(_event(f"p{index}")).encode(), headers=headers)
        assert status == expected, (forwarded, body)
    # No header at all: the proxy itself (127.0.0.1) is the client, and it is not allowed.
    assert (await _post(service, json.dumps(_event("p-none")).encode()))[0] == 403
    assert sorted(await redis.zrange("mb:events", 0, -1)) == [b"p0", b"p3"]


async def test_network_check_comes_before_the_token(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_secret="tok", webhook_allowed_networks=["10.0.0.0/8"]))
    status, _, _ = await _post(service, json.dumps(_event()).encode(), params={"token": "tok"})
    assert status == 403, "a right token from a wrong network is still refused"


# --- request bounds -------------------------------------------------------------------------------


async def test_100k_nested_brackets_are_a_clean_400(service: Service, redis: aioredis.Redis) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 200_000):
        status, content_type, problem = await _post(service, body)
        assert (status, content_type) == (400, "application/problem+json"), problem
        assert problem["errors"][0]["field"] == "$"
    async with service.session.get(f"{service.url}/healthz") as response:
        assert response.status == 200
    assert await redis.dbsize() == 0


async def test_depth_limit_names_the_place(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_max_depth=6))
    # Depth: the array 1, the event 2, data 3, then the nested objects 4, 5 and 6.
    fits = {"id": "deep-ok", "topic": "t", "data": {"a": {"b": {"c": {"leaf": 1}}}}}
    assert (await _post(service, json.dumps([fits]).encode()))[0] == 200
    too_deep = {"id": "deep-no", "topic": "t", "data": {"a": {"b": {"c": {"d": {"leaf": 1}}}}}}
    status, _, problem = await _post(service, json.dumps([too_deep]).encode())
    assert status == 400
    assert problem["errors"] == [{"field": "$[0].data.a.b.c.d", "message": "nested deeper than 6 levels"}]
    assert await redis.exists("mb:event:deep-no") == 0


@pytest.mark.parametrize(
    ("body", "status", "field", "rule"),
    [
        (json.dumps(_event(note="x" * 300)), 413, "$.data.note", "longer than 256 characters"),
        (json.dumps(_event(**{"k" * 300: 1})), 413, '$.data["' + "k" * 40 + '..."]', "the key is longer than 256"),
        (json.dumps([_event(f"f{i}") for i in range(8)]), 413, "$", "more than 40 values"),
        ('{"topic": "t", "data": {"n": NaN}}', 400, "$.data.n", "not a finite number"),
        ('{"topic": "t", "data": {"n": -Infinity}}', 400, "$.data.n", "not a finite number"),
        ('{"topic": "t", "data": {"n": 1e999}}', 400, "$.data.n", "not a finite number"),
        ('{"topic": "t", "data": {"n": ' + "9" * 5000 + "}}", 400, "$", "more digits"),
        ('{"topic": "t", "data": {"s": "\\ud800"}}', 400, "$.data.s", "lone UTF-16 surrogate"),
        ('{"topic": "t", "data": {"\\udfff": 1}}', 400, '$.data["\\udfff"]', "lone UTF-16 surrogate"),
        ('{"topic": "a", "topic": "b"}', 400, "$", "the key 'topic' appears twice"),
        ("\ufeff" + json.dumps(_event()), 400, "$", "not valid JSON"),
    ],
)
async def test_hostile_json_is_refused_naming_field_and_rule(
    start_service: Any,
    make_settings: SettingsFactory,
    redis: aioredis.Redis,
    body: str,
    status: int,
    field: str,
    rule: str,
) -> None:
    service = await start_service(make_settings(webhook_max_string_length=256, webhook_max_fields=40))
    got, content_type, problem = await _post(service, body.encode("utf-8"))
    assert (got, content_type) == (status, "application/problem+json"), problem
    [error] = problem["errors"]
    assert error["field"] == field
    assert rule in error["message"]
    assert rule in problem["detail"]
    assert await redis.dbsize() == 0


async def test_limits_are_generous_for_real_events(service: Service, redis: aioredis.Redis) -> None:
    """The defaults take a full batch of realistic events with long text."""
    batch = [_event(f"real-{i}", note="é" * 3000, tags=list(range(20))) for i in range(150)]
    body = json.dumps(batch, ensure_ascii=False).encode()
    assert 900_000 < len(body) < 1024 * 1024
    status, _, answer = await _post(service, body)
    assert status == 200
    assert answer["accepted"] == 150
    assert await redis.zcard("mb:events") == 150


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
async def test_other_methods_get_405(service: Service, method: str) -> None:
    async with service.session.request(method, f"{service.url}{WEBHOOK}") as response:
        assert response.status == 405
        if method != "HEAD":
            assert response.content_type == "application/problem+json"
            assert f"{method} is not allowed" in (await response.json(content_type=None))["detail"]


async def test_405_names_the_allowed_method(service: Service) -> None:
    async with service.session.put(f"{service.url}{WEBHOOK}") as response:
        assert response.status == 405
        assert response.headers.get("Allow") == "POST"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
async def test_non_json_content_types_get_415_naming_the_header(
    service: Service, redis: aioredis.Redis, content_type: str
) -> None:
    status, _, problem = await _post(service, json.dumps(_event()).encode(), headers={"Content-Type": content_type})
    assert status == 415
    assert problem["errors"] == [{"field": "Content-Type", "message": "must be application/json"}]
    assert await redis.dbsize() == 0


async def test_compressed_bodies_are_bounded_after_decompression(service: Service, redis: aioredis.Redis) -> None:
    gzipped = {**JSON, "Content-Encoding": "gzip"}
    status, _, _ = await _post(service, gzip.compress(json.dumps(_event("gz")).encode()), headers=gzipped)
    assert status == 200
    bomb = gzip.compress(b"[" + b" " * (32 * 1024 * 1024) + b"]")  # 32 MiB of JSON in ~32 KiB
    assert len(bomb) < 64 * 1024
    status, content_type, problem = await _post(service, bomb, headers=gzipped)
    assert (status, content_type) == (413, "application/problem+json"), problem
    status, content_type, problem = await _post(service, b"\x1f\x8b not gzip at all", headers=gzipped)
    assert (status, content_type) == (400, "application/problem+json"), problem
    assert problem["title"] == "Bad Request" and problem["detail"].startswith("the body could not be read")
    assert await redis.zrange("mb:events", 0, -1) == [b"gz"]


async def test_slow_body_gets_408_and_stores_nothing(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_read_timeout_seconds=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(service))
    try:
        body = json.dumps(_event("slow")).encode()
        writer.write(
            b"POST /webhooks/magnews HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        await writer.drain()
        started = time.monotonic()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"application/problem+json" in head
    assert 0.2 < elapsed < 3
    assert await redis.dbsize() == 0


async def test_slow_headers_are_cut_off(start_service: Any, make_settings: SettingsFactory) -> None:
    service = await start_service(make_settings(http_header_timeout_seconds=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(service))
    try:
        writer.write(b"POST /webhooks/magnews HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
        await writer.drain()
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
        await writer.wait_closed()
    assert rest == b"", "the server closes the connection without an answer"
    assert elapsed < 3
    # A client that does send its request in time is served as usual.
    async with service.session.get(f"{service.url}/healthz") as response:
        assert response.status == 200


# --- event data stay values; rendered values keep the destination's limits --------------------------


async def test_template_syntax_in_a_payload_stays_inert_end_to_end(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    hostile = "{{ 7 * 7 }}{% for x in range(3) %}boom{% endfor %}{{ ''.__class__.__mro__ }}"
    event = {
        "id": "inert-1",
        "topic": "contacts/create",
        "data": {"email": "ada@example.com", "fields": {"name": hostile}},
    }
    status, _, _ = await _post(service, json.dumps(event).encode())
    assert status == 200
    await run_worker_burst(settings)
    [request] = await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts")
    assert request["body"]["title"] == f"Welcome, {hostile}!"
    assert (await event_record(redis, "inert-1"))["status"] == "delivered"


async def test_a_rendered_value_over_the_destination_limit_fails_permanently(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    data = {"email": "ada@example.com", "fields": {"name": "n" * 300}}
    status, _, _ = await _post(service, json.dumps({"id": "long-1", "topic": "contacts/create", "data": data}).encode())
    assert status == 200
    await run_worker_burst(settings)
    assert await sim_requests(simulators.endpoints.magicbell_base_url, "/broadcasts") == []
    record = await event_record(redis, "long-1")
    assert record["status"] == "failed"
    [action] = record["actions"]
    assert action["status"] == "dead"
    assert "title: 310 characters; MagicBell accepts 1 to 255" in action["last_error"]


# --- secrets never shown --------------------------------------------------------------------------

SECRETS = {
    "webhook_secret": "whsec-CURRENT-6d1f",
    "webhook_secret_previous": "whsec-PREVIOUS-9a2b",
    "admin_token": "admin-TOKEN-3c4d",
    "magicbell_token": "mbell-TOKEN-wrong-5e6f",
    "magnews_token": "mnews-TOKEN-wrong-7a8b",
    "magnify_client_id": "client-1",
    "magnify_client_secret": "mfy-SECRET-1c2d",
}
SECRET_VALUES = [value for name, value in SECRETS.items() if name != "magnify_client_id"]


def _assert_no_secret(text: str) -> None:
    for value in SECRET_VALUES:
        assert value not in text


def test_settings_never_show_secrets() -> None:
    settings = load_settings(_env_file=None, **SECRETS)
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())):
        _assert_no_secret(shown)
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == SECRETS["webhook_secret"]


async def test_tokens_never_reach_the_logs(
    start_service: Any,
    make_settings: SettingsFactory,
    redis: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    configure_logging("debug", "json")
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)  # the access log prints the request line
    service = await start_service(make_settings(**SECRETS, log_level="debug"))
    body = json.dumps(_event("logged")).encode()
    assert (await _post(service, body, params={"token": SECRETS["webhook_secret"]}))[0] == 200
    by_header = {**JSON, "X-Webhook-Token": SECRETS["webhook_secret_previous"]}
    assert (await _post(service, body, headers=by_header))[0] == 200
    assert (await _post(service, body, params={"token": SECRETS["admin_token"]}))[0] == 401
    async with service.session.get(
        f"{service.url}/admin/events", headers={"Authorization": f"Bearer {SECRETS['admin_token']}"}
    ) as response:
        assert response.status == 200
    structlog.get_logger("test").info("headers seen", headers={"X-Webhook-Token": SECRETS["webhook_secret"]})
    output = capsys.readouterr().out
    assert "token=***" in output, "the access log line was written, with its token hidden"
    seen = [json.loads(line) for line in output.splitlines() if '"headers seen"' in line]
    assert seen and seen[0]["headers"] == {"X-Webhook-Token": "***"}
    _assert_no_secret(output)


async def test_check_output_never_shows_secrets(make_settings: SettingsFactory, redis: aioredis.Redis) -> None:
    out = io.StringIO()
    status = await run_check(make_settings(**SECRETS), out=out)
    assert status != 0, "the wrong API tokens make checks fail, so their error paths ran"
    _assert_no_secret(out.getvalue())


async def test_admin_api_is_off_without_a_token_and_never_shows_secrets(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    without = await start_service(make_settings())
    async with without.session.get(f"{without.url}/admin/events") as response:
        assert response.status == 503
        assert response.content_type == "application/problem+json"
    service = await start_service(make_settings(**SECRETS))
    async with service.session.get(f"{service.url}/admin/events", headers={"Authorization": "Bearer nope"}) as response:
        assert response.status == 401
    body = json.dumps(_event("adm")).encode()
    assert (await _post(service, body, params={"token": SECRETS["webhook_secret"]}))[0] == 200
    auth = {"Authorization": f"Bearer {SECRETS['admin_token']}"}
    for path in ("/admin/events", "/admin/events/adm", "/admin/dead-letters", "/openapi.json", "/metrics"):
        async with service.session.get(f"{service.url}{path}", headers=auth) as response:
            assert response.status == 200, path
            _assert_no_secret(await response.text())
    async with service.session.get(f"{service.url}/readyz") as response:  # 503 here: no worker runs
        _assert_no_secret(await response.text())


async def test_refusals_never_echo_what_was_sent(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(webhook_secret=SECRETS["webhook_secret"]))
    guess = SECRETS["webhook_secret"] + "x"
    for params in ({"token": guess}, {"token": guess, "other": "1"}):
        async with service.session.post(f"{service.url}{WEBHOOK}?a=b", params=params, json=_event()) as response:
            assert response.status == 401
            text = await response.text()
        assert guess not in text
        assert json.loads(text)["instance"] == WEBHOOK, "the problem's instance is the path, never the query"


# --- dependency audit ------------------------------------------------------------------------------

_FAKE_PIP_AUDIT = """#!{python}
import json, sys
service = sys.argv[sys.argv.index("--vulnerability-service") + 1]
mode = {mode!r}
if mode == "vulnerable":
    print(json.dumps({{"dependencies": [
        {{"name": "aiohttp", "version": "3.9.0", "vulns": [{{"id": "GHSA-test", "fix_versions": ["3.9.2"]}}]}},
        {{"name": "redis", "version": "5.0.0", "vulns": []}},
    ]}}))
    sys.exit(1)
if mode == "unknown" or service == "pypi":
    print(json.dumps({{"dependencies": [
        {{"name": "aiohttp", "skip_reason": "Dependency not found on PyPI and could not be audited: aiohttp"}},
    ]}}))
    sys.exit(0)
print("ConnectionError: Failed to resolve 'api.osv.dev'", file=sys.stderr)
sys.exit(1)
"""


@pytest.mark.parametrize(
    ("mode", "strict", "status", "says"),
    [
        ("vulnerable", False, 1, "VULNERABLE aiohttp 3.9.0: GHSA-test (fixed in 3.9.2)"),
        ("offline", False, 0, "AUDIT NOT PERFORMED"),
        ("offline", True, 2, "osv: ConnectionError: Failed to resolve 'api.osv.dev'"),
        ("unknown", False, 0, "pypi: answered for none of 1 packages"),
    ],
)
def test_audit_script_tells_vulnerable_from_not_performed(
    tmp_path: Path, mode: str, strict: bool, status: int, says: str
) -> None:
    fake = tmp_path / "pip-audit"
    fake.write_text(_FAKE_PIP_AUDIT.format(python=sys.executable, mode=mode))
    fake.chmod(0o755)
    requirements = tmp_path / "constraints.txt"
    requirements.write_text("# pins\naiohttp==3.9.0\nredis==5.0.0\n")
    script = Path(__file__).resolve().parent.parent / "scripts" / "audit"
    done = subprocess.run(
        [sys.executable, str(script), *(["--strict"] if strict else []), str(requirements)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "MAGBRIDGE_PIP_AUDIT": str(fake)},
        check=False,
    )
    assert done.returncode == status, done.stdout + done.stderr
    assert says in done.stdout


async def test_admin_replay_body_is_bounded_too(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    service = await start_service(make_settings(admin_token=SECRETS["admin_token"]))
    headers = {**JSON, "Authorization": f"Bearer {SECRETS['admin_token']}"}
    async with service.session.post(f"{service.url}/admin/replay", data=b"[" * 100_000, headers=headers) as response:
        assert response.status == 400
