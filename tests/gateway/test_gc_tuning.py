"""The gateway's garbage-collector tuning is applied while serving and undone afterwards."""

from __future__ import annotations

import gc

from orchestrator.gateway.lifespan import YOUNG_GC_THRESHOLD, gc_tuned as _gc_tuned


def test_gc_tuning_applies_and_restores_and_nests() -> None:
    before = gc.get_threshold()
    assert before[0] < YOUNG_GC_THRESHOLD  # the interpreter default
    with _gc_tuned(True):
        assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD and gc.get_freeze_count() > 0
        with _gc_tuned(True):  # a second app in the same process leaves the first one's tuning alone
            assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
        assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with _gc_tuned(False):
        assert gc.get_threshold() == before
