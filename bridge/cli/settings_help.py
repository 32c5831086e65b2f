"""The settings each command reads, as its ``--help`` names them.

Names drop the ``MAGBRIDGE_`` prefix; ``*`` stands for any rest (``WEBHOOK_*``). The tests check that
every name matches a setting and that every setting is named by some command, so a new setting
appears in some command's help.
"""

from __future__ import annotations

__all__ = ["COMMAND_SETTINGS", "settings_epilog"]


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_WEB = _names(
    "REDIS_URL REDIS_MIN_REPLICAS_ACK REDIS_REPLICA_ACK_TIMEOUT_MS HOST PORT WEBHOOK_SECRET "
    "WEBHOOK_SECRET_PREVIOUS ALLOW_UNAUTHENTICATED_WEBHOOKS WEBHOOK_* TRUSTED_PROXIES HTTP_HEADER_TIMEOUT_SECONDS "
    "ADMIN_TOKEN READY_REQUIRES_WORKER MAGNIFY_CLIENT_ID MAGNIFY_CLIENT_SECRET RETENTION_DAYS RECORD_RETENTION_HOURS "
    "WORKER_BATCH_SIZE CONSOLE_* RULES_FILE LOG_LEVEL LOG_FORMAT"
)
_WORKER = _names(
    "REDIS_URL RULES_FILE RULES_RELOAD_SECONDS MAGNEWS_* MAGICBELL_* MAGNIFY_* WORKER_* JOB_TIMEOUT_SECONDS "
    "HTTP_TIMEOUT_SECONDS RETRY_* BREAKER_* LIMITER_MAX_WAIT_SECONDS SWEEP_AFTER_SECONDS RETENTION_DAYS HOST PORT "
    "RECORD_RETENTION_HOURS LOG_LEVEL LOG_FORMAT"
)
_MAGNEWS_AUTH = "MAGNEWS_BASE_URL MAGNEWS_TOKEN MAGNEWS_CLIENT_ID MAGNEWS_CLIENT_SECRET MAGNEWS_REFRESH_TOKEN "
_MAGNEWS_AUTH += "MAGNEWS_TOKEN_URL HTTP_TIMEOUT_SECONDS"

COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "web": _WEB,
    "worker": _WORKER,
    "run": tuple(dict.fromkeys(_WEB + _WORKER)),
    "check": _names(
        "REDIS_URL RULES_FILE WEBHOOK_SECRET WEBHOOK_SECRET_PREVIOUS ALLOW_UNAUTHENTICATED_WEBHOOKS ADMIN_TOKEN "
        f"PUBLIC_URL {_MAGNEWS_AUTH} MAGICBELL_BASE_URL MAGICBELL_TOKEN MAGNIFY_TOKEN_URL MAGNIFY_CLIENT_ID "
        "MAGNIFY_CLIENT_SECRET"
    ),
    "demo": _names("REDIS_URL MAGNEWS_DATABASE_ID MAGICBELL_RECIPIENTS WORKER_* RETRY_*"),
    "simulate": (),
    "replay": _names("REDIS_URL WORKER_BATCH_SIZE LOG_FORMAT"),
    "magnews-webhook": _names(f"PUBLIC_URL WEBHOOK_SECRET RULES_FILE REDIS_URL {_MAGNEWS_AUTH}"),
    "events": _names("REDIS_URL LOG_FORMAT"),
    "dead-letters": _names("REDIS_URL LOG_FORMAT"),
}


def settings_epilog(command: str) -> str:
    """The ``--help`` epilog of ``command``: the settings it reads."""
    names = COMMAND_SETTINGS[command]
    if not names:
        return "settings: none (everything is on the command line)"
    listed = ", ".join(f"MAGBRIDGE_{name}" for name in names)
    return f"settings: {listed}. Every MAGBRIDGE_* setting is validated at start (docs/configuration.md)."
