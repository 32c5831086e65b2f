"""The long-running commands set the collector aside from what they keep for life (see bridge/cli/gc_tuning.py)."""

from __future__ import annotations

import gc

from bridge.cli.gc_tuning import YOUNG_THRESHOLD, tune_gc


def test_tune_gc_freezes_what_is_loaded_and_collects_the_young_less_often() -> None:
    before = gc.get_threshold()
    kept_for_life = {"rules": ["loaded at startup"]}
    try:
        tune_gc()
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert all(obj is not kept_for_life for obj in gc.get_objects())  # set aside: collections skip it
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
