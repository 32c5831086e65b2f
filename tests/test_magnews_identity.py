"""Magnews identity (issue item 6): a Magnify metric names its user by id, a Magnews database is keyed
by e-mail. The rules' ``match`` finds the contact through the query API (cached in Redis), the merge
names it by its key, and a user with no contact is recorded ``unmatched`` (or created, if the rule
says so), never dead-lettered.

Real Redis, the real simulators (reading ``magnews.primary_key``) and a real arq worker; each test
asserts what the simulator stored and was asked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bridge.events import magnify_envelope
from bridge.simulators import SIM_CORE, Simulators
from bridge.simulators.magnews import MAGNEWS_BACKEND, MagnewsBackend
from bridge.simulators.magnews_contacts import Contact
from bridge.store import keys
from bridge.store.reads import EventReader
from bridge.store.records import StoredEvent
from bridge.store.replay import ReplayRequest, run_replay
from config.errors import ConfigError
from config.rules import load_rules
from config.settings import DEFAULT_RULES_FILE, Settings
from tests.support.events import magnify_metric
from tests.support.service import Service, SettingsFactory
from tests.support.simulators import sim_requests
from tests.support.store import event_record, ingest
from tests.support.workers import run_worker_burst
from workers.destinations.mql import contacts_query, quote
from workers.mapping import plan_actions

TOKEN = "admin-token-for-tests-0123456789"
AT = 1_700_000_000_000  # a metric's occurredAt
LINKED = ["user_1002", "user_1004", "user_1006"]  # seeded contacts that carry their magnify_user_id
UNLINKED = ["user_1001", "user_1003"]  # 1001 has a contact by e-mail only; 1003 none at all


def backend(simulators: Simulators) -> MagnewsBackend:
    return simulators.magnews_app[MAGNEWS_BACKEND]


def choose(simulators: Simulators, **answers: str) -> None:
    simulators.magnews_app[SIM_CORE].readings.update(answers)


def by_email(simulators: Simulators, email: str) -> Contact:
    [contact] = [c for c in backend(simulators).contacts.in_database(7) if c.fields.get("email") == email]
    return contact


def metric(user: str, at: int = AT, kind: str = "open") -> Any:
    return magnify_envelope(magnify_metric(f"magnify_send_email_{kind}", user=user, at=at))


def lookups(worker: Any) -> dict[tuple[str, str], float]:
    """The worker's ``magbridge_magnews_lookups_total`` by (source, result), zeros left out."""
    counted = {
        (source, result): worker.ctx["metrics"].value("magbridge_magnews_lookups_total", source=source, result=result)
        for source in ("cache", "api")
        for result in ("found", "none")
    }
    return {labels: value for labels, value in counted.items() if value}


async def queries(simulators: Simulators) -> list[str]:
    records = await sim_requests(simulators.endpoints.magnews_base_url, "/v19/contacts/query", method="GET")
    return [record["query"]["query"] for record in records]


async def merged(simulators: Simulators) -> list[dict[str, Any]]:
    """The values of every contact the simulator was asked to merge, in order."""
    base = simulators.endpoints.magnews_base_url
    values = [record["body"]["values"] for record in await sim_requests(base, "/v19/contacts/merge")]
    for record in await sim_requests(base, "/v19/contacts/batchmerge"):
        values += [{item["field"]: item["value"] for item in c["values"]} for c in record["body"]["contacts"]]
    return values


@pytest.fixture
def email_settings(make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis) -> Settings:
    """The simulator's database 7 keyed by e-mail, and the bridge told so."""
    choose(simulators, primary_key="email")
    return make_settings(magnews_primary_key="email")


# --- pure units: MQL and the rules ------------------------------------------------------------------------


