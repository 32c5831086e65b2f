"""Property-based fuzzing of the real receiver: arbitrary bytes, arbitrary JSON, near-valid events, tokens.

Hypothesis runs in a worker thread (``asyncio.to_thread``) while the service, its Redis client and the
HTTP session stay on the test's event loop; each example's requests are sent to that loop with
``run_coroutine_threadsafe``. Redis is flushed before every example, so each one is judged alone:

- no input gets a 5xx, and every refusal is an ``application/problem+json`` document naming a field;
- a refused request leaves Redis empty;
- an accepted request stored each of its events once, with the payload as sent, and queued one job each;
  the same body sent again (twice at once) is all duplicates and queues nothing new.

Each test prints how many inputs it sent and the statuses they got (``pytest tests/test_fuzz.py -s``).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support.service import Service, SettingsFactory
from tests.support.store import queued_batches

T = TypeVar("T")
WEBHOOK = "/webhooks/magnews"
PROBLEM = "application/problem+json"
_ID_CHARACTERS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)

FUZZ = hypothesis_settings(
    deadline=None,  # a round trip to a real socket and Redis; timing is not the property under test
    database=None,  # no example database written into the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Driver:
    """Runs the service's coroutines on its loop from the Hypothesis thread, and tallies statuses."""

    def __init__(self, service: Service, redis: aioredis.Redis, loop: asyncio.AbstractEventLoop):
        self.service = service
        self.redis = redis
        self.loop = loop
        self.statuses: Counter[int] = Counter()
        self.inputs = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def _post(self, body: bytes, headers: dict[str, str], params: dict[str, str]) -> tuple[int, str, Any]:
        url = f"{self.service.url}{WEBHOOK}"
        async with self.service.session.post(url, data=body, headers=headers, params=params) as response:
            text = await response.text()
            return response.status, response.content_type, json.loads(text) if text else None

    def post(
        self, body: bytes, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
    ) -> tuple[int, str, Any]:
        status, content_type, document = self.run(
            self._post(body, headers or {"Content-Type": "application/json"}, params or {})
        )
        self.statuses[status] += 1
        return status, content_type, document

    def post_twice_at_once(self, body: bytes) -> list[tuple[int, str, Any]]:
        async def both() -> list[tuple[int, str, Any]]:
            headers = {"Content-Type": "application/json"}
            return list(await asyncio.gather(*(self._post(body, headers, {}) for _ in range(2))))

        results = self.run(both())
        self.statuses.update(status for status, _, _ in results)
        return results

    def flush(self) -> None:
        """Start an example: an empty Redis, and one more input counted."""
        self.inputs += 1
        self.run(self.redis.flushall())

    def dbsize(self) -> int:
        return self.run(self.redis.dbsize())

    def report(self, name: str) -> None:
        classes = Counter(f"{status // 100}xx" for status in self.statuses.elements())
        print(
            f"\nfuzz {name}: {self.inputs} inputs, {sum(self.statuses.values())} requests; "
            f"classes {dict(sorted(classes.items()))}; statuses {dict(sorted(self.statuses.items()))}"
        )


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"stored payload holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


def assert_refusal(driver: Driver, status: int, content_type: str, document: Any) -> None:
    """A refusal is a problem document that names a field, and nothing was stored."""
    assert 400 <= status < 500, (status, document)
    assert content_type == PROBLEM
    assert document["status"] == status
    assert document["title"] and document["detail"]
    assert document.get("errors"), f"the refusal names no field: {document}"
    assert all(error.get("field") and error.get("message") for error in document["errors"])
    assert driver.dbsize() == 0, "a refused request stored something"


async def _queued(redis: aioredis.Redis) -> dict[str, list[str]]:
    """Each queued delivery job's event ids."""
    return await queued_batches(redis)


async def _stored(redis: aioredis.Redis, ids: list[str]) -> tuple[list[Any], list[bool], int]:
    """Per event its payload and whether the job it names holds it; and how many ids all jobs hold."""
    payloads = [await redis.hget(f"mb:event:{event_id}", "payload") for event_id in ids]
    queued = await _queued(redis)
    owners = [(await redis.hget(f"mb:event:{event_id}", "job") or b"").decode() for event_id in ids]
    held = [event_id in queued.get(owner, []) for event_id, owner in zip(ids, owners, strict=True)]
    return payloads, held, sum(len(members) for members in queued.values())


