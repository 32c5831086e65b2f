"""``magbridge check``: settings, rules, Redis and each API's authentication, one line each.

    ok    settings   valid
    ok    receiver   webhooks need MAGBRIDGE_WEBHOOK_SECRET
    WARN  admin      MAGBRIDGE_ADMIN_TOKEN unset: the admin API answers 503; ...
    ok    rules      6 rules in config/default_rules.toml; Magnews topics: contacts/create, ...
    WARN  redis      redis 7.2.4 at redis:6379/0, aof off, maxmemory-policy allkeys-lru: ...
    ok    magicbell  token accepted by https://api.magicbell.com/v2
    FAIL  magnews    http://...: HTTP 401: Unauthorized (invalid bearer token); deliveries paused since ...
    ok    magnify    polling off (MAGBRIDGE_MAGNIFY_CLIENT_ID and _CLIENT_SECRET unset)
    skip  webhook    MAGBRIDGE_PUBLIC_URL unset, subscription not looked up
    1 check(s) failed, 2 warning(s)

A destination that the workers paused because it refused their credentials (401/403) is named on its
line: FAIL when this check's credentials are refused too, WARN when they are accepted (the workers'
next probe resumes deliveries; if theirs differ, restart them with these).

Exit status 2 when the settings themselves are invalid (one line names the variable; nothing else is
checked), 1 when a check failed (``--strict``: or warned), else 0. A warning is something that works
but can lose work or events or let someone in: Redis without AOF, an eviction policy other than
``noeviction``, a Magnews subscription that is missing or does not cover the rules' topics, no
webhook secret (``web`` refuses to start without one unless told otherwise), no admin token.
Secrets are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bridge.cli.magnews_webhook import (
    WebhookAdmin,
    describe_failure,
    mask_token,
    receiver_url,
    rule_topics,
    same_receiver,
)
from bridge.logs import configure_logging
from bridge.store.connections import open_redis, redis_location
from bridge.store.records import text
from bridge.web.health import read_pauses
from config.errors import ConfigError, DeliveryError, MagbridgeError, StoreUnavailable
from config.rules import load_rules
from config.settings import Settings, load_settings
from workers.destinations.magicbell import MagicBellClient
from workers.destinations.magnews import MagnewsClient
from workers.magnify.auth import TokenManager

__all__ = ["Outcome", "add_check_parser", "check_command", "cmd_check", "run_check"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """A check that did not fail: ``ok``, ``WARN`` (works, but can lose work) or ``skip``."""

    status: str
    detail: str


Check = Callable[[], Awaitable[Outcome]]
_FAILURES = (MagbridgeError, RedisError, OSError, aiohttp.ClientError, TimeoutError)


def _ok(detail: str) -> Outcome:
    return Outcome("ok", detail)


def _url(url: object) -> str:
    return str(url).rstrip("/")


async def _redis_outcome(redis: aioredis.Redis, url: str, min_replicas: int = 0) -> Outcome:
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"redis at {redis_location(url)} does not answer: {exc}") from exc
    info: dict[str, Any] = await redis.info()
    try:
        reply = next(iter((await redis.config_get("appendfsync")).values()), None)
    except ResponseError:  # managed Redis often refuses CONFIG
        reply = None
    fsync = None if reply is None else text(reply)
    policy = str(info.get("maxmemory_policy", "?"))
    aof = bool(info.get("aof_enabled"))
    detail = (
        f"redis {info.get('redis_version', '?')} at {redis_location(url)}, aof {'on' if aof else 'off'}"
        f"{f' (appendfsync {fsync})' if aof and fsync else ''}, maxmemory-policy {policy}"
    )
    replicas = int(info.get("connected_slaves", 0))
    if min_replicas:
        detail += f", {replicas} replica(s) connected"
        if replicas < min_replicas:
            raise StoreUnavailable(
                f"{detail}: MAGBRIDGE_REDIS_MIN_REPLICAS_ACK={min_replicas} needs that many replicas, "
                "or every webhook is answered 503"
            )
    problems = []
    if min_replicas and replicas == min_replicas:
        problems.append(f"no spare replica: while one restarts every webhook is answered 503; run {replicas + 1}")
    if policy != "noeviction":
        problems.append(f"eviction policy {policy} can drop queued events; set maxmemory-policy noeviction")
    if not aof:
        problems.append("without AOF a Redis restart loses queued events; set appendonly yes")
    if aof and fsync not in (None, "everysec", "always"):
        problems.append(f"appendfsync {fsync} can lose more than a second of events; use everysec or always")
    return Outcome("WARN", f"{detail}: {'; '.join(problems)}") if problems else _ok(detail)


def _receiver_outcome(settings: Settings) -> Outcome:
    """Who may post webhooks: a missing secret is a warning, whether or not it was allowed on purpose."""
    if settings.webhook_secret is not None:
        rotation = " or MAGBRIDGE_WEBHOOK_SECRET_PREVIOUS" if settings.webhook_secret_previous is not None else ""
        return _ok(f"webhooks need MAGBRIDGE_WEBHOOK_SECRET{rotation}")
    if settings.allow_unauthenticated_webhooks:
        return Outcome(
            "WARN",
            "MAGBRIDGE_WEBHOOK_SECRET unset and MAGBRIDGE_ALLOW_UNAUTHENTICATED_WEBHOOKS=true: "
            "anyone who reaches the receiver can post webhooks",
        )
    return Outcome(
        "WARN",
        "MAGBRIDGE_WEBHOOK_SECRET unset: `magbridge web` and `run` refuse to start without it (docs/security.md)",
    )


def _settled(outcome: Outcome) -> Check:
    """A check whose outcome the settings alone decide."""

    async def check() -> Outcome:
        return outcome

    return check


def _admin_outcome(settings: Settings) -> Outcome:
    if settings.admin_token is not None:
        return _ok("admin API on (MAGBRIDGE_ADMIN_TOKEN set)")
    return Outcome(
        "WARN",
        "MAGBRIDGE_ADMIN_TOKEN unset: the admin API answers 503 "
        "(from a shell: magbridge events, magbridge dead-letters, magbridge replay)",
    )


async def _webhook_outcome(settings: Settings, admin: WebhookAdmin) -> Outcome:
    if settings.public_url is None:
        return Outcome("skip", "MAGBRIDGE_PUBLIC_URL unset, subscription not looked up")
    ours = receiver_url(settings)
    wanted, _ = rule_topics(load_rules(settings.rules_file))
    subscriptions = await admin.subscriptions()
    mine = [s for s in subscriptions if s.uri == ours]
    if not mine:
        same_receiver_only = any(same_receiver(s.uri, ours) for s in subscriptions)
        why = "its token differs from MAGBRIDGE_WEBHOOK_SECRET" if same_receiver_only else "none found"
        hint = "run `magbridge magnews-webhook register`"
        return Outcome("WARN", f"no Magnews subscription for {mask_token(ours)} ({why}): {hint}")
    subscription = mine[0]
    missing = sorted(set(wanted) - set(subscription.topics.split(",")))
    if subscription.status != "active" or missing:
        state = f"is {subscription.status}" if subscription.status != "active" else f"lacks {', '.join(missing)}"
        return Outcome("WARN", f"subscription #{subscription.id} {state}: run `magbridge magnews-webhook register`")
    return _ok(f"subscription #{subscription.id} active for {mask_token(ours)}, covering {len(wanted)} rule topic(s)")


async def _pauses(redis: aioredis.Redis) -> dict[str, dict[str, Any]]:
    """The destinations the workers paused; none when Redis does not answer (its own line says so)."""
    try:
        return await read_pauses(redis)
    except (RedisError, OSError):
        return {}


def _paused(check: dict[str, Any]) -> str:
    """``deliveries paused since ... after HTTP 401`` from a ``read_pauses`` check."""
    return f"deliveries paused since {check['since']} after HTTP {check.get('status', '?')}"


def _with_pause(pauses: dict[str, dict[str, Any]], destination: str, outcome: Outcome) -> Outcome:
    """A paused destination whose credentials this check finds accepted: a warning."""
    if destination not in pauses:
        return outcome
    hint = "the workers' next probe resumes them (restart workers that have other credentials)"
    return Outcome("WARN", f"{outcome.detail}; {_paused(pauses[destination])}: {hint}")


def _refused(pauses: dict[str, dict[str, Any]], destination: str, exc: DeliveryError) -> DeliveryError:
    """A paused destination whose credentials this check finds refused too: the failure says so."""
    if destination not in pauses:
        return exc
    return DeliveryError(f"{exc}; {_paused(pauses[destination])}", status=exc.status)


async def run_check(settings: Settings, *, out: TextIO, strict: bool = False) -> int:
    """Run every check, print one line each, and return the exit status (0 when none failed)."""
    redis = open_redis(settings.redis_url)
    try:
        pauses = await _pauses(redis)
        async with aiohttp.ClientSession() as session:
            magicbell = MagicBellClient.from_settings(session, settings)
            magnews = MagnewsClient.from_settings(session, settings, redis=redis)

            async def rules() -> Outcome:
                ruleset = load_rules(settings.rules_file)
                topics, _ = rule_topics(ruleset)
                listed = f"; Magnews topics: {', '.join(topics)}" if topics else "; no Magnews topics"
                return _ok(f"{len(ruleset.rules)} rules in {settings.rules_file}{listed}")

            async def redis_check() -> Outcome:
                return await _redis_outcome(redis, settings.redis_url, settings.redis_min_replicas_ack)

            async def magicbell_auth() -> Outcome:
                try:
                    await magicbell.ping()
                except DeliveryError as exc:
                    raise _refused(pauses, "magicbell", exc) from exc
                return _with_pause(pauses, "magicbell", _ok(f"token accepted by {_url(settings.magicbell_base_url)}"))

            async def magnews_auth() -> Outcome:
                try:
                    await magnews.ping()
                except DeliveryError as exc:
                    failure = DeliveryError(f"{_url(settings.magnews_base_url)}: {describe_failure(exc)}")
                    raise _refused(pauses, "magnews", failure) from exc
                detail = f"{magnews.tokens.describe()}: accepted by {_url(settings.magnews_base_url)}"
                return _with_pause(pauses, "magnews", _ok(detail))

            async def magnify_auth() -> Outcome:
                if not settings.magnify_enabled or settings.magnify_client_secret is None:
                    return _ok("polling off (MAGBRIDGE_MAGNIFY_CLIENT_ID and _CLIENT_SECRET unset)")
                tokens = TokenManager(
                    session,
                    str(settings.magnify_token_url),
                    str(settings.magnify_client_id),
                    settings.magnify_client_secret,
                    timeout=settings.http_timeout_seconds,
                )
                await tokens.token()
                return _ok(f"client credentials accepted by {_url(settings.magnify_token_url)}")

            async def webhook() -> Outcome:
                return await _webhook_outcome(settings, WebhookAdmin(magnews))

            checks: list[tuple[str, Check]] = [
                ("receiver", _settled(_receiver_outcome(settings))),
                ("admin", _settled(_admin_outcome(settings))),
                ("rules", rules),
                ("redis", redis_check),
                ("magicbell", magicbell_auth),
                ("magnews", magnews_auth),
                ("magnify", magnify_auth),
                ("webhook", webhook),
            ]
            out.write(f"{'ok':<5} {'settings':<10} valid\n")
            failures = warnings = 0
            for name, check in checks:
                try:
                    outcome = await check()
                except _FAILURES as exc:
                    failures += 1
                    out.write(f"{'FAIL':<5} {name:<10} {mask_token(str(exc) or type(exc).__name__)}\n")
                else:
                    warnings += outcome.status == "WARN"
                    out.write(f"{outcome.status:<5} {name:<10} {outcome.detail}\n")
    finally:
        await redis.aclose()
    return _summary(out, failures, warnings, strict=strict)


def _summary(out: TextIO, failures: int, warnings: int, *, strict: bool) -> int:
    warned = f", {warnings} warning(s)" if warnings else ""
    out.write(f"{failures} check(s) failed{warned}\n" if failures else f"all checks passed{warned}\n")
    return 1 if failures or (strict and warnings) else 0


def check_command(out: TextIO, *, strict: bool = False) -> int:
    """``magbridge check``: settings first (nothing else can run without them, exit status 2), then the rest."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        out.write(f"{'FAIL':<5} {'settings':<10} {exc}\n")
        _summary(out, 1, 0, strict=strict)
        return 2
    configure_logging("warning", "console")
    return asyncio.run(run_check(settings, out=out, strict=strict))


def add_check_parser(commands: Any) -> None:
    """Add the ``check`` subcommand to ``commands`` (argparse sub-parsers)."""
    check = commands.add_parser(
        "check",
        help="validate settings and rules, reach Redis and each API",
        description="Validates the settings and rules, reaches Redis (persistence, eviction policy) and each API "
        "with its credentials, looks up the Magnews subscription, and warns about a missing webhook secret or "
        "admin token: one line each. Exit status 2 for invalid settings, 1 when a check failed (--strict: or "
        "warned), else 0. Secrets are never printed.",
    )
    check.add_argument("--strict", action="store_true", help="warnings fail too (exit status 1)")


def cmd_check(args: argparse.Namespace) -> int:
    return check_command(sys.stdout, strict=args.strict)
