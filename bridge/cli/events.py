"""``magbridge events list|show`` and ``magbridge dead-letters``: the admin API's reads from a shell.

    magbridge events list [--source S] [--type T] [--status S] [--since T] [--until T] [--limit N] [--cursor C]
    magbridge events show EVENT_ID
    magbridge dead-letters [--source S] [--type T] [--limit N] [--cursor C]
    ... [--json]

Straight against Redis (``MAGBRIDGE_REDIS_URL``), no web service or admin token needed: whoever can
reach the Redis can read it anyway. The selection and the bodies are the admin API's own
(``bridge.store.queries``, ``bridge.store.views``); ``--json`` prints exactly what the matching
admin route answers, the default a table or, for one event, a readable page.

Exit status: 0 done, 1 no such event (or Redis unavailable), 2 a filter that cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from bridge.cli.settings_help import settings_epilog
from bridge.logs import configure_logging
from bridge.store.connections import open_redis
from bridge.store.queries import EventQuery, InvalidQuery, decode_cursor, parse_instant
from bridge.store.reads import EventReader
from bridge.store.records import EVENT_STATUSES
from bridge.store.views import DEFAULT_LIMIT, MAX_LIMIT, dead_letters_page, event_detail, events_page, missing_event
from config.errors import StoreUnavailable
from config.settings import load_settings

__all__ = ["add_events_parsers", "cmd_dead_letters", "cmd_events", "run_events_command"]

_Render = Callable[[dict[str, Any], TextIO], None]


def _limit(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"an integer from 1 to {MAX_LIMIT}")
    return int(text)


def _add_selection(parser: argparse.ArgumentParser, *, status: bool) -> None:
    parser.add_argument("--source", help="only events from this source (magnews, magnify)")
    parser.add_argument("--type", help="only events of this type, or a glob such as '*/msg/bounce'")
    if status:
        parser.add_argument("--status", choices=EVENT_STATUSES, help="only events in this status")
        parser.add_argument("--since", help="received at or after: ISO 8601, epoch ms, or a span ago (15m, 2h, 7d)")
        parser.add_argument("--until", help="received at or before (default: now)")
    parser.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, help=f"at most this many (1-{MAX_LIMIT}, "
                        f"default {DEFAULT_LIMIT})")  # fmt: skip
    parser.add_argument("--cursor", help="continue after the previous page (its next_cursor)")
    parser.add_argument("--json", action="store_true", help="print the admin API's JSON body")


def add_events_parsers(commands: Any) -> None:
    """Add ``events`` (``list``, ``show``) and ``dead-letters`` to ``commands`` (argparse sub-parsers)."""
    events = commands.add_parser(
        "events",
        help="stored events from the shell: list them with filters, show one with its actions",
        description="Stored events, read straight from Redis with the admin API's own queries "
        "(GET /admin/events and /admin/events/{id}); no web service or admin token needed.",
        epilog=settings_epilog("events"),
    )
    actions = events.add_subparsers(dest="events_command", required=True, metavar="{list,show}")
    listing = actions.add_parser(
        "list", help="events newest first, filtered like GET /admin/events",
        description="Events newest first (receipt time), filtered like GET /admin/events; a table, or --json.",
        epilog=settings_epilog("events"),
    )  # fmt: skip
    _add_selection(listing, status=True)
    show = actions.add_parser(
        "show", help="one event: envelope, payload, actions and their attempts, replays",
        description="One event as GET /admin/events/{id} shows it: envelope, payload, each action with its "
        "attempts and outcome, replays.",
        epilog=settings_epilog("events"),
    )  # fmt: skip
    show.add_argument("event_id", metavar="EVENT_ID")
    show.add_argument("--json", action="store_true", help="print the admin API's JSON body")
    dead = commands.add_parser(
        "dead-letters",
        help="what failed for good, with the last error (as GET /admin/dead-letters)",
        description="Dead letters newest first, each with its failed actions and their last error, read straight "
        "from Redis with the admin API's own queries (GET /admin/dead-letters). Replay them with "
        "`magbridge replay --dead-letters`.",
        epilog=settings_epilog("dead-letters"),
    )
    _add_selection(dead, status=False)


def _query(args: argparse.Namespace) -> tuple[EventQuery, tuple[int, str] | None]:
    """The admin API's filters from the arguments; ``InvalidQuery`` naming a bad one."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    query = EventQuery(
        source=args.source or None,
        type=args.type or None,
        status=getattr(args, "status", None),
        since_ms=parse_instant(since, "since") if since is not None else None,
        until_ms=parse_instant(until, "until") if until is not None else None,
    )
    return query, decode_cursor(args.cursor) if args.cursor else None


