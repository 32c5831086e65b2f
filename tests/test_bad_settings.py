"""Every setting's bad value is one line naming the variable and what is expected; the real commands
stop with exit status 2 and no traceback.

``BAD_VALUES`` must cover every field of ``Settings``: a new setting without a bad-value case fails
``test_every_setting_has_bad_values``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import Settings, load_settings

# field -> (environment value, a fragment of what the message must say is expected)
BAD_VALUES: dict[str, list[tuple[str, str]]] = {
    "redis_url": [
        ("localhost:6379", "no scheme): expected redis://"),
        ("http://redis:6379/0", "scheme 'http' is not supported"),
        ("redis://:hunter2@redis:63x9/0", "port must be a number"),
        ("redis://redis:6379/zero", "database number"),
        ("redis:///0", "names no host"),
        ("unix://", "names no socket"),
        ("redis://redis/0?db=one", "one database number"),
        ("redis+sentinel://:hunter2@s1:26379,s2:26379", "names no master"),
        ("redis+sentinel://s1,s2:0/mymaster", "the port of Sentinel 's2:0'"),
        ("redis+sentinel:///mymaster?sentinel_password=hunter2", "names no Sentinel"),
        ("redis+sentinel://s1/mymaster/zero", "/master or /master/db"),
        ("redis+sentinel://s1/mymaster?password=hunter2", "unknown parameter 'password'"),
    ],
    "host": [("not a host", "IP address or host name"), ("", "IP address or host name")],
    "port": [("eighty", "valid integer"), ("70000", "less than or equal to 65535"), ("-1", "greater than or equal")],
    "admin_token": [("", "is empty"), ("two words", "contains a space"), ("tok\n", "control character")],
    "webhook_secret": [("   ", "is empty"), ("s3cret\r\n", "control character")],
    "allow_unauthenticated_webhooks": [("maybe", "valid boolean")],
    "webhook_secret_previous": [("", "is empty")],
    "webhook_allowed_networks": [("10.0.0.1/8", "host bits set"), ("office", "CIDR notation")],
    "trusted_proxies": [("proxy.internal", "CIDR notation")],
    "magnews_base_url": [("not a url", "valid URL"), ("ftp://magnews.example", "URL scheme")],
    "magnews_token": [("", "is empty"), ("Bearer abc", "contains a space")],
    "magnews_database_id": [("seven", "valid integer"), ("0", "greater than or equal to 1")],
    "magnews_client_id": [("  ", "is empty")],
    "magnews_client_secret": [(" secret", "begins or ends with a space")],
    "magnews_refresh_token": [("refresh token", "contains a space")],
    "magnews_token_url": [("token-endpoint", "valid URL")],
    "public_url": [("bridge.example.com", "valid URL")],
    "rules_reload_seconds": [("-5", "greater than or equal to 0"), ("soon", "valid number")],
    "worker_probes": [("sometimes", "valid boolean")],
    "magicbell_base_url": [("api.magicbell.com", "valid URL")],
    "magicbell_token": [("", "is empty")],
    "magicbell_recipients": [("ops@example.com,oncall", "'oncall' is not an e-mail address")],
    "magnify_base_url": [("::", "valid URL")],
    "magnify_token_url": [("auth", "valid URL")],
    "magnify_client_id": [("", "is empty")],
    "magnify_client_secret": [("\tsecret", "control character")],
    "magnify_poll_seconds": [("0", "greater than or equal to 1"), ("1.5", "valid integer")],
    "magnify_concurrency": [("100", "less than or equal to 64")],
    "magnify_lock_seconds": [("0", "greater than 0")],
    "magnify_retry_attempts": [("0", "greater than or equal to 1")],
    "magnify_retry_base_seconds": [("nan", "finite number")],
    "magnify_retry_cap_seconds": [("inf", "finite number")],
    "magnify_start": [("yesterday", "is not now, everything or an ISO 8601 date")],
    "magicbell_max_rps": [("-1", "greater than or equal to 0"), ("fast", "valid number")],
    "magnews_max_rps": [("inf", "finite number")],
    "rules_file": [("/no/such/rules.toml", "no such file"), ("/", "not a file")],
    "log_level": [("verbose", "'debug', 'info', 'warning' or 'error'")],
    "log_format": [("xml", "'json' or 'console'")],
    "ready_requires_worker": [("perhaps", "valid boolean")],
    "retention_days": [("0", "greater than 0"), ("a week", "valid number")],
    "record_retention_hours": [("0", "greater than 0"), ("a day", "valid number")],
    "webhook_max_body_bytes": [("512", "greater than or equal to 1024"), ("1MB", "valid integer")],
    "webhook_max_events": [("0", "greater than or equal to 1")],
    "webhook_max_depth": [("1", "greater than or equal to 2"), ("5000", "less than or equal to 500")],
    "webhook_max_string_length": [("10", "greater than or equal to 256")],
    "webhook_max_fields": [("5", "greater than or equal to 10")],
    "webhook_read_timeout_seconds": [("0", "greater than 0")],
    "http_header_timeout_seconds": [("-1", "greater than 0")],
    "http_timeout_seconds": [("0", "greater than 0"), ("60", "must exceed MAGBRIDGE_HTTP_TIMEOUT_SECONDS")],
    "worker_max_jobs": [("0", "greater than or equal to 1")],
    "worker_batch_size": [("5000", "less than or equal to 1000")],
    "worker_poll_seconds": [("10", "less than or equal to 5")],
    "retry_base_seconds": [("0", "greater than 0")],
    "retry_cap_seconds": [("inf", "finite number")],
    "retry_max_attempts": [("0", "greater than or equal to 1")],
    "retry_max_age_seconds": [("-1", "greater than 0")],
    "retry_after_max_seconds": [("0", "greater than 0")],
    "job_timeout_seconds": [("5", "must exceed MAGBRIDGE_HTTP_TIMEOUT_SECONDS"), ("0", "greater than 0")],
    "magicbell_max_concurrency": [("0", "greater than or equal to 1")],
    "magnews_max_concurrency": [("many", "valid integer")],
    "breaker_failures": [("0", "greater than or equal to 1")],
    "breaker_cooldown_seconds": [("0", "greater than 0")],
    "limiter_max_wait_seconds": [("-1", "greater than or equal to 0")],
    "magnews_batch_size": [("1001", "less than or equal to 1000")],
    "magnews_batch_wait_ms": [("-1", "greater than or equal to 0")],
    "sweep_after_seconds": [("0", "greater than 0")],
    "magnews_primary_key": [("user id", "should match pattern")],
    "magnews_contact_cache_seconds": [("0", "greater than or equal to 1")],
    "magnews_contact_miss_seconds": [("an hour", "valid integer")],
    "redis_min_replicas_ack": [("-1", "greater than or equal to 0"), ("all", "valid integer")],
    "redis_replica_ack_timeout_ms": [("5000", "less than or equal to 4000")],
    "console_session_minutes": [("0", "greater than or equal to 1"), ("2000", "less than or equal to 1440")],
    "console_secure_cookie": [("https", "valid boolean")],
}
# The message names this variable instead of the one given (a rule between two settings).
_NAMED_INSTEAD = {("http_timeout_seconds", "60"): "MAGBRIDGE_JOB_TIMEOUT_SECONDS"}
_CASES = [(field, value, expected) for field, values in BAD_VALUES.items() for value, expected in values]


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("MAGBRIDGE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_setting_has_bad_values() -> None:
    missing = sorted(set(Settings.model_fields) - set(BAD_VALUES))
    assert not missing, f"give these settings bad-value cases in BAD_VALUES: {missing}"
    assert not set(BAD_VALUES) - set(Settings.model_fields), "BAD_VALUES names settings that no longer exist"


@pytest.mark.parametrize(("field", "value", "expected"), _CASES, ids=[f"{f}={v!r}" for f, v, _ in _CASES])
def test_a_bad_value_is_one_line_naming_the_variable_and_what_is_expected(
    clean_environment: pytest.MonkeyPatch, field: str, value: str, expected: str
) -> None:
    variable = f"MAGBRIDGE_{field.upper()}"
    clean_environment.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("invalid settings: ")
    assert _NAMED_INSTEAD.get((field, value), variable) in message, message
    assert expected in message, message
    assert "errors.pydantic.dev" not in message and "Value error," not in message
    assert "hunter2" not in message, "a password in a URL is masked"
    if field.endswith(("token", "secret", "secret_previous")) and len(value.strip()) > 3:
        assert value.strip() not in message, "a secret's value is never shown"


def test_several_bad_values_are_each_named_on_the_one_line(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("MAGBRIDGE_PORT", "eighty")
    clean_environment.setenv("MAGBRIDGE_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert "\n" not in message and "MAGBRIDGE_PORT: " in message and "; MAGBRIDGE_LOG_FORMAT: " in message


def test_log_level_and_format_are_read_in_any_case(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("MAGBRIDGE_LOG_LEVEL", "INFO")
    clean_environment.setenv("MAGBRIDGE_LOG_FORMAT", "Console")
    settings = load_settings(_env_file=None)
    assert (settings.log_level, settings.log_format) == ("info", "console")


@pytest.mark.parametrize(
    "url",
    ["redis://localhost:6379/0", "redis://:p%40ss@redis.internal:6380/3", "rediss://user:pw@redis/1",
     "redis://[::1]:6379", "redis://redis?db=2", "unix:///var/run/redis.sock?db=1",
     "redis+sentinel://:pw@s1,s2:26380,[fd00::3]/mymaster/1?sentinel_password=s%40"],
)  # fmt: skip
def test_usable_redis_urls_are_accepted(url: str) -> None:
    assert load_settings(_env_file=None, redis_url=url).redis_url == url


def _run(command: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real ``magbridge`` command with only ``env`` for settings, away from any ``.env``."""
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", command],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


SAMPLE = [
    ("MAGBRIDGE_REDIS_URL", "localhost:6379", "no scheme"),
    ("MAGBRIDGE_REDIS_URL", "mysql://db:3306/0", "scheme 'mysql' is not supported"),
    ("MAGBRIDGE_PORT", "eighty", "valid integer"),
    ("MAGBRIDGE_ADMIN_TOKEN", "line\nbreak", "control character"),
    ("MAGBRIDGE_RETRY_CAP_SECONDS", "inf", "finite number"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "value", "expected"), SAMPLE)
def test_web_stops_with_one_line_and_status_2(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    result = _run("web", tmp_path, **{variable: value})
    assert result.returncode == 2, result
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"magbridge: invalid settings: {variable}") and expected in line, line


@pytest.mark.slow
@pytest.mark.parametrize(("variable", "value", "expected"), SAMPLE)
def test_check_fails_the_settings_line_with_status_2(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    result = _run("check", tmp_path, **{variable: value})
    assert result.returncode == 2, result
    assert "Traceback" not in result.stdout + result.stderr
    first, summary = result.stdout.splitlines()
    assert first.startswith(f"FAIL  settings   invalid settings: {variable}") and expected in first, first
    assert summary == "1 check(s) failed"
