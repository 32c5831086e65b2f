"""Settings: every ``MAGBRIDGE_*`` variable of the contract, validated once at start.

Build one ``Settings`` at the entry point and pass it down; there is no module-level instance.
"""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import ConfigError

__all__ = ["DEFAULT_RULES_FILE", "Settings", "load_settings", "parse_start_ms"]

DEFAULT_RULES_FILE = Path(__file__).with_name("default_rules.toml")
_ENV_PREFIX = "MAGBRIDGE_"


class Settings(BaseSettings):
    """Runtime configuration, read from the environment (prefix ``MAGBRIDGE_``) and ``.env``."""

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, env_file=".env", extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    admin_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    # Security, see bridge/web/webhook_guard.py. Rotation: the secret being retired stays valid
    # while this is set. Networks: comma-separated CIDRs allowed to post webhooks (empty: any), and
    # the proxies whose X-Forwarded-For is believed (empty: none, the peer address is the client).
    webhook_secret_previous: SecretStr | None = None
    webhook_allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []

    magnews_base_url: AnyHttpUrl = AnyHttpUrl("https://ws-mn1.mag-news.it/ws/rest/api")
    magnews_token: SecretStr | None = None
    magnews_database_id: int | None = Field(None, ge=1)
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

    rules_file: Path = DEFAULT_RULES_FILE
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    # Beyond the contract: bounds and tuning, each with a production default.
    # Operations: /readyz fails while no worker heartbeat is fresh, unless this is false.
    ready_requires_worker: bool = True
    retention_days: float = Field(7, gt=0)
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
    sweep_after_seconds: float = Field(600, gt=0)

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
        for name in ("webhook_secret", "webhook_secret_previous"):
            secret = getattr(self, name)
            if secret is not None and not secret.get_secret_value().strip():
                raise ValueError(f"{_ENV_PREFIX}{name.upper()} is empty: unset it, or give it a value")
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
                f"job_timeout_seconds ({self.job_timeout_seconds:g}) must exceed http_timeout_seconds "
                f"({self.http_timeout_seconds:g}): a job must be able to finish one request"
            )
        return self

    @property
    def retention_seconds(self) -> int:
        return int(self.retention_days * 86400)

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


def load_settings(**overrides: Any) -> Settings:
    """Build ``Settings``; a bad value raises ``ConfigError`` naming the variable and the rule."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = f"{_ENV_PREFIX}{str(error['loc'][0]).upper()}: " if error["loc"] else ""
            problems.append(f"{where}{error['msg']}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc
