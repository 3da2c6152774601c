"""The replay harness of benchmarks/replay_feedback.py at small scale: real gateway app, routers
starting cold, feedback after each answer, refits by the job. Versions advance, no request fails
or is stored twice, and every trace names its fit version."""

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("replay_feedback", REPO / "benchmarks" / "replay_feedback.py")
replay_feedback = importlib.util.module_from_spec(spec)
sys.modules["replay_feedback"] = replay_feedback  # its dataclasses look their module up
spec.loader.exec_module(replay_feedback)  # type: ignore[union-attr]


@pytest.mark.parametrize("router", ["symbolic-moe", "coe"])
async def test_a_small_replay_refits_and_swaps_versions_without_failing_a_request(router: str, tmp_path: Path) -> None:
    pool = replay_feedback.NAMED_POOLS["small16"]
    stream = replay_feedback.load_stream(pool, 120, seed=1)
    res = await replay_feedback.replay(router, stream, pool, tmp_path, window=40, threshold=30, log=lambda *_: None,
                                        pace_refits=True)
    assert res["failed_requests"] == 0, res["failures"]
    assert res["distinct_traces"] == res["stored_traces"] == res["requests"] == 120
    assert res["traces_without_fit_version"] == 0
    assert res["refit_job_error"] is None, res["refit_job_error"]
    assert res["refits_by_job"] >= 2 and res["fit_versions_stored"] == list(range(1, res["refits_by_job"] + 1))
    first, *_, last = res["windows"]
    assert first["fit_versions"].get("prior", 0) >= 30  # cold: the first 30 outcomes arrive before any refit
    newest_used = max(int(v[1:]) for v in last["fit_versions"] if v != "prior")
    assert newest_used >= 2 and "prior" not in last["fit_versions"]  # the gateway swapped refits in as they came
    assert sum(sum(w["fit_versions"].values()) for w in res["windows"]) == 120


def test_router_options_reach_the_online_and_offline_router_alike() -> None:
    opts = replay_feedback.router_options(0.05, ["explore_pick=least-labelled", "impute_strength=5", "unanswered=zero"])
    assert opts == {"explore": 0.05, "explore_pick": "least-labelled", "impute_strength": 5, "unanswered": "zero"}
    assert replay_feedback.router_options(0.0, []) == {}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        replay_feedback.router_options(0.0, ["explore_pick"])
