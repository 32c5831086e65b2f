"""Settings and rules files: valid ones load, invalid ones name the variable, file, rule and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.rules import load_rules
from config.settings import DEFAULT_RULES_FILE, Settings, load_settings


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("MAGBRIDGE_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://localhost:6379/0"
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert str(settings.magnews_base_url) == "https://ws-mn1.mag-news.it/ws/rest/api"
    assert str(settings.magicbell_base_url) == "https://api.magicbell.com/v2"
    assert str(settings.magnify_base_url) == "https://api.magnify.io/v1/partner"
    assert str(settings.magnify_token_url) == "https://auth.magnify.io/oauth2/token"
    assert settings.magnify_poll_seconds == 60
    assert (settings.magicbell_max_rps, settings.magnews_max_rps) == (1, 10)
    assert settings.rules_file == DEFAULT_RULES_FILE
    assert (settings.log_level, settings.log_format) == ("info", "json")
    assert settings.admin_token is None and not settings.magnify_enabled


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGBRIDGE_MAGICBELL_RECIPIENTS", "a@example.com, b@example.com")
    monkeypatch.setenv("MAGBRIDGE_PORT", "9000")
    monkeypatch.setenv("MAGBRIDGE_ADMIN_TOKEN", "secret-admin")
    settings = load_settings(_env_file=None)
    assert settings.magicbell_recipients == ["a@example.com", "b@example.com"]
    assert settings.port == 9000
    assert "secret-admin" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MAGBRIDGE_PORT", "eighty", "MAGBRIDGE_PORT"),
        ("MAGBRIDGE_PORT", "70000", "MAGBRIDGE_PORT"),
        ("MAGBRIDGE_MAGICBELL_RECIPIENTS", "ops@example.com,not-an-address", "MAGBRIDGE_MAGICBELL_RECIPIENTS"),
        ("MAGBRIDGE_LOG_FORMAT", "xml", "MAGBRIDGE_LOG_FORMAT"),
        ("MAGBRIDGE_MAGNEWS_BASE_URL", "not a url", "MAGBRIDGE_MAGNEWS_BASE_URL"),
    ],
)
def test_a_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        load_settings(_env_file=None)


@pytest.mark.slow
def test_the_process_stops_at_start_on_a_bad_setting(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "web"],
        env={"MAGBRIDGE_PORT": "eighty", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "MAGBRIDGE_PORT" in result.stderr


def test_default_rules_load() -> None:
    rules = load_rules(DEFAULT_RULES_FILE)
    assert [rule.name for rule in rules.rules] == [
        "magnews-contact-lost",
        "magnews-welcome",
        "magnify-engagement",
        "magnify-delivery-problem",
        "magnify-opt-out",
    ]
    assert [r.name for r in rules.matching("magnews", "transactionals/msg/complaint")] == ["magnews-contact-lost"]
    assert rules.matching("magnews", "contacts/update") == []
    assert rules.matching("magnify", "contacts/delete") == []


RULE = """
[[rules]]
name = "{name}"
source = "{source}"
types = ["contacts/create"]

[[rules.actions]]
kind = "magicbell.broadcast"
recipients = ["{{{{ data.email }}}}"]
title = "{title}"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RULE.format(name="ok", source="elsewhere", title="t"), "rule 'ok' (#1): source"),
        (RULE.format(name="Bad Name", source="magnews", title="t"), "rule 'Bad Name' (#1): name"),
        (RULE.format(name="ok", source="magnews", title="{{ broken"), "rule 'ok': actions.0.title: template syntax"),
        (RULE.format(name="ok", source="magnews", title=""), "rule 'ok' (#1): actions.0.title"),
        (RULE.format(name="a", source="magnews", title="t") * 2, "used twice"),
        (RULE.format(name="ok", source="magnews", title="t") + 'colour = "red"\n', "actions.0.colour"),
        ("rules = [", "not valid TOML"),
    ],
)
def test_an_invalid_rules_file_names_file_rule_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_a_missing_rules_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_rules(tmp_path / "absent.toml")
