"""Settings: every ``MAGBRIDGE_*`` variable of the contract, validated once at start.

Build one ``Settings`` at the entry point and pass it down; there is no module-level instance.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from config.errors import ConfigError
from config.values import check_credential, check_host, check_redis_url, mask_url_credentials

__all__ = ["DEFAULT_RULES_FILE", "Settings", "load_settings", "parse_start_ms"]

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.toml")
_ENV_PREFIX = "MAGBRIDGE_"
# Tokens sent as they are (bearer tokens, the webhook secret in a URL), and other credentials.
_BEARER_FIELDS = (
    "admin_token",
    "webhook_secret",
    "webhook_secret_previous",
    "magnews_token",
    "magnews_refresh_token",
    "magicbell_token",
)
_CREDENTIAL_FIELDS = ("magnews_client_id", "magnews_client_secret", "magnify_client_id", "magnify_client_secret")


class Settings(BaseSettings):
    """Runtime configuration, read from the environment (prefix ``MAGBRIDGE_``) and ``.env``."""

    # allow_inf_nan: "inf" would pass every lower bound and "nan" compares false with every bound.
    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, env_file=".env", extra="ignore", allow_inf_nan=False)

    redis_url: str = "redis://localhost:6379/0"
    # The replica wait (bridge/store/replicas.py): a webhook is answered 200 only once this many
    # replicas confirmed its events (0 = off), and 503 when they do not within the timeout. The
    # timeout stays below the Redis connections' 5 s socket timeout, so WAIT's answer arrives first.
    redis_min_replicas_ack: int = Field(0, ge=0, le=100)
    redis_replica_ack_timeout_ms: int = Field(1000, ge=1, le=4000)
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    # Without a secret, ``web`` and ``run`` refuse to start unless this says the open receiver is meant.
    allow_unauthenticated_webhooks: bool = False
    # Security, see bridge/web/webhook_guard.py. Rotation: the secret being retired stays valid
    # while this is set. Networks: comma-separated CIDRs allowed to post webhooks (empty: any), and
    # the proxies whose X-Forwarded-For is believed (empty: none, the peer address is the client).
    webhook_secret_previous: SecretStr | None = None
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []

    magnews_base_url: AnyHttpUrl = AnyHttpUrl("https://ws-mn1.mag-news.it/ws/rest/api")
    magnews_token: SecretStr | None = None
    magnews_database_id: int | None = Field(None, ge=1)
    # The database's primary-key field (docs/rules.md#finding-the-contact): what a merge names the
    # contact by; "email" for most Magnews databases. The default is the contract's database, keyed
    # by the Magnify user id. Rules see it as ``magnews_primary_key``.
    magnews_primary_key: str = Field("magnify_user_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    # Deployment, see workers/destinations/magnews_auth.py: the Magnews refresh-token flow (all four set,
    # or none; the rotated refresh token is kept in Redis), the bridge's public base URL for webhook
    # registration, the rules file's reload check (0 = SIGHUP only) and the worker's own probes.
    magnews_client_id: str | None = None
    magnews_client_secret: SecretStr | None = None
    magnews_refresh_token: SecretStr | None = None
    magnews_token_url: AnyHttpUrl | None = None
    public_url: AnyHttpUrl | None = None
    rules_reload_seconds: float = Field(5, ge=0)
    worker_probes: bool = False
    magicbell_base_url: AnyHttpUrl = AnyHttpUrl("https://api.magicbell.com/v2")
    magicbell_token: SecretStr | None = None
    magicbell_recipients: Annotated[list[str], NoDecode] = []
    magnify_base_url: AnyHttpUrl = AnyHttpUrl("https://api.magnify.io/v1/partner")
    magnify_token_url: AnyHttpUrl = AnyHttpUrl("https://auth.magnify.io/oauth2/token")
    magnify_client_id: str | None = None
    magnify_client_secret: SecretStr | None = None
    magnify_poll_seconds: int = Field(60, ge=1)
    # Magnify polling, see workers/magnify/poller.py: motions read at once, the poll lock's lease,
    # and retries of one request (429/5xx/no answer; Retry-After is a floor) within a cycle.
    magnify_concurrency: int = Field(4, ge=1, le=64)
    magnify_lock_seconds: float = Field(15, gt=0)
    magnify_retry_attempts: int = Field(4, ge=1)
    magnify_retry_base_seconds: float = Field(0.5, gt=0)
    magnify_retry_cap_seconds: float = Field(30, gt=0)
    # Where polling starts (docs/magnify.md#where-polling-starts): "now" (metrics that occur after
    # the bridge's first poll of this Redis), "everything", or an ISO 8601 date or date-time.
    magnify_start: str = "now"

    magicbell_max_rps: float = Field(1, ge=0)
    magnews_max_rps: float = Field(10, ge=0)

    # The operator console (bridge/web/console): how long a login lasts, and whether its cookies are
    # Secure; unset: when the request came over https (set true behind a proxy that ends TLS).
    console_session_minutes: int = Field(60, ge=1, le=1440)
    console_secure_cookie: bool | None = None

    rules_file: Path = DEFAULT_RULES_FILE
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    # Beyond the contract: bounds and tuning, each with a production default.
    # Operations: with true, the web's /readyz also fails while no worker heartbeat is fresh. Off by
    # default: Redis holds the queue, so a worker outage must not take the receiver out of its Service.
    ready_requires_worker: bool = False
    # The dedupe window (the contract's "retention window"): an id seen within it is a duplicate.
    retention_days: float = Field(7, gt=0)
    # How long the full record of a delivered or ignored event is kept (docs/performance.md#sizing);
    # its dedupe marker stays for the whole window, dead letters until handled. At most the window.
    record_retention_hours: float = Field(24, gt=0)
    webhook_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    webhook_max_events: int = Field(1000, ge=1)
    # Security, see bridge/web/json_bounds.py: nesting depth, characters in one string (or key),
    # values in one body; a body must arrive within the read timeout, request headers within the
    # header timeout (which also closes idle keep-alive connections).
    webhook_max_depth: int = Field(32, ge=2, le=500)
    # One long string is no reason to refuse an event: the body limit already bounds memory.
    webhook_max_string_length: int = Field(1024 * 1024, ge=256)
    webhook_max_fields: int = Field(100_000, ge=10)
    webhook_read_timeout_seconds: float = Field(30, gt=0)
    http_header_timeout_seconds: float = Field(15, gt=0)
    http_timeout_seconds: float = Field(10, gt=0)
    # Delivery jobs one worker runs at once, the most events one job carries (one batch: one
    # transaction records it), and how often an idle worker asks arq's queue for due jobs. Several
    # batches overlap, so some wait on Redis or the network while another computes.
    worker_max_jobs: int = Field(4, ge=1)
    worker_batch_size: int = Field(100, ge=1, le=1000)
    worker_poll_seconds: float = Field(0.005, gt=0, le=5)
    retry_base_seconds: float = Field(1, gt=0)
    retry_cap_seconds: float = Field(300, gt=0)
    retry_max_attempts: int = Field(8, ge=1)
    retry_max_age_seconds: float = Field(86400, gt=0)
    retry_after_max_seconds: float = Field(600, gt=0)  # a server's Retry-After is honoured up to this
    # Delivery guarantees: a job never outlives arq's in-progress lock, see workers/worker.py.
    job_timeout_seconds: float = Field(30, gt=0)
    magicbell_max_concurrency: int = Field(10, ge=1)
    magnews_max_concurrency: int = Field(20, ge=1)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30, gt=0)
    limiter_max_wait_seconds: float = Field(1, ge=0)
    magnews_batch_size: int = Field(500, ge=1, le=1000)
    magnews_batch_wait_ms: float = Field(0, ge=0)
    # How long a contact found through the query API (field value -> primary key) is remembered,
    # and how long "no such contact" is: short, so a contact added in Magnews is found soon.
    magnews_contact_cache_seconds: int = Field(3600, ge=1)
    magnews_contact_miss_seconds: int = Field(60, ge=1)
    sweep_after_seconds: float = Field(600, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_usable(cls, value: str) -> str:
        return check_redis_url(value)

    @field_validator("host")
    @classmethod
    def _host_is_an_address(cls, value: str) -> str:
        return check_host(value)

    @field_validator(*_BEARER_FIELDS, *_CREDENTIAL_FIELDS)
    @classmethod
    def _credential_is_sendable(cls, value: SecretStr | str | None, info: ValidationInfo) -> SecretStr | str | None:
        if value is not None and info.field_name is not None:
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            check_credential(f"{_ENV_PREFIX}{info.field_name.upper()}", raw, bearer=info.field_name in _BEARER_FIELDS)
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("rules_file")
    @classmethod
    def _rules_file_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"{str(value)[:200]}: {'not a file' if value.exists() else 'no such file'}")
        return value

    @field_validator("magnify_start")
    @classmethod
    def _magnify_start_is_known(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in ("now", "everything"):
            return value.lower()
        try:
            parse_start_ms(value)
        except ValueError:
            raise ValueError(f"{value[:40]!r} is not now, everything or an ISO 8601 date") from None
        return value

    @field_validator("magicbell_recipients", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("magicbell_recipients")
    @classmethod
    def _check_recipients(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in address or address.startswith("@") or address.endswith("@"):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @field_validator("webhook_allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list | tuple):
            return [_network(part) if isinstance(part, str) else part for part in value]
        return value

    @model_validator(mode="after")
    def _webhook_secrets_are_usable(self) -> Settings:
        if self.webhook_secret_previous is not None and self.webhook_secret is None:
            raise ValueError(
                f"{_ENV_PREFIX}WEBHOOK_SECRET_PREVIOUS is set without {_ENV_PREFIX}WEBHOOK_SECRET: "
                "rotation keeps the old secret beside a new one"
            )
        return self

    @model_validator(mode="after")
    def _magnews_refresh_flow_is_complete(self) -> Settings:
        names = ("magnews_client_id", "magnews_client_secret", "magnews_refresh_token", "magnews_token_url")
        missing = [f"{_ENV_PREFIX}{name.upper()}" for name in names if getattr(self, name) is None]
        if 0 < len(missing) < len(names):
            raise ValueError(f"the Magnews refresh-token flow also needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _job_outlasts_a_request(self) -> Settings:
        if self.http_timeout_seconds >= self.job_timeout_seconds:
            raise ValueError(
                f"{_ENV_PREFIX}JOB_TIMEOUT_SECONDS ({self.job_timeout_seconds:g}) must exceed "
                f"{_ENV_PREFIX}HTTP_TIMEOUT_SECONDS ({self.http_timeout_seconds:g}): a job must be able to "
                "finish one request"
            )
        return self

    @property
    def retention_seconds(self) -> int:
        return int(self.retention_days * 86400)

    @property
    def record_retention_seconds(self) -> int:
        """The delivered record's retention, never longer than the dedupe window."""
        return min(int(self.record_retention_hours * 3600), self.retention_seconds)

    def destination_limits(self, destination: str) -> tuple[float, int]:
        """A destination's requests per second (0: no limit) and requests in flight, at most."""
        if destination == "magicbell":
            return self.magicbell_max_rps, self.magicbell_max_concurrency
        return self.magnews_max_rps, self.magnews_max_concurrency

    @property
    def magnews_refresh_enabled(self) -> bool:
        """Magnews access tokens come from the refresh-token flow instead of ``MAGNEWS_TOKEN``."""
        return self.magnews_refresh_token is not None and self.magnews_token_url is not None

    @property
    def magnify_enabled(self) -> bool:
        return bool(self.magnify_client_id and self.magnify_client_secret)