def test_mql_quotes_only_what_needs_no_escape() -> None:
    assert quote("user_1002") == "'user_1002'"
    assert contacts_query(7, "magnify_user_id", "user_1") == (
        "select * from contacts where iddatabase=7 and magnify_user_id='user_1' limit 2"
    )
    for value, problem in [
        ("o'brien", '"\'"'),
        ("a\\b", "'\\\\\\\\'"),
        ("line\nbreak", "'\\\\n'"),
        ("", "is empty"),
        ("x" * 257, "at most 256"),
    ]:
        with pytest.raises(ValueError, match=problem):
            quote(value)
    with pytest.raises(ValueError, match="not a field id"):
        contacts_query(7, "email or 1=1", "x")


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ('unmatched = "create"\n', "unmatched: only a merge with a match"),
        ('match = { field = "not a field", value = "x" }\n', "match.field: String should match pattern"),
        ('match = { field = "magnify_user_id" }\n', "match.value: Field required"),
        ('match = { field = "magnify_user_id", value = "x" }\nunmatched = "skip"\n', "unmatched: Input should be"),
    ],
)
def test_rules_refuse_a_bad_match(tmp_path: Path, action: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rules]]\nname = "r"\nsource = "magnify"\ntypes = ["t"]\n\n[[rules.actions]]\nkind = "magnews.merge"\n'
        f'database = "7"\n{action}[rules.actions.values]\nx = "1"\n'
    )
    with pytest.raises(ConfigError, match=message):
        load_rules(path)


def _stored(user: str) -> StoredEvent:
    envelope = metric(user)
    return StoredEvent(
        id=envelope.id, source="magnify", type=envelope.type, occurred_at=envelope.occurred_at, received_at=0,
        updated_at=0, status="queued", generation=0, runs=0, error="", payload=envelope.payload,
    )  # fmt: skip


@pytest.mark.parametrize(("primary_key", "lookup"), [("magnify_user_id", False), ("email", True)])
def test_default_rules_look_up_only_when_the_key_is_not_the_user_id(primary_key: str, lookup: bool) -> None:
    context = {"ops_recipients": "ops@example.com", "magnews_database_id": 7, "magnews_primary_key": primary_key}
    [action] = plan_actions(load_rules(DEFAULT_RULES_FILE), _stored("user_1002"), context)
    [request] = action.requests
    assert request.contact is not None
    assert (request.contact.key, request.contact.field, request.contact.value) == (
        primary_key,
        "magnify_user_id",
        "user_1002",
    )
    assert (request.contact.lookup, request.contact.create, request.contact.occurred_ms) == (lookup, True, AT)
    # A user id that MQL cannot quote safely makes the action invalid before anything is sent.
    [bad] = plan_actions(load_rules(DEFAULT_RULES_FILE), _stored("o'brien"), context)
    assert (bad.error is not None and "match.value" in bad.error) == lookup


# --- the simulator: the query API and a database keyed by e-mail --------------------------------------------