def assert_stored_once(driver: Driver, items: list[Any], answer: dict[str, Any]) -> None:
    """Every event of an accepted body is stored once, as sent, with one job; a resend is all duplicates."""
    ids: list[str] = answer["event_ids"]
    assert len(ids) == len(items)
    distinct = list(dict.fromkeys(ids))
    assert answer["accepted"] == len(distinct)
    assert answer["duplicates"] == len(ids) - len(distinct)
    payloads, jobs, queued = driver.run(_stored(driver.redis, distinct))
    assert queued == len(distinct), "each new event queued once, no more"
    assert all(jobs), "each event is held by the job it names"
    first_item = {event_id: item for event_id, item in reversed(list(zip(ids, items, strict=True)))}
    for event_id, payload in zip(distinct, payloads, strict=True):
        assert payload is not None, f"event {event_id} was acknowledged but not stored"
        assert _strict_json(payload.decode()) == first_item[event_id]


def assert_resend_is_duplicate(driver: Driver, body: bytes, answer: dict[str, Any]) -> None:
    queued_before = driver.run(_queued(driver.redis))
    for status, _, again in driver.post_twice_at_once(body):
        assert status == 200
        assert again["accepted"] == 0
        assert again["duplicates"] == len(answer["event_ids"])
        assert again["event_ids"] == answer["event_ids"]
    assert driver.run(_queued(driver.redis)) == queued_before


def is_test_request(body: Any) -> bool:
    return isinstance(body, dict) and (body.get("test") is True or body.get("topic") == "webhooks/test")


def judge_accepted(driver: Driver, body_bytes: bytes, body: Any, document: Any) -> None:
    if is_test_request(body):
        assert document["test"] is True
        assert driver.dbsize() == 0, "the test request creates no work"
        return
    items = body if isinstance(body, list) else [body]
    assert_stored_once(driver, items, document)
    assert_resend_is_duplicate(driver, body_bytes, document)


# --- 1. arbitrary bytes ------------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "application/cloudevents+json", "text/plain", ""]
)


@pytest.mark.slow
async def test_arbitrary_bytes_never_crash_nor_store(service: Service, redis: aioredis.Redis) -> None:
    driver = Driver(service, redis, asyncio.get_running_loop())
    json_ish = st.sampled_from([b"{", b"}", b"[", b"]", b'"', b":", b",", b"topic", b"\\u", b"\xff", b"\x00", b"1e9"])
    valid = [
        json.dumps({"id": "m1", "topic": "contacts/update", "data": {"email": "a@example.com"}}).encode(),
        json.dumps([{"topic": "contacts/create", "data": {"n": 1}}, {"id": 7, "topic": "x"}]).encode(),
    ]
    mutated = st.tuples(st.sampled_from(valid), st.integers(min_value=0, max_value=80), st.binary(max_size=3)).map(
        lambda parts: parts[0][: parts[1]] + parts[2] + parts[0][parts[1] + len(parts[2]) :]
    )
    bodies = st.one_of(
        st.binary(max_size=2048),
        mutated,
        st.lists(json_ish, max_size=60).map(b"".join),
        st.binary(max_size=64).map(lambda tail: b'{"topic": "t", "data": ' + tail),
    )

    @hypothesis_settings(FUZZ, max_examples=300)
    @given(body=bodies, content_type=CONTENT_TYPES)
    def check(body: bytes, content_type: str) -> None:
        driver.flush()
        headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
        status, received_type, document = driver.post(body, headers)
        assert status < 500, document
        if status == 200:
            parsed = json.loads(body.decode())
            judge_accepted(driver, body, parsed, document)
        else:
            assert_refusal(driver, status, received_type, document)

    await asyncio.to_thread(check)
    driver.report("arbitrary bytes")
    assert driver.statuses[400] > 0 and driver.statuses[415] > 0


