"""Command-line entry points run in the test's process, their output captured."""

from __future__ import annotations

import argparse
import io

from bridge.cli.magnews_webhook import add_webhook_parser, run_webhook_command
from config.settings import Settings

__all__ = ["magnews_webhook", "parse_magnews_webhook"]


def parse_magnews_webhook(*argv: str) -> argparse.Namespace:
    """``magbridge magnews-webhook *argv`` parsed as the command line parses it."""
    parser = argparse.ArgumentParser()
    add_webhook_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["magnews-webhook", *argv])


async def magnews_webhook(settings: Settings, *argv: str) -> tuple[int, str, str]:
    """``magbridge magnews-webhook *argv``: exit status, standard output, standard error."""
    out, err = io.StringIO(), io.StringIO()
    status = await run_webhook_command(parse_magnews_webhook(*argv), settings, out, err)
    return status, out.getvalue(), err.getvalue()