async def test_the_simulator_serves_the_query_api_under_each_reading(simulators: Simulators) -> None:
    base = simulators.endpoints.magnews_base_url
    auth = {"Authorization": "Bearer sim-magnews-token"}

    async def query(text: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v19/contacts/query", params={"query": text}, headers=auth) as response:
                return response.status, await response.json()

    lookup = "select * from contacts where iddatabase=7 and magnify_user_id='user_1002' limit 2"
    assert await query(lookup) == (200, [])  # keyed by the user id: empty until merged into
    choose(simulators, primary_key="email")
    status, [contact] = await query(lookup)
    assert status == 200 and contact["iddatabase"] == 7 and contact["status"] == "subscribed"
    assert contact["fields"]["email"] == contact["fields"]["primarykey"] == "user.1002@example.com"
    assert (await query("select * from contacts where iddatabase=7 and magnify_user_id='user_1001'")) == (200, [])
    status, everyone = await query("SELECT * FROM contacts WHERE iddatabase = 7")
    assert status == 200 and len(everyone) == len(backend(simulators).contacts.in_database(7)) == 51
    status, error = await query("select email from contacts")
    assert status == 400 and set(error) == {"error", "debugMessage"}
    # The merge is by the primary key: without an e-mail it is refused, as the contract's merge now is.
    refused = backend(simulators).contacts.merge(7, {"magnify_user_id": "user_1002", "x": "1"})
    assert refused["ok"] is False and refused["errors"] == [{"type": "missing_primary_key", "field": "email"}]
    # A reset keeps the reading and goes back to the seed; another answer starts afresh in its layout.
    backend(simulators).contacts.merge(7, {"email": "new@example.com"})
    async with aiohttp.ClientSession() as http, http.post(f"{base}/_sim/reset") as response:
        assert (await response.json())["contacts"] == 51
    choose(simulators, primary_key="magnify_user_id")
    assert backend(simulators).contacts.in_database(7) == []


# --- end to end ---------------------------------------------------------------------------------------------


async def test_a_matched_user_is_merged_by_its_email(
    email_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    before = len(backend(simulators).contacts.in_database(7))
    envelope = metric("user_1002")
    await ingest(redis, [envelope])
    await run_worker_burst(email_settings)

    record = await event_record(redis, envelope.id)
    assert record["status"] == "delivered" and [a["status"] for a in record["actions"]] == ["delivered"]
    contact = by_email(simulators, "user.1002@example.com")
    assert contact.fields["magnify_user_id"] == "user_1002"
    assert contact.fields["magnify_last_event"] == "magnify_send_email_open"
    assert contact.fields["magnify_last_event_at"] == envelope.occurred_at
    assert contact.fields["name"] == "Reader user_1002"  # the seeded fields are kept
    assert len(backend(simulators).contacts.in_database(7)) == before  # merged, not created
    [values] = await merged(simulators)
    assert values["email"] == "user.1002@example.com" and values["magnify_user_id"] == "user_1002"
    assert await queries(simulators) == [contacts_query(7, "magnify_user_id", "user_1002")]


async def test_a_matched_merge_without_outcome_is_read_back_by_its_email(
    email_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    choose(simulators, merge_result="message_only")
    envelope = metric("user_1002")
    await ingest(redis, [envelope])
    await run_worker_burst(email_settings)

    [action] = (await event_record(redis, envelope.id))["actions"]
    assert (action["status"], [attempt["outcome"] for attempt in action["attempts"]]) == ("delivered", ["confirmed"])
    assert len(await merged(simulators)) == 1, "sent once"
    assert await queries(simulators) == [
        contacts_query(7, "magnify_user_id", "user_1002"),  # which contact
        contacts_query(7, "email", "user.1002@example.com"),  # did the merge happen: by the key it was sent by
    ]
    assert by_email(simulators, "user.1002@example.com").fields["magnify_last_event"] == "magnify_send_email_open"


async def test_an_unmatched_user_is_recorded_and_shown_not_dead_lettered(
    start_service: Any, make_settings: SettingsFactory, email_settings: Settings, simulators: Simulators,
    redis: aioredis.Redis,
) -> None:  # fmt: skip
    before = len(backend(simulators).contacts.in_database(7))
    envelopes = [metric(user) for user in UNLINKED]
    await ingest(redis, envelopes)
    worker = await run_worker_burst(email_settings)

    assert await merged(simulators) == []
    assert len(backend(simulators).contacts.in_database(7)) == before
    assert await EventReader(redis).index_sizes() == (2, 0)  # two events, no dead letter
    unmatched = worker.ctx["metrics"].value("magbridge_deliveries_total", destination="magnews", outcome="unmatched")
    assert unmatched == 2
    service: Service = await start_service(make_settings(admin_token=TOKEN, magnews_primary_key="email"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for envelope, user in zip(envelopes, UNLINKED, strict=True):
        async with service.session.get(f"{service.url}/admin/events/{envelope.id}", headers=auth) as response:
            shown = await response.json()
        assert shown["status"] == "delivered"  # done, nothing failed: the action says what it came to
        [action] = shown["actions"]
        assert action["status"] == "unmatched" and action["last_error"] is None
        assert action["note"] == (
            f"no contact of database 7 has magnify_user_id = {user!r}, and the values hold no email to create one by"
        )
        assert action["attempts"][-1]["outcome"] == "unmatched"
    async with service.session.get(f"{service.url}/admin/dead-letters", headers=auth) as response:
        assert (await response.json())["total"] == 0


async def test_an_unmatched_merge_is_replayed_once_its_contact_exists(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis
) -> None:
    choose(simulators, primary_key="email")
    settings = make_settings(magnews_primary_key="email", magnews_contact_miss_seconds=1)
    envelope = metric("user_1003")
    await ingest(redis, [envelope])
    await run_worker_burst(settings)
    assert (await event_record(redis, envelope.id))["actions"][0]["status"] == "unmatched"

    backend(simulators).contacts.merge(7, {"email": "late@example.com", "magnify_user_id": "user_1003"})
    await asyncio.sleep(1.1)  # the cached miss lapses (MAGNEWS_CONTACT_MISS_SECONDS)
    report = await run_replay(redis, ReplayRequest(event_ids=[envelope.id]), by="test", batch_size=10)
    assert report.ids("replayed") == [envelope.id]
    await run_worker_burst(settings)
    [action] = (await event_record(redis, envelope.id))["actions"]
    assert action["status"] == "delivered" and "note" not in action
    assert by_email(simulators, "late@example.com").fields["magnify_last_event"] == "magnify_send_email_open"


@pytest.mark.parametrize("merge_result", ["table", "message_only"])
async def test_unmatched_create_creates_the_contact_once(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, tmp_path: Path, merge_result: str
) -> None:
    choose(simulators, primary_key="email", merge_result=merge_result)
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "create"\nsource = "magnify"\ntypes = ["magnify_send_email_*"]\n\n'
        '[[rules.actions]]\nkind = "magnews.merge"\ndatabase = "{{ magnews_database_id }}"\n'
        'match = { field = "magnify_user_id", value = "{{ data.user.id }}" }\nunmatched = "create"\n'
        "[rules.actions.values]\n"
        "email = \"{{ data.user.id | replace('_', '.') }}@new.example.com\"\n"
        'magnify_user_id = "{{ data.user.id }}"\nmagnify_last_event = "{{ event.type }}"\n'
    )
    settings = make_settings(magnews_primary_key="email", rules_file=rules)
    before = len(backend(simulators).contacts.in_database(7))
    first, second = metric("user_1003", AT), metric("user_1003", AT + 1000, "click")
    await ingest(redis, [first])
    await run_worker_burst(settings)
    await ingest(redis, [second])
    await run_worker_burst(settings)

    created = by_email(simulators, "user.1003@new.example.com")
    assert created.fields["magnify_user_id"] == "user_1003"
    assert created.fields["magnify_last_event"] == "magnify_send_email_click"
    assert len(backend(simulators).contacts.in_database(7)) == before + 1
    actions = [(await event_record(redis, e.id))["actions"][0] for e in (first, second)]
    assert [action["status"] for action in actions] == ["delivered"] * 2
    # The miss was cached, then forgotten when the merge created the contact: the second metric found
    # it. Without an outcome in the answers, each merge was read back by its e-mail (and the create,
    # confirmed so, forgot the miss as well).
    by_key = contacts_query(7, "email", "user.1003@new.example.com")
    lookup = contacts_query(7, "magnify_user_id", "user_1003")
    if merge_result == "table":
        assert await queries(simulators) == [lookup, lookup]
    else:
        assert await queries(simulators) == [lookup, by_key, lookup, by_key]
        assert [action["attempts"][-1]["outcome"] for action in actions] == ["confirmed"] * 2


async def test_the_cache_spares_repeated_lookups(
    email_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    first = [metric("user_1002", AT + n) for n in range(8)] + [metric("user_1003", AT + n) for n in range(4)]
    await ingest(redis, first)
    worker = await run_worker_burst(email_settings)
    # Concurrent lookups of one value share one query; a miss is cached like a hit.
    assert sorted(await queries(simulators)) == [
        contacts_query(7, "magnify_user_id", "user_1002"),
        contacts_query(7, "magnify_user_id", "user_1003"),
    ]
    assert 3500 < await redis.ttl(keys.magnews_contact(7, "magnify_user_id", "user_1002")) <= 3600
    assert 0 < await redis.ttl(keys.magnews_contact(7, "magnify_user_id", "user_1003")) <= 60
    assert await redis.get(keys.magnews_contact(7, "magnify_user_id", "user_1002")) == b"email:user.1002@example.com"

    assert lookups(worker) == {("api", "found"): 1, ("api", "none"): 1}
    later = [metric("user_1002", AT + 100), metric("user_1003", AT + 100)]
    await ingest(redis, later)
    worker = await run_worker_burst(email_settings)
    assert len(await queries(simulators)) == 2  # both answered from the cache
    assert lookups(worker) == {("cache", "found"): 1, ("cache", "none"): 1}
    statuses = [(await event_record(redis, e.id))["actions"][0]["status"] for e in later]
    assert statuses == ["delivered", "unmatched"]


@pytest.mark.parametrize(
    ("primary_key", "problem"),
    [
        # The bridge told the key is a field that is not the primary key: the lookup says so.
        ("name", "MAGBRIDGE_MAGNEWS_PRIMARY_KEY (or the rule's key) must name the database's primary-key field"),
        # Not told at all (the contract's database): the merge by user id is refused, as before this change.
        ("magnify_user_id", "missing_primary_key"),
    ],
)
async def test_a_wrong_primary_key_setting_is_a_clear_dead_letter(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, primary_key: str, problem: str
) -> None:
    choose(simulators, primary_key="email")
    envelope = metric("user_1002")
    await ingest(redis, [envelope])
    await run_worker_burst(make_settings(magnews_primary_key=primary_key))
    [action] = (await event_record(redis, envelope.id))["actions"]
    assert action["status"] == "dead" and problem in action["last_error"] + str(action["last_response"])


async def test_two_contacts_with_the_value_is_a_dead_letter_naming_both(
    email_settings: Settings, simulators: Simulators, redis: aioredis.Redis
) -> None:
    backend(simulators).contacts.merge(7, {"email": "twin@example.com", "magnify_user_id": "user_1002"})
    envelope = metric("user_1002")
    await ingest(redis, [envelope])
    await run_worker_burst(email_settings)
    [action] = (await event_record(redis, envelope.id))["actions"]
    ids = [
        c.idcontact
        for c in backend(simulators).contacts.in_database(7)
        if c.fields.get("magnify_user_id") == "user_1002"
    ]
    assert action["status"] == "dead" and f"idcontact {ids[0]} and {ids[1]}" in action["last_error"]
    assert await merged(simulators) == []


async def _identity_run(settings: Settings, simulators: Simulators, redis: aioredis.Redis) -> dict[str, int]:
    users = [f"user_{1001 + n}" for n in range(12)]
    envelopes = [metric(user) for user in users]
    contacts_before = len(backend(simulators).contacts.in_database(7))
    assert await ingest(redis, envelopes) == [True] * len(users)
    await run_worker_burst(settings)
    actions = [(await event_record(redis, e.id))["actions"][0]["status"] for e in envelopes]
    _, dead = await EventReader(redis).index_sizes()
    delivered = actions.count("delivered")
    return {
        "sent": len(users),
        "delivered": delivered,
        "unmatched": actions.count("unmatched"),
        "dead": dead,
        "duplicated": backend(simulators).side_effects - delivered,
        "contacts_created": len(backend(simulators).contacts.in_database(7)) - contacts_before,
        "lookups": len(await queries(simulators)),
    }


@pytest.mark.parametrize("primary_key", ["magnify_user_id", "email"])
async def test_end_to_end_identity_under_each_primary_key(
    make_settings: SettingsFactory, simulators: Simulators, redis: aioredis.Redis, primary_key: str
) -> None:
    choose(simulators, primary_key=primary_key)
    numbers = await _identity_run(make_settings(magnews_primary_key=primary_key), simulators, redis)
    print(f"primary_key={primary_key}: {numbers}")
    if primary_key == "magnify_user_id":
        # The contract's database: each user merged (created) by its id, no lookup needed.
        expected = {"delivered": 12, "unmatched": 0, "contacts_created": 12, "lookups": 0}
    else:
        # Keyed by e-mail: the six users with a linked contact merged into it, the six others recorded.
        expected = {"delivered": 6, "unmatched": 6, "contacts_created": 0, "lookups": 12}
    assert numbers == {"sent": 12, "dead": 0, "duplicated": 0, **expected}
