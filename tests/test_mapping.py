"""Rendering rules into requests: pure units, no I/O."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

from bridge.store.records import StoredEvent
from config.rules import load_rules
from config.settings import DEFAULT_RULES_FILE
from workers.mapping import BROADCAST_ID_NAMESPACE, action_key, plan_actions
from workers.retry import backoff_seconds

CONTEXT = {"ops_recipients": "ops@example.com", "magnews_database_id": 7}


def stored(event_type: str, data: dict[str, Any], *, generation: int = 0, event_id: str = "e1") -> StoredEvent:
    return StoredEvent(
        id=event_id,
        source="magnews",
        type=event_type,
        occurred_at="2025-11-14T13:00:00.000Z",
        received_at=0,
        updated_at=0,
        status="queued",
        generation=generation,
        runs=0,
        error="",
        payload={"topic": event_type, "data": data},
    )


def rules_with(tmp_path: Path, action: str) -> Any:
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "r"\nsource = "magnews"\ntypes = ["t"]\n\n[[rules.actions]]\n' + action)
    return load_rules(path)


def test_action_keys_are_stable_and_a_new_generation_changes_them() -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    first = plan_actions(rules, stored("contacts/delete", {"email": "a@example.com"}), CONTEXT)
    again = plan_actions(rules, stored("contacts/delete", {"email": "a@example.com"}), CONTEXT)
    forced = plan_actions(rules, stored("contacts/delete", {"email": "a@example.com"}, generation=1), CONTEXT)
    assert first[0].key == again[0].key == action_key("e1", "magnews-contact-lost", 0, 0)
    assert forced[0].key != first[0].key
    assert first[0].requests[0].body["id"] == str(uuid.uuid5(BROADCAST_ID_NAMESPACE, first[0].key))


def test_more_than_1000_recipients_are_split_with_stable_ids(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, 'kind = "magicbell.broadcast"\nrecipients = ["{{ ops_recipients }}"]\ntitle = "x"\n')
    many = ",".join(f"user{i}@example.com" for i in range(2500))
    [action] = plan_actions(rules, stored("t", {}), {**CONTEXT, "ops_recipients": many})
    assert action.error is None
    assert [len(request.body["recipients"]) for request in action.requests] == [1000, 1000, 500]
    keys = [request.key for request in action.requests]
    assert keys == [f"{action.key}-0", f"{action.key}-1", f"{action.key}-2"]
    ids = [request.body["id"] for request in action.requests]
    assert len(set(ids)) == 3 and ids[1] == str(uuid.uuid5(BROADCAST_ID_NAMESPACE, keys[1]))


def test_event_data_are_values_never_templates(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path, 'kind = "magicbell.broadcast"\nrecipients = ["ops@example.com"]\ntitle = "{{ data.name }}"\n'
    )
    hostile = "{{ 7 * 7 }}{% for x in range(3) %}boom{% endfor %}"
    [action] = plan_actions(rules, stored("t", {"name": hostile}), CONTEXT)
    assert action.requests[0].body["title"] == hostile


def test_sandbox_refuses_attribute_tricks(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        'kind = "magicbell.broadcast"\nrecipients = ["ops@example.com"]\ntitle = "{{ data.__class__.__mro__ }}"\n',
    )
    [action] = plan_actions(rules, stored("t", {}), CONTEXT)
    assert action.error is not None and "title" in action.error


def test_destination_limits_fail_the_action_before_sending(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        'kind = "magicbell.broadcast"\nrecipients = ["ops@example.com"]\ntitle = "{{ data.title }}"\n'
        'category = "{{ data.category }}"\n',
    )
    [too_long] = plan_actions(rules, stored("t", {"title": "x" * 256, "category": "ok"}), CONTEXT)
    assert too_long.error is not None and "title: 256 characters" in too_long.error
    [bad_category] = plan_actions(rules, stored("t", {"title": "x", "category": "has space"}), CONTEXT)
    assert bad_category.error is not None and "category" in bad_category.error
    [fine] = plan_actions(rules, stored("t", {"title": "x", "category": "a/b:c"}), CONTEXT)
    assert fine.error is None


def test_missing_recipients_setting_is_a_clear_failure() -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    [action] = plan_actions(rules, stored("contacts/delete", {}), {**CONTEXT, "ops_recipients": ""})
    assert action.error is not None and "MAGBRIDGE_MAGICBELL_RECIPIENTS" in action.error


def test_merge_without_database_setting_is_a_clear_failure(tmp_path: Path) -> None:
    rules = rules_with(
        tmp_path,
        'kind = "magnews.merge"\ndatabase = "{{ magnews_database_id }}"\n'
        '[rules.actions.values]\nemail = "{{ data.email }}"\n',
    )
    [action] = plan_actions(rules, stored("t", {"email": "a@example.com"}), {**CONTEXT, "magnews_database_id": None})
    assert action.error is not None and "MAGBRIDGE_MAGNEWS_DATABASE_ID" in action.error
    [ok] = plan_actions(rules, stored("t", {"email": "a@example.com"}), CONTEXT)
    assert ok.requests[0].body == {"values": {"email": "a@example.com"}, "options": {"iddatabase": 7}}


def test_backoff_is_bounded_jittered_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_seconds(attempt, base=1, cap=60, rng=rng) for attempt in range(1, 12)]
    assert all(0 <= delay <= min(60, 2 ** (attempt - 1)) for attempt, delay in zip(range(1, 12), delays, strict=True))
    assert len(set(delays)) == len(delays)
    assert backoff_seconds(1, base=1, cap=60, retry_after=30, rng=rng) >= 30
    assert backoff_seconds(1, base=1, cap=60, retry_after=10_000, rng=rng) == 60


def test_retry_age_restarts_at_the_latest_replay() -> None:
    from workers.retry import age_origin as _age_origin

    event = stored("t", {})
    event.received_at = 1_000_000
    assert _age_origin(event) == 1000.0
    event.replays = [{"at": "2026-01-01T00:00:00.000Z"}, {"at": "garbage"}, {}]
    assert _age_origin(event) == 1767225600.0
