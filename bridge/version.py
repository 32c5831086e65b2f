"""The running magbridge's version: the installed distribution's metadata, read once, in one place.

``magbridge --version``, the start line of every long-running command, ``magbridge_build_info`` and
the OpenAPI document all show ``version()``.
"""

from __future__ import annotations

import functools
from importlib import metadata

__all__ = ["version"]


@functools.cache
def version() -> str:
    """The version of the installed ``magbridge`` distribution (``0+unknown`` in a tree never installed)."""
    try:
        return metadata.version("magbridge")
    except metadata.PackageNotFoundError:  # say so rather than guess
        return "0+unknown"