def _cell(value: Any, width: int) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(rows: list[list[Any]], header: list[str], out: TextIO) -> None:
    widths = [max(len(name), *(len(_cell(row[i], 60)) for row in rows)) for i, name in enumerate(header)]
    for row in [header, *rows]:
        out.write("  ".join(_cell(value, 60).ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _more(body: dict[str, Any], what: str, out: TextIO) -> None:
    count = body["count"]
    line = f"{count} {what}{'' if count == 1 else 's'}"
    if body.get("total") is not None:
        line += f" of {body['total']}"
    if body["next_cursor"]:
        line += f"; more with --cursor {body['next_cursor']}"
    out.write(line + "\n")


def _print_events(body: dict[str, Any], out: TextIO) -> None:
    rows = [[e["received_at"], e["status"], e["source"], e["type"], e["id"], e["error"]] for e in body["events"]]
    if rows:
        _table(rows, ["RECEIVED", "STATUS", "SOURCE", "TYPE", "ID", "ERROR"], out)
    _more(body, "event", out)


def _print_dead_letters(body: dict[str, Any], out: TextIO) -> None:
    rows = []
    for letter in body["dead_letters"]:
        failed = "; ".join(f"{a['destination']}: {a['last_error']}" for a in letter["failed_actions"])
        rows.append(
            [letter["dead_letter_at"], letter["source"], letter["type"], letter["id"], failed or letter["error"]]
        )
    if rows:
        _table(rows, ["DEAD SINCE", "SOURCE", "TYPE", "ID", "LAST ERROR"], out)
    _more(body, "dead letter", out)


def _attempt_line(attempt: dict[str, Any]) -> str:
    parts = [attempt.get("at", "?"), str(attempt.get("outcome", "?"))]
    if attempt.get("status") is not None:
        parts.append(f"HTTP {attempt['status']}")
    if attempt.get("ms") is not None:
        parts.append(f"{attempt['ms']} ms")
    if attempt.get("error"):
        parts.append(str(attempt["error"]))
    return "  ".join(parts)


def _print_event(body: dict[str, Any], out: TextIO) -> None:
    job = body["job"]
    fields = [
        ("event", body["id"]),
        ("source", body["source"]),
        ("type", body["type"]),
        ("status", f"{body['status']} (generation {body['generation']}, {body['runs']} run(s))"),
        ("occurred", body["occurred_at"]),
        ("received", body["received_at"]),
        ("updated", body["updated_at"]),
        ("error", body["error"]),
        ("job", None if job is None else f"{job['id'] or '-'}, due {job['due_at']}"),
        ("dead since", body["dead_letter_at"]),
        ("expires in", None if body["expires_in_seconds"] is None else f"{body['expires_in_seconds']} s"),
    ]
    for name, value in fields:
        out.write(f"{name:<11} {'-' if value in (None, '') else value}\n")
    out.write("payload\n")
    out.writelines(f"  {line}\n" for line in json.dumps(body["payload"], indent=2, ensure_ascii=False).splitlines())
    out.write(f"actions     {'-' if not body['actions'] else ''}\n")
    for action in body["actions"]:
        current = "current" if action["current"] else "earlier generation"
        out.write(
            f"  {action['rule']} #{action['index']}  {action['kind']} -> {action['destination']}  "
            f"{action['status']}  (generation {action['generation']}, {current})\n"
        )
        out.write(f"    key {action['key']}\n")
        out.writelines(f"    {_attempt_line(attempt)}\n" for attempt in action.get("attempts") or [])
        if action.get("last_error"):
            out.write(f"    last error: {action['last_error']}\n")
        vendor = action.get("vendor_status")
        if isinstance(vendor, dict) and vendor.get("text"):
            out.write(f"    vendor: {vendor['text']}\n")
    for replay in body["replays"]:
        out.write(
            f"replayed    {replay.get('at')} by {replay.get('by')} ({replay.get('mode')}, "
            f"{'forced' if replay.get('force') else 'not forced'}), was {replay.get('previous_status')}\n"
        )


async def _read(
    redis_url: str, read: Callable[[EventReader], Awaitable[dict[str, Any] | None]]
) -> dict[str, Any] | None:
    redis = open_redis(redis_url)
    try:
        return await read(EventReader(redis))
    finally:
        await redis.aclose()


def run_events_command(args: argparse.Namespace, redis_url: str, out: TextIO, err: TextIO) -> int:
    """``events list|show`` or ``dead-letters`` (``args.command``); the exit status."""
    name = "dead-letters" if args.command == "dead-letters" else f"events {args.events_command}"
    render: _Render
    try:
        if args.command == "events" and args.events_command == "show":
            event_id: str = args.event_id

            async def read(reader: EventReader) -> dict[str, Any] | None:
                detail = await event_detail(reader, event_id)
                # No record: say whether it was never received or its record expired (views.missing_event).
                return detail if detail is not None else {"missing": await missing_event(reader, event_id)}

            render = _print_event
        else:
            query, after = _query(args)
            page = dead_letters_page if args.command == "dead-letters" else events_page

            async def read(reader: EventReader) -> dict[str, Any] | None:
                return await page(reader, query, limit=args.limit, after=after)

            render = _print_dead_letters if args.command == "dead-letters" else _print_events
        body = asyncio.run(_read(redis_url, read))
    except InvalidQuery as exc:
        err.write(f"magbridge {name}: --{exc.parameter}: {exc.message}\n")
        return 2
    except StoreUnavailable as exc:
        err.write(f"magbridge {name}: {exc}\n")
        return 1
    if body is None or "missing" in body:
        err.write(f"magbridge {name}: {body['missing'] if body else 'no answer'}\n")
        return 1
    if args.json:
        out.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    else:
        render(body, out)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging("warning", settings.log_format)  # the listing is the output; logs only for trouble
    return run_events_command(args, settings.redis_url, sys.stdout, sys.stderr)


cmd_dead_letters = cmd_events
