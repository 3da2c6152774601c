"""A benchmark run and a router fit from a config: open the store and (live) the expert
registry, do the work while a progress display runs, close.

    report = await benchmark(config, BenchOptions(dataset="mmlu-pro", recorded=DIR), progress=PhaseProgress())
    summary = await fit_profile(config, BenchOptions(recorded=DIR), "symbolic-moe", {"tagger": "llm"})

The display is entered only once the store is open, so a store that is down fails before any
bar is drawn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any

from experts.registry import ExpertRegistry
from experts.spec import OrchestratorConfig
from orchestrator.bench.runner import BenchmarkRunner, BenchOptions, ProgressHook, run_benchmark
from store.repository import Store

ProgressDisplay = AbstractContextManager[ProgressHook | None]


async def benchmark(config: OrchestratorConfig, opts: BenchOptions, *, progress: ProgressDisplay | None = None) -> dict[str, Any]:
    """`orchestrator bench`: the report (also written to `opts.out` when set)."""
    async with _store_and_registry(config, opts) as (store, registry):
        with progress or nullcontext() as hook:
            return await run_benchmark(opts, store, registry=registry, progress=hook)


async def fit_profile(config: OrchestratorConfig, opts: BenchOptions, router: str, options: dict[str, Any] | None = None, *,
                      progress: ProgressDisplay | None = None) -> dict[str, Any]:
    """`orchestrator profile build`: fit one router on the fit questions; its artefact goes to the store."""
    async with _store_and_registry(config, opts) as (store, registry):
        # The store lists the configured experts, as `Runtime.create` does for `ask` and the gateway.
        await store.upsert_experts([s.model_dump(mode="json") for s in config.experts])
        with progress or nullcontext() as hook:
            return await BenchmarkRunner(opts, store, registry=registry, progress=hook).fit_router(router, options)


@asynccontextmanager
async def _store_and_registry(config: OrchestratorConfig, opts: BenchOptions) -> AsyncIterator[tuple[Store, ExpertRegistry | None]]:
    """The store, and the config's experts unless the run replays recorded outputs."""
    registry = None if opts.recorded else ExpertRegistry.from_specs(config.experts)
    async with await Store.open(config.store) as store:
        try:
            yield store, registry
        finally:
            if registry is not None:
                await registry.aclose()
