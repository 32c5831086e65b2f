"""``magbridge magnews-webhook``: registration against the Magnews simulator, whose test request
reaches the real receiver on a real socket; the documented ``test request failed`` surfaced clearly."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.cli.magnews_webhook import receiver_url, rule_topics
from bridge.simulators import SIM_CORE, Simulators
from bridge.simulators.magnews import MAGNEWS_BACKEND
from config.rules import load_rules
from config.settings import DEFAULT_RULES_FILE, Settings
from tests.support.commands import magnews_webhook
from tests.support.processes import settings_env
from tests.support.service import Service, SettingsFactory

SECRET = "hook-secret-4f1c"


def subscriptions(simulators: Simulators) -> list[Any]:
    return simulators.magnews_app[MAGNEWS_BACKEND].webhooks.all()


def test_topics_come_from_the_magnews_rules_with_globs_expanded(tmp_path: Path) -> None:
    topics, unmatched = rule_topics(load_rules(DEFAULT_RULES_FILE))
    assert topics == [
        "communications/msg/bounce",
        "communications/msg/complaint",
        "contacts/create",
        "contacts/delete",
        "contacts/unsubscription",
        "transactionals/msg/bounce",
        "transactionals/msg/complaint",
    ]
    assert unmatched == []
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rules]]\nname = "a"\nsource = "*"\ntypes = ["orders/paid", "nothing/*"]\n'
        '[[rules.actions]]\nkind = "magicbell.broadcast"\nrecipients = ["x@example.com"]\ntitle = "t"\n'
    )
    assert rule_topics(load_rules(rules)) == (["orders/paid"], ["nothing/*"])


def test_receiver_url_carries_the_secret_as_token(make_settings: SettingsFactory) -> None:
    settings = make_settings(public_url="https://bridge.example.com/", webhook_secret=SECRET)
    assert receiver_url(settings) == f"https://bridge.example.com/webhooks/magnews?token={SECRET}"
    assert (
        receiver_url(settings, "https://b.example.com/base")
        == f"https://b.example.com/base/webhooks/magnews?token={SECRET}"
    )
    with pytest.raises(Exception, match="MAGBRIDGE_PUBLIC_URL"):
        receiver_url(make_settings())


async def test_register_subscribes_the_receiver_after_its_test_request(
    start_service: Callable[[Settings], Any], make_settings: SettingsFactory, simulators: Simulators, redis: Any
) -> None:
    settings = make_settings(webhook_secret=SECRET)
    service: Service = await start_service(settings)
    settings = make_settings(webhook_secret=SECRET, public_url=service.url)

    status, out, err = await magnews_webhook(settings, "register")

    assert (status, err) == (0, "")
    [webhook] = subscriptions(simulators)
    assert webhook.uri == f"{service.url}/webhooks/magnews?token={SECRET}"
    assert webhook.topics == ",".join(rule_topics(load_rules(settings.rules_file))[0])
    assert out.startswith(f"created webhook #{webhook.id} (Magnews's test request answered 200)")
    assert SECRET not in out and "token=***" in out
    [create] = [r for r in simulators.magnews_app[SIM_CORE].records if r.path == "/v19/webhooks/create"]
    assert create.status == 200 and create.headers["Authorization"] == "Bearer sim-magnews-token"

    # Again: nothing changes. New topics or a new secret: the same subscription is updated.
    assert (await magnews_webhook(settings, "register"))[1].startswith(f"unchanged webhook #{webhook.id}")
    status, out, _ = await magnews_webhook(settings, "register", "--topics", "contacts/update,contacts/create")
    assert status == 0 and out.startswith(f"updated webhook #{webhook.id}")
    [webhook] = subscriptions(simulators)
    assert webhook.topics == "contacts/create,contacts/update"


async def test_a_failing_test_request_is_reported_with_what_to_check(
    start_service: Callable[[Settings], Any], make_settings: SettingsFactory, simulators: Simulators, redis: Any
) -> None:
    service: Service = await start_service(make_settings(webhook_secret="the-receivers-secret"))
    settings = make_settings(webhook_secret=SECRET, public_url=service.url)  # not the receiver's secret

    status, out, err = await magnews_webhook(settings, "register")

    assert status == 1
    assert "test request failed (HTTP 401 test request failed)" in err
    assert "MAGBRIDGE_WEBHOOK_SECRET" in err and "token=***" in err
    assert SECRET not in err + out
    assert subscriptions(simulators) == []


async def test_unreachable_receiver_fails_the_test_request(
    make_settings: SettingsFactory, simulators: Simulators, redis: Any
) -> None:
    settings = make_settings(public_url="http://127.0.0.1:9")  # discard port: nothing listens
    status, _, err = await magnews_webhook(settings, "register")
    assert status == 1 and "Magnews refused the subscription: test request failed" in err


async def test_list_update_and_delete(
    start_service: Callable[[Settings], Any], make_settings: SettingsFactory, simulators: Simulators, redis: Any
) -> None:
    service: Service = await start_service(make_settings(webhook_secret=SECRET))
    settings = make_settings(webhook_secret=SECRET, public_url=service.url)
    assert (await magnews_webhook(settings, "register"))[0] == 0
    [webhook] = subscriptions(simulators)

    status, out, _ = await magnews_webhook(settings, "list")
    assert status == 0 and "(this bridge)" in out and SECRET not in out and out.endswith("1 subscription(s)\n")

    status, out, _ = await magnews_webhook(settings, "update", str(webhook.id), "--status", "suspended")
    assert status == 0 and "suspended" in out and webhook.status == "suspended"
    assert (await magnews_webhook(settings, "register"))[1].startswith(f"updated webhook #{webhook.id}"), (
        "register reactivates"
    )
    assert webhook.status == "active"

    assert await magnews_webhook(settings, "delete", str(webhook.id)) == (0, f"deleted webhook #{webhook.id}\n", "")
    assert subscriptions(simulators) == []
    status, _, err = await magnews_webhook(settings, "delete", str(webhook.id))
    assert status == 1 and "webhook not found" in err


@pytest.mark.slow
async def test_the_command_line_registers_as_a_process(
    start_service: Callable[[Settings], Any], make_settings: SettingsFactory, simulators: Simulators, redis: Any
) -> None:
    service: Service = await start_service(make_settings(webhook_secret=SECRET))
    settings = make_settings(webhook_secret=SECRET, public_url=service.url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "magnews-webhook", "register",
        env=settings_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().startswith("created webhook #1") and SECRET not in stdout.decode()
    assert len(subscriptions(simulators)) == 1