def parse_start_ms(value: str) -> int:
    """An ISO 8601 date or date-time as epoch ms (UTC when it names no offset); ``ValueError`` if not one."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _network(text: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a network in CIDR notation ({exc})") from None


def _problem(error: ErrorDetails) -> str:
    """One bad value: the variable, what is expected and (unless it is a secret) what was given."""
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "should be", 1)
    if not error["loc"]:  # a model validator: its message names the variables
        return message
    field = str(error["loc"][0])
    variable = f"{_ENV_PREFIX}{field.upper()}"
    if error["type"] != "value_error" and not _is_secret(field):  # our own messages already show the value
        given = error["input"]
        message += f" (got {mask_url_credentials(given)[:40]!r})" if isinstance(given, str) else ""
    return message if message.startswith(variable) else f"{variable}: {message}"


def _is_secret(field: str) -> bool:
    return field in _BEARER_FIELDS or field in _CREDENTIAL_FIELDS or field == "redis_url"


def load_settings(**overrides: Any) -> Settings:
    """Build ``Settings``; a bad value raises ``ConfigError``: one line naming the variable and what is
    expected (every bad variable, separated by ``;``)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError("invalid settings: " + "; ".join(_problem(error) for error in exc.errors())) from exc
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise ConfigError(f"invalid settings: {exc}") from exc
