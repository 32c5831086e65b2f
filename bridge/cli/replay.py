"""``magbridge replay``: the admin replay from the shell, straight against Redis (no web service).

    magbridge replay EVENT_ID [EVENT_ID ...]          these events
    magbridge replay --dead-letters [--source S] [--type T]
    magbridge replay --since T [--until T] [--source S] [--type T]
    ... [--dry-run] [--force] [--json]

Exit status: 0 done, 1 some ids not found (or Redis unavailable), 2 a selection that cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO

from pydantic import ValidationError

from bridge.logs import configure_logging
from bridge.store.connections import open_redis
from bridge.store.queries import InvalidQuery
from bridge.store.replay import ReplayReport, ReplayRequest, SelectionTooLarge, run_replay
from config.errors import StoreUnavailable
from config.settings import Settings, load_settings

__all__ = ["add_replay_parser", "cmd_replay"]


def add_replay_parser(commands: Any) -> None:
    """Add the ``replay`` subcommand to ``commands`` (argparse sub-parsers)."""
    replay = commands.add_parser(
        "replay",
        help="queue events again: ids, dead letters or a time range (--dry-run, --force)",
        description="Queue events for delivery again. Without --force, actions already delivered are skipped "
        "and dead ones are tried again; with --force every action is sent once more.",
    )
    replay.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="replay these events")
    replay.add_argument("--dead-letters", action="store_true", help="replay every dead letter")
    replay.add_argument("--since", help="received at or after: ISO 8601, epoch ms, or a span ago (15m, 2h, 7d)")
    replay.add_argument("--until", help="received at or before (default: now)")
    replay.add_argument("--source", help="only events from this source (magnews, magnify)")
    replay.add_argument("--type", help="only events of this type, or a glob such as '*/msg/bounce'")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    replay.add_argument("--force", action="store_true", help="send again even what was delivered")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")


def _request(args: argparse.Namespace) -> ReplayRequest:
    body: dict[str, Any] = {
        "dead_letters": args.dead_letters,
        "dry_run": args.dry_run,
        "force": args.force,
    }
    if args.event_ids:
        body["event_ids"] = args.event_ids
    for name in ("since", "until", "source", "type"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    return ReplayRequest.model_validate(body)


def _print(report: ReplayReport, out: TextIO) -> None:
    result = report.as_dict()
    count = len(result["replayed"])
    what = f"{count} event{'' if count == 1 else 's'} ({report.mode}, {'forced' if report.force else 'not forced'})"
    print(f"dry run: would replay {what}" if report.dry_run else f"replayed {what}", file=out)
    for event in result["events"]:
        reset = event["reset_actions"]
        note = f"{reset} dead action{'' if reset == 1 else 's'} back to pending" if reset else ""
        print(
            f"  {event['id']}  was {event['previous_status']}  generation {event['generation']}  {note}".rstrip(),
            file=out,
        )
    for key, label in (("not_found", "not found"), ("already_queued", "already queued"), ("busy", "busy, try again")):
        if result[key]:
            print(f"{label}: {', '.join(result[key])}", file=out)


async def _replay(settings: Settings, request: ReplayRequest) -> ReplayReport:
    redis = open_redis(settings.redis_url)
    try:
        return await run_replay(redis, request, by="cli", batch_size=settings.worker_batch_size)
    finally:
        await redis.aclose()


def cmd_replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("warning", settings.log_format)  # the report is the output; logs only for trouble
    try:
        request = _request(args)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"magbridge replay: {error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_replay(settings, request))
    except (InvalidQuery, SelectionTooLarge) as exc:
        print(f"magbridge replay: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"magbridge replay: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report, sys.stdout)
    return 1 if report.ids("not-found") or report.ids("busy") else 0
