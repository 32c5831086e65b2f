"""The ``magbridge`` command line: one module per command group (``main`` parses and dispatches)."""

from bridge.cli.main import main

__all__ = ["main"]
