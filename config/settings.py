"""Settings: every ``MAGBRIDGE_*`` variable of the contract, validated once at start.

Build one ``Settings`` at the entry point and pass it down; there is no module-level instance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.errors import ConfigError

__all__ = ["DEFAULT_RULES_FILE", "Settings", "load_settings"]

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

    magnews_base_url: AnyHttpUrl = AnyHttpUrl("https://ws-mn1.mag-news.it/ws/rest/api")
    magnews_token: SecretStr | None = None
    magnews_database_id: int | None = Field(None, ge=1)
    magicbell_base_url: AnyHttpUrl = AnyHttpUrl("https://api.magicbell.com/v2")
    magicbell_token: SecretStr | None = None
    magicbell_recipients: Annotated[list[str], NoDecode] = []
    magnify_base_url: AnyHttpUrl = AnyHttpUrl("https://api.magnify.io/v1/partner")
    magnify_token_url: AnyHttpUrl = AnyHttpUrl("https://auth.magnify.io/oauth2/token")
    magnify_client_id: str | None = None
    magnify_client_secret: SecretStr | None = None
    magnify_poll_seconds: int = Field(60, ge=1)

    magicbell_max_rps: float = Field(1, ge=0)
    magnews_max_rps: float = Field(10, ge=0)

    rules_file: Path = DEFAULT_RULES_FILE
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    # Beyond the contract: bounds and tuning, each with a production default.
    retention_days: float = Field(7, gt=0)
    webhook_max_body_bytes: int = Field(1024 * 1024, ge=1024)
    webhook_max_events: int = Field(1000, ge=1)
    http_timeout_seconds: float = Field(10, gt=0)
    worker_max_jobs: int = Field(50, ge=1)
    retry_base_seconds: float = Field(1, gt=0)
    retry_cap_seconds: float = Field(300, gt=0)
    retry_max_attempts: int = Field(8, ge=1)
    retry_max_age_seconds: float = Field(86400, gt=0)
    retry_after_max_seconds: float = Field(600, gt=0)  # a server's Retry-After is honoured up to this
    # Delivery guarantees (issue 4): a job never outlives arq's in-progress lock, see workers/worker.py.
    job_timeout_seconds: float = Field(30, gt=0)
    magicbell_max_concurrency: int = Field(10, ge=1)
    magnews_max_concurrency: int = Field(20, ge=1)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30, gt=0)
    limiter_max_wait_seconds: float = Field(1, ge=0)
    magnews_batch_size: int = Field(500, ge=1, le=1000)
    magnews_batch_wait_ms: float = Field(20, ge=0)
    sweep_after_seconds: float = Field(600, gt=0)

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
    def magnify_enabled(self) -> bool:
        return bool(self.magnify_client_id and self.magnify_client_secret)


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
