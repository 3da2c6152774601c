"""A live benchmark run on the embedded default's real tiny models (grouped mode)."""

from pathlib import Path

import pytest

from experts import ExpertRegistry
from orchestrator.bench.runner import BenchOptions, run_benchmark
from orchestrator.settings import resolve_config
from store import Store

pytestmark = pytest.mark.slow


async def test_live_run_with_tiny_local_experts(tmp_path: Path) -> None:
    cfg = resolve_config(None)
    registry = ExpertRegistry.from_specs(cfg.experts)
    phases: list[str] = []
    opts = BenchOptions(dataset="mmlu-pro", routers=["single", "all-vote", "best-single"], limit=6, fit_limit=4,
                        prompt="zero-shot", max_tokens=12, seed=0, out=tmp_path / "out")
    try:
        async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'live.db'}") as store:
            report = await run_benchmark(opts, store, registry=registry, progress=lambda p, d, t: phases.append(p))
    finally:
        await registry.aclose()
    r = report["routers"]
    assert report["n_questions"] == 6
    assert r["single"]["expert_calls_per_question"] == 1 and r["all-vote"]["expert_calls_per_question"] == 2
    assert r["all-vote"]["tokens"] > 0 and not r["all-vote"]["tokens_estimated"]
    assert r["best-single"]["fit"]["expert"] in ("smollm2-135m", "gemma-3-270m")
    for m in r.values():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] == 6
    assert any(p.startswith("fit:") for p in phases) and any(":generate:" in p for p in phases)
    assert (tmp_path / "out" / "plot.png").exists()