# --- 2. arbitrary JSON -------------------------------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Ll", "Zs", "Sm", "Po", "Cc"]), max_size=8),
    st.sampled_from(["{{ 7 * 7 }}", "{% for x in range(9) %}x{% endfor %}", "{{ ''.__class__ }}", "webhooks/test"]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: json.dumps writes them as tokens that are not JSON
    TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=20,
)
# What the receiver must accept: no lone surrogates, no NaN or infinities, integers it can read.
CLEAN_TEXT = st.one_of(st.text(max_size=20), st.sampled_from(["{{ 7 * 7 }}", "{% raw %}", "é€😀", "\x00"]))
CLEAN_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        CLEAN_TEXT,
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(CLEAN_TEXT, children, max_size=4),
    max_leaves=10,
)
EVENT_SHAPED = st.fixed_dictionaries(
    {"topic": st.one_of(TEXT, JSON_VALUES)},
    optional={"id": JSON_VALUES, "timestamp": JSON_VALUES, "data": JSON_VALUES, "test": st.booleans()},
)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.slow
async def test_arbitrary_json_never_crashes_nor_stores_garbage(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    # Tight bounds, so that generated documents reach each of them.
    service = await start_service(
        make_settings(webhook_max_depth=8, webhook_max_string_length=256, webhook_max_fields=60)
    )
    driver = Driver(service, redis, asyncio.get_running_loop())
    documents = st.one_of(
        JSON_VALUES.map(json.dumps),
        st.lists(st.text(min_size=250, max_size=270), min_size=1, max_size=2).map(
            lambda texts: json.dumps({"topic": "t", "data": dict(enumerate(texts))})
        ),
        EVENT_SHAPED.map(json.dumps),
        st.lists(EVENT_SHAPED, max_size=4).map(json.dumps),
        st.integers(min_value=1, max_value=3000).map(_deep),
        st.integers(min_value=1, max_value=3000).map(lambda depth: '{"topic": "t", "data": ' + _deep(depth) + "}"),
        # An integer of more digits than Python's int() reads (json.dumps cannot even write one).
        st.integers(min_value=4200, max_value=4400).map(lambda digits: '{"topic": "t", "n": ' + "9" * digits + "}"),
    )

    @hypothesis_settings(FUZZ, max_examples=300)
    @given(text=documents)
    def check(text: str) -> None:
        driver.flush()
        body = text.encode("utf-8", "surrogatepass")
        status, content_type, document = driver.post(body)
        assert status < 500, document
        if status == 200:
            judge_accepted(driver, body, json.loads(text), document)
        else:
            assert_refusal(driver, status, content_type, document)

    await asyncio.to_thread(check)
    driver.report("arbitrary JSON")
    assert driver.statuses[200] > 0 and driver.statuses[400] > 0 and driver.statuses[413] > 0


# --- 3. near-valid events ----------------------------------------------------------------------------
# Each field comes from strategies known to be valid or known to be invalid, so the expected answer
# is known without re-implementing the parser: all valid gives 200, else 400 naming the first bad item.

ABSENT = object()
TOPICS = st.sampled_from(
    ["contacts/create", "contacts/update", "contacts/delete", "communications/msg/bounce", "transactionals/msg/open"]
)
VALID = {
    "topic": st.one_of(TOPICS, st.text(min_size=1, max_size=200).filter(str.strip)),
    "id": st.one_of(
        st.just(ABSENT),
        st.text(alphabet=_ID_CHARACTERS, min_size=1, max_size=200),
        st.integers(min_value=-(10**15), max_value=10**15),
    ),
    "timestamp": st.one_of(
        st.just(ABSENT),
        st.none(),
        st.datetimes(
            min_value=datetime(1971, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))]),
        ).map(lambda moment: moment.isoformat()),
        st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)).map(
            lambda moment: moment.isoformat() + "Z"
        ),
        st.integers(min_value=0, max_value=4_000_000_000),  # epoch seconds
        st.integers(min_value=10**11 + 1, max_value=4_000_000_000_000),  # epoch milliseconds
    ),
    "data": st.one_of(st.just(ABSENT), st.none(), st.dictionaries(CLEAN_TEXT, CLEAN_VALUES, max_size=5)),
}
INVALID = {
    "topic": st.one_of(
        st.just(ABSENT), st.sampled_from(["", "   ", "t" * 201]), st.integers(), st.none(), st.lists(st.just("a"))
    ),
    "id": st.one_of(
        st.sampled_from(["", "has space", "x" * 201, "é", "tab\tin", "line\nbreak"]),
        st.booleans(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.dictionaries(st.just("a"), st.integers(), min_size=1),
    ),
    "timestamp": st.one_of(
        st.sampled_from(["soon", "2025-13-45T00:00:00Z", "", "yesterday at noon"]),
        st.booleans(),
        st.just(1e300),
        st.lists(st.integers(), max_size=2),
    ),
    "data": st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=5), st.integers()),
}
EXTRAS = st.dictionaries(
    st.sampled_from(["source", "account", "note", "template", "version"]),
    st.one_of(CLEAN_TEXT, st.integers(), st.booleans()),
    max_size=3,
)


