"""Garbage-collector settings for the long-running processes (web, worker, run, simulate).

CPython collects its youngest generation every 700 new container objects and, every hundred of
those, walks every object the process holds. In the worker at 1,000 events/s that came to about 780
collections and 0.8 s of pauses per 10 s, single pauses up to 130 ms, and an end-to-end p99 of
245-295 ms (docs/performance.md). Objects that live as long as the process (modules, settings,
rules) are set aside once loaded, so full collections no longer walk them, and the youngest
generation is collected every 10,000 allocations: about 170 collections and 0.1 s of pauses per
10 s, and a p99 of 60-160 ms.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "tune_gc"]

YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Call once everything the process keeps for its lifetime is loaded, before serving."""
    gc.collect()  # startup's own garbage first: a frozen cycle would never be freed
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
