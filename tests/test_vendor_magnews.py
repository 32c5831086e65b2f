"""Magnews readings: the two documented merge answers (and one with no outcome, read back), the consent
options of the default rules, and webhook bodies and test requests whose shape Magnews does not publish.

Everything runs on real Redis, the real simulators and, end to end, a real arq worker; each test
asserts what the simulator recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from bridge.events import UNCLASSIFIED, magnify_envelope
from bridge.simulators import SIM_CORE, Simulators
from bridge.simulators.magnews import MAGNEWS_BACKEND, MagnewsBackend
from bridge.store.reads import EventReader
from config.errors import MergeOutcomeUnknown, PermanentDeliveryError, TransientDeliveryError
from config.settings import Settings
from tests.support.commands import magnews_webhook
from tests.support.events import magnify_metric
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import sim_requests
from tests.support.store import event_record, ingest
from tests.support.workers import run_worker_burst
from workers.destinations.http import ApiResponse
from workers.destinations.magnews import MagnewsClient, merge_outcome
from workers.destinations.merge_readback import MergeReadBack, unlike
from workers.ledger import Ledger

CONSENT = {
    "sendemail": False,
    "enterworkflow": False,
    "denysubscribenewcontact": True,
    "denysubscribeunsubscribedcontact": True,
}


def backend(simulators: Simulators) -> MagnewsBackend:
    return simulators.magnews_app[MAGNEWS_BACKEND]


def choose(simulators: Simulators, **answers: str) -> None:
    simulators.magnews_app[SIM_CORE].readings.update(answers)


# --- 1. merge results -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"ok": True, "pk": "a", "idcontact": 1, "action": "insert", "errors": None}, ApiResponse),
        ({"ok": True, "action": "nothing", "errors": []}, ApiResponse),
        ({"idcontact": 1, "result": "created", "message": "Contact successfully created"}, ApiResponse),
        ({"result": "updated"}, ApiResponse),
        ({"action": "update"}, ApiResponse),
        (
            {"ok": False, "pk": "a", "idcontact": 0, "action": "nothing", "errors": [{"type": "x"}]},
            PermanentDeliveryError,
        ),
        ({"ok": True, "action": "insert", "errors": [{"type": "invalid_value", "field": "x"}]}, PermanentDeliveryError),
        ({"idcontact": None, "result": "error", "errors": [{"type": "x", "field": "y"}]}, PermanentDeliveryError),
        ({"email": "a@example.com", "message": "Contact processed"}, TransientDeliveryError),
        ({}, TransientDeliveryError),
        ({"ok": "yes", "result": "created"}, TransientDeliveryError),
        ([1], TransientDeliveryError),
    ],
)
def test_merge_outcome_reads_both_documented_shapes(answer: Any, expected: type) -> None:
    assert isinstance(merge_outcome(answer, 200, json.dumps(answer)), expected)


@pytest.fixture
async def magnews(simulators: Simulators) -> Any:
    async with aiohttp.ClientSession() as session:
        yield MagnewsClient(session, simulators.endpoints.magnews_base_url, SecretStr("sim-magnews-token"), timeout=5)


@pytest.mark.parametrize("reading", ["table", "examples"])
async def test_merge_and_batchmerge_succeed_under_each_documented_answer(
    simulators: Simulators, magnews: MagnewsClient, reading: str
) -> None:
    choose(simulators, merge_result=reading)
    options = {"iddatabase": 7, **CONSENT}
    response = await magnews.merge_contact({"magnify_user_id": "u1"}, options, idempotency_key="k1")
    assert ("ok" in response.body) == (reading == "table")
    results = await magnews.batch_merge(
        7, [{"magnify_user_id": "u1", "x": "1"}, {"x": "no primary key"}, {"magnify_user_id": "u2"}], CONSENT, "k2"
    )
    assert [type(result) for result in results] == [ApiResponse, PermanentDeliveryError, ApiResponse]
    first = results[0]
    assert isinstance(first, ApiResponse)
    assert ("ok" in first.body, "result" in first.body) == (reading == "table", reading == "examples")
    contacts = backend(simulators).contacts.in_database(7)
    assert [(c.fields["magnify_user_id"], c.fields.get("x")) for c in contacts] == [("u1", "1"), ("u2", None)]
    assert backend(simulators).side_effects == 3  # insert u1, update u1, insert u2


async def test_a_refused_merge_is_permanent_under_each_answer(simulators: Simulators, magnews: MagnewsClient) -> None:
    for reading, status in (("table", 200), ("examples", 400)):
        choose(simulators, merge_result=reading)
        with pytest.raises(PermanentDeliveryError) as caught:
            await magnews.merge_contact({"x": "no primary key"}, {"iddatabase": 7}, idempotency_key=reading)
        assert caught.value.status == status
    assert backend(simulators).side_effects == 0


async def test_an_answer_without_outcome_is_unknown_not_permanent(
    simulators: Simulators, magnews: MagnewsClient
) -> None:
    choose(simulators, merge_result="message_only")
    with pytest.raises(MergeOutcomeUnknown, match="outcome unknown"):
        await magnews.merge_contact({"magnify_user_id": "u1"}, {"iddatabase": 7}, idempotency_key="k")
    results = await magnews.batch_merge(7, [{"magnify_user_id": "u1"}, {"magnify_user_id": "u2"}], {}, "k2")
    assert all(isinstance(result, MergeOutcomeUnknown) for result in results)
    assert isinstance(results[0], TransientDeliveryError)  # retried unless a read-back confirms it
    # Sending again is harmless: the merge is by primary key, so u1 is one contact.
    assert len(backend(simulators).contacts.in_database(7)) == 2


async def _engagement_run(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis, users: int
) -> dict[str, int]:
    envelopes = [magnify_envelope(magnify_metric("magnify_send_email_open", user=f"user_{i}")) for i in range(users)]
    assert await ingest(redis, envelopes) == [True] * users
    await run_worker_burst(settings)
    statuses = [(await event_record(redis, envelope.id))["status"] for envelope in envelopes]
    _, dead = await EventReader(redis).index_sizes()
    effects = backend(simulators).side_effects
    return {
        "sent": users,
        "delivered": statuses.count("delivered"),
        "dead": dead,
        "duplicated": effects - len(backend(simulators).contacts.in_database(7)),
        "contacts": len(backend(simulators).contacts.in_database(7)),
        "side_effects": effects,
    }


@pytest.mark.parametrize("users", [1, 20])
@pytest.mark.parametrize("reading", ["table", "examples"])
async def test_end_to_end_merges_are_delivered_once_under_each_answer(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis, reading: str, users: int
) -> None:
    choose(simulators, merge_result=reading)
    numbers = await _engagement_run(settings, simulators, redis, users)
    print(f"merge_result={reading} users={users}: {numbers}")
    assert numbers == {
        "sent": users,
        "delivered": users,
        "dead": 0,
        "duplicated": 0,
        "contacts": users,
        "side_effects": users,
    }
    merges = await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/merge")
    batches = await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/batchmerge")
    assert len(merges) + sum(len(batch["body"]["contacts"]) for batch in batches) == users


@pytest.mark.parametrize(
    ("contact", "values", "differs"),
    [
        ({"status": "subscribed", "fields": {"a": "1", "b": "x"}}, {"a": 1, "b": " x "}, ""),
        ({"status": "unsubscribed", "fields": {"a": "1"}}, {"a": "1", "status": "unsubscribed"}, ""),
        ({"fields": {"a": None, "t": "true"}}, {"a": "", "t": True}, ""),
        ({"idcontact": 3, "a": "1"}, {"a": "1"}, ""),  # a field at the top level: read there
        ({"fields": {"a": "1"}}, {"a": "2"}, "a is '1', not '2'"),
        ({"fields": {}}, {"a": "2"}, "no a (sent '2')"),
        ({"fields": {"a": {"x": 1}}}, {"a": "1"}, "no a (sent '1')"),
        ({"status": "unconfirmed", "fields": {"status": "x"}}, {"status": "x"}, "status is 'unconfirmed', not 'x'"),
    ],
)
def test_a_contact_read_back_holds_the_values_as_strings(
    contact: dict[str, Any], values: dict[str, Any], differs: str
) -> None:
    assert unlike(contact, values) == differs


async def test_read_backs_of_one_iteration_share_one_query_per_contact() -> None:
    asked: list[str] = []

    async def query(text: str) -> list[dict[str, Any]]:  # a pure unit: the query API's answers
        asked.append(text)
        if "'down'" in text:
            raise TransientDeliveryError("magnews: 503", status=503)
        return [{"idcontact": 1, "fields": {"k": "a", "x": "1"}}] if "'a'" in text else []

    readback = MergeReadBack(query)
    results = await asyncio.gather(
        readback.confirm(7, "k", {"k": "a", "x": "1"}),
        readback.confirm(7, "k", {"k": "a", "x": "2"}),
        readback.confirm(7, "k", {"k": "b", "x": "1"}),
        readback.confirm(7, "k", {"k": "o'brien"}),
        readback.confirm(7, "k", {"k": "down"}),
        return_exceptions=True,
    )
    assert asked == [
        "select * from contacts where iddatabase=7 and k='a' limit 2",
        "select * from contacts where iddatabase=7 and k='b' limit 2",
        "select * from contacts where iddatabase=7 and k='down' limit 2",
    ]  # a and a: one query; o'brien: none (MQL's quoting is undocumented)
    first, second, third, fourth, fifth = results
    assert (
        not isinstance(first, BaseException)
        and first.confirmed
        and first.contact
        == {
            "idcontact": 1,
            "fields": {"k": "a", "x": "1"},
        }
    )
    assert not isinstance(second, BaseException) and not second.confirmed
    assert second.differs == "the contact with k = 'a' has x is '1', not '2'"
    assert not isinstance(third, BaseException) and third.differs == "no contacts of database 7 with k = 'b'"
    assert not isinstance(fourth, BaseException) and fourth.differs.startswith("cannot read the contact back by k")
    assert isinstance(fifth, TransientDeliveryError)  # the query's failure, its own caller's only


async def _queries(simulators: Simulators) -> list[dict[str, Any]]:
    return await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/query", method="GET")


@pytest.mark.parametrize("users", [1, 20])
async def test_end_to_end_unknown_outcome_is_read_back_and_confirmed(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, users: int
) -> None:
    choose(simulators, merge_result="message_only")
    # One merge alone goes as /merge, twenty wait 200 ms to share batchmerge calls. One breaker
    # failure would open the circuit: an answer without outcome must not count as one.
    settings = make_settings(magnews_batch_wait_ms=200, breaker_failures=1)
    numbers = await _engagement_run(settings, simulators, redis, users)
    print(f"merge_result=message_only users={users}: {numbers}")
    assert numbers == {
        "sent": users,
        "delivered": users,
        "dead": 0,
        "duplicated": 0,
        "contacts": users,
        "side_effects": users,
    }
    base = simulators.endpoints.magnews_base_url
    merges = await sim_requests(base, "/v19/contacts/merge")
    batches = await sim_requests(base, "/v19/contacts/batchmerge")
    assert len(merges) + sum(len(batch["body"]["contacts"]) for batch in batches) == users, "each merge sent once"
    assert (len(batches) > 0) == (users > 1)
    queries = await _queries(simulators)
    assert len(queries) == users, "one read-back per merge"
    assert all(any(f"'user_{n}'" in str(q) for q in queries) for n in range(users)), "each by its own key"
    contacts = backend(simulators).contacts.in_database(7)
    assert {c.fields["magnify_last_event"] for c in contacts} == {"magnify_send_email_open"}
    for n in range(users):
        envelope = magnify_envelope(magnify_metric("magnify_send_email_open", user=f"user_{n}"))
        [action] = (await event_record(redis, envelope.id))["actions"]
        assert (action["status"], action["failures"]) == ("delivered", 0)
        assert [attempt["outcome"] for attempt in action["attempts"]] == ["confirmed"]
        assert action["last_response"]["status"] == 200  # the read-back's answer (its start only is kept)
        [entry] = (await Ledger(redis, ttl_seconds=60).delivered(action["requests"])).values()
        assert entry["outcome"] == "confirmed"


async def test_an_unknown_outcome_the_read_back_does_not_find_is_retried_not_delivered(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path
) -> None:
    # denyupdatecontact: Magnews keeps the contact as it was and answers without outcome; the
    # read-back sees the old value, so the merge is not confirmed.
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "frozen"\nsource = "magnify"\ntypes = ["magnify_send_email_open"]\n\n'
        '[[rules.actions]]\nkind = "magnews.merge"\ndatabase = "7"\n'
        '[rules.actions.values]\nmagnify_user_id = "{{ data.user.id }}"\nmagnify_last_event = "{{ event.type }}"\n'
        "[rules.actions.options]\ndenyupdatecontact = true\n"
    )
    choose(simulators, merge_result="message_only")
    contacts = backend(simulators).contacts
    contacts.merge(7, {"magnify_user_id": "user_7", "magnify_last_event": "before"})
    envelope = magnify_envelope(magnify_metric("magnify_send_email_open", user="user_7"))
    await ingest(redis, [envelope])
    await run_worker_burst(make_settings(rules_file=rules, retry_max_attempts=2))

    record = await event_record(redis, envelope.id)
    [action] = record["actions"]
    assert (record["status"], action["status"], action["failures"]) == ("failed", "dead", 2)
    assert [attempt["outcome"] for attempt in action["attempts"]] == ["transient", "transient"]
    assert action["last_error"].endswith(
        "read back: the contact with magnify_user_id = 'user_7' has "
        "magnify_last_event is 'before', not 'magnify_send_email_open'"
    )
    assert len(await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/merge")) == 2
    assert len(await _queries(simulators)) == 2  # one read-back per try
    [contact] = contacts.in_database(7)
    assert contact.fields["magnify_last_event"] == "before"
    assert await Ledger(redis, ttl_seconds=60).delivered(action["requests"]) == {}


# --- 7. consent ---------------------------------------------------------------------------------------------


async def test_default_rules_neither_subscribe_nor_reactivate(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    contacts = backend(simulators).contacts
    contacts.merge(7, {"magnify_user_id": "user_old", "status": "unsubscribed"})
    envelopes = [
        magnify_envelope(magnify_metric("magnify_send_email_click", user="user_old")),
        magnify_envelope(magnify_metric("magnify_send_email_click", user="user_new")),
    ]
    await ingest(redis, envelopes)
    await run_worker_burst(settings)

    status = {c.fields["magnify_user_id"]: c.status for c in contacts.in_database(7)}
    assert status["user_old"] == "unsubscribed"
    assert status["user_new"] != "subscribed"
    # What the simulator was asked (merge: with iddatabase; batchmerge: iddatabase is beside the options).
    assert [{k: v for k, v in o.items() if k != "iddatabase"} for o in contacts.options_seen[1:]] == [CONSENT] * 2
    assert contacts.emails_sent == 0
    assert [(await event_record(redis, e.id))["status"] for e in envelopes] == ["delivered", "delivered"]


def test_without_the_options_the_simulator_subscribes_and_reactivates(simulators: Simulators) -> None:
    # The control for the test above: the simulator's default is the pessimistic one, so the options matter.
    contacts = backend(simulators).contacts
    contacts.merge(7, {"magnify_user_id": "old", "status": "unsubscribed"})
    assert contacts.merge(7, {"magnify_user_id": "old", "x": "1"})["action"] == "reactivate"
    contacts.merge(7, {"magnify_user_id": "new"})
    assert {c.fields["magnify_user_id"]: c.status for c in contacts.in_database(7)} == {
        "old": "subscribed",
        "new": "subscribed",
    }
    result = contacts.merge(7, {"magnify_user_id": "n2", "email": "n2@example.com"}, {"sendemail": True})
    assert result["sendemail"]["emailsent"] is True and contacts.emails_sent == 1


async def test_an_opt_out_rule_still_unsubscribes(
    settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    contacts = backend(simulators).contacts
    contacts.merge(7, {"magnify_user_id": "user_42"})
    envelope = magnify_envelope(magnify_metric("magnify_send_email_unsubscribe"))
    await ingest(redis, [envelope])
    await run_worker_burst(settings)
    [contact] = contacts.in_database(7)
    assert contact.status == "unsubscribed"


# --- 8. unpublished webhook bodies and test requests --------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"id": "x"},
        {"topic": 5, "data": {"email": "a@example.com"}},
        {"topic": "t" * 201},
        {"topic": "contacts/update", "data": [1]},
        {"event": "contact.updated", "payload": {"email": "a@example.com"}},
    ],
)
async def test_an_object_that_cannot_be_classified_is_stored_and_ignored(
    service: Service, settings: Settings, simulators: Simulators, redis: aioredis.Redis, body: dict[str, Any]
) -> None:
    async with service.post_webhook(body) as response:
        assert response.status == 200
        [event_id] = (await response.json())["event_ids"]
    await run_worker_burst(settings)
    event = await EventReader(redis).get(event_id)
    assert event is not None and event.type == UNCLASSIFIED and event.status == "ignored"
    assert event.payload == body
    assert await sim_requests(simulators.endpoints.magnews_base_url, "/") == []
    assert await sim_requests(simulators.endpoints.magicbell_base_url, "/") == []


async def test_an_unusable_id_or_timestamp_does_not_refuse_the_event(service: Service, redis: aioredis.Redis) -> None:
    body = {"id": "has space", "topic": "contacts/update", "timestamp": "14/11/2025 13:00"}
    async with service.post_webhook(body) as response:
        assert response.status == 200
        [event_id] = (await response.json())["event_ids"]
    async with service.post_webhook(body) as response:
        assert (await response.json())["duplicates"] == 1
    event = await EventReader(redis).get(event_id)
    assert event is not None and event.type == "contacts/update" and event.payload == body


async def test_an_empty_array_is_answered_200(service: Service, redis: aioredis.Redis) -> None:
    async with service.post_webhook([]) as response:
        assert response.status == 200
        assert await response.json() == {"accepted": 0, "duplicates": 0, "event_ids": []}
    assert await redis.dbsize() == 0


async def test_one_long_string_is_not_refused_under_the_body_limit(service: Service, redis: aioredis.Redis) -> None:
    body = {"id": "long", "topic": "contacts/update", "data": {"note": "x" * 500_000}}
    async with service.post_webhook(body) as response:
        assert response.status == 200
    event = await EventReader(redis).get("long")
    assert event is not None and len(event.payload["data"]["note"]) == 500_000


@pytest.mark.parametrize("shape", ["topic_test", "empty", "test_flag", "sample_event", "array"])
async def test_register_succeeds_whatever_the_test_request_looks_like(
    start_service: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    simulators: Simulators,
    redis: aioredis.Redis,
    shape: str,
) -> None:
    choose(simulators, test_request=shape)
    service: Service = await start_service(make_settings())
    settings = make_settings(public_url=service.url)

    status, out, err = await magnews_webhook(settings, "register")

    assert (status, err) == (0, "")
    assert out.startswith("created webhook #1")
    assert len(backend(simulators).webhooks) == 1
    await run_worker_burst(settings)
    events, dead = await EventReader(redis).index_sizes()
    stored = {"topic_test": 0, "test_flag": 0, "empty": 1, "sample_event": 1, "array": 1}[shape]
    print(f"test_request={shape}: stored {events}, dead {dead}")
    assert (events, dead) == (stored, 0)
    # Whatever was stored makes no side effect: nothing reached MagicBell or a Magnews contact.
    assert await sim_requests(simulators.endpoints.magicbell_base_url, "/") == []
    assert await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/") == []