@st.composite
def near_valid_item(draw: st.DrawFn) -> tuple[dict[str, Any], str | None]:
    """An event and the first field that is invalid in it (None when it is valid)."""
    broken = draw(st.one_of(st.none(), st.none(), st.sampled_from(sorted(INVALID))))
    item: dict[str, Any] = dict(draw(EXTRAS))
    for field in ("topic", "id", "timestamp", "data"):
        value = draw(INVALID[field] if field == broken else VALID[field])
        if value is not ABSENT:
            item[field] = value
    return item, broken


ITEM_ORDER = {"topic": 0, "data": 1, "id": 2, "timestamp": 3}  # the order the receiver checks them in


@pytest.mark.slow
async def test_near_valid_events_get_exactly_the_expected_answer(service: Service, redis: aioredis.Redis) -> None:
    driver = Driver(service, redis, asyncio.get_running_loop())
    batches = st.tuples(st.lists(near_valid_item(), min_size=1, max_size=5), st.booleans())

    @hypothesis_settings(FUZZ, max_examples=300)
    @given(batch=batches)
    def check(batch: tuple[list[tuple[dict[str, Any], str | None]], bool]) -> None:
        driver.flush()
        pairs, as_array = batch
        if not as_array:
            pairs = pairs[:1]
        items = [item for item, _ in pairs]
        body_value: Any = items if as_array else items[0]
        body = json.dumps(body_value).encode()
        status, content_type, document = driver.post(body)
        # No object is refused for its content (CONTRACT.md, "Magnews webhook events"): one without a
        # usable topic or data is stored as `unclassified`, a bad id or timestamp falls back to the
        # hashed id or the time of receipt.
        broken = [field for _, field in pairs if field]
        assert status == 200, (document, broken, content_type)
        judge_accepted(driver, body, body_value, document)

    await asyncio.to_thread(check)
    driver.report("near-valid events")
    assert driver.statuses[200] > 0


# --- 4. tokens ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_no_guessed_token_gets_in(
    start_service: Any, make_settings: SettingsFactory, redis: aioredis.Redis
) -> None:
    secret, previous = "fuzz-secret-4f1e9a", "fuzz-previous-77c2"
    service = await start_service(make_settings(webhook_secret=secret, webhook_secret_previous=previous))
    driver = Driver(service, redis, asyncio.get_running_loop())
    near = st.sampled_from([secret, previous]).flatmap(
        lambda valid: st.one_of(
            st.integers(min_value=0, max_value=len(valid) - 1).map(lambda cut: valid[:cut]),
            st.text(min_size=1, max_size=3).map(lambda extra: valid + extra),
            st.just(valid.upper()),
        )
    )
    tokens = st.one_of(st.text(max_size=40), near)

    @hypothesis_settings(FUZZ, max_examples=150)
    @given(token=tokens, in_header=st.booleans())
    def check(token: str, in_header: bool) -> None:
        driver.flush()
        body = json.dumps({"id": "guess", "topic": "contacts/update"}).encode()
        headers = {"Content-Type": "application/json"}
        params: dict[str, str] = {}
        header_safe = token.isprintable() and token.isascii() and token == token.strip()
        if in_header and header_safe:
            headers["X-Webhook-Token"] = token
        else:
            params["token"] = token
        status, content_type, document = driver.post(body, headers, params)
        assert status == 401, (token, document)
        assert_refusal(driver, status, content_type, document)

    await asyncio.to_thread(check)
    driver.report("guessed tokens")
    for token in (secret, previous):  # the harness can tell a right token from a wrong one
        async with service.post_webhook({"id": token, "topic": "t"}, params={"token": token}) as response:
            assert response.status == 200


async def test_fuzz_harness_sees_a_real_answer(service: Service, redis: aioredis.Redis) -> None:
    """The harness itself: a valid event through the thread bridge is stored (so the properties can fail)."""
    driver = Driver(service, redis, asyncio.get_running_loop())

    def send() -> tuple[int, str, Any]:
        return driver.post(json.dumps({"id": "h1", "topic": "contacts/update"}).encode())

    status, _, document = await asyncio.to_thread(send)
    assert (status, document["accepted"]) == (200, 1)
    assert await redis.exists("mb:event:h1") == 1
