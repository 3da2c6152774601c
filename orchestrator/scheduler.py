"""Grouped batch scheduling (Symbolic-MoE's batch inference) and its naive per-query baseline:
scheduling policies of the one execution path (`orchestrator.execution`), not a second path.

    scheduler = GroupedScheduler(registry, ResidencyManager(registry, capacity=1), dispatcher=dispatcher)
    run = await scheduler.run(router, queries)
    run.outcomes[i].final.answer, run.stats.model_loads, run.stats.wall_s

Grouped: the router plans ALL queries first, the (query, expert) pairs are grouped by expert,
each expert runs once over all of its pairs (loaded once), fallbacks are grouped by fallback
expert, aggregations by aggregator model. Routers that decide in rounds (Router-R1) or run
in-process (MoT) answer the whole set through their own `run`, with every call going through
the same dispatcher. Without a `dispatcher`, the run makes its own for its registry. With an
`engine` (orchestrator/ray_engine.py: `RayEngine`), the expert groups run there instead, one
Ray actor per expert; routing and aggregation stay here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from experts.registry import ExpertRegistry
from orchestrator.dispatcher import Dispatcher
from orchestrator.execution import Executor, GroupEngine, ProgressHook, SchedulerStats
from orchestrator.residency import ResidencyManager
from routers.base import Router
from routers.types import Plan, Query, QueryOutcome


@dataclass
class ScheduledRun:
    outcomes: list[QueryOutcome]
    stats: SchedulerStats


class GroupedScheduler:
    def __init__(
        self,
        registry: ExpertRegistry,
        residency: ResidencyManager | None = None,
        *,
        dispatcher: Dispatcher | None = None,
        progress: ProgressHook | None = None,
        keep_outputs: bool = True,
        engine: GroupEngine | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine  # None: expert groups run in this process (the default); else e.g. RayEngine
        self.residency = residency or ResidencyManager(registry, capacity=len(registry) or 1)
        self.dispatcher = dispatcher
        self.progress = progress
        self.keep_outputs = keep_outputs

    async def run(self, router: Router | None, queries: Sequence[Query], plans: Sequence[Plan] | None = None) -> ScheduledRun:
        """Answer `queries` with `router` (or execute the given `plans`) in grouped mode."""
        stats = SchedulerStats()
        t_start = time.perf_counter()
        loads_before = dict(self.residency.loads)
        async with AsyncExitStack() as stack:
            dispatcher = self.dispatcher
            if dispatcher is None:
                dispatcher = await stack.enter_async_context(Dispatcher(self.registry))
            executor = Executor(self.registry, dispatcher, grouped=True, residency=self.residency, progress=self.progress,
                                keep_outputs=self.keep_outputs, stats=stats, engine=self.engine)
            if plans is not None:
                outcomes = await executor.execute(list(queries), list(plans))
            else:
                assert router is not None
                outcomes = await router.run(list(queries), executor)
                stats.route_s = sum(s.duration_s for o in outcomes for s in o.steps if s.kind == "route")
        _finish(stats, self.residency, loads_before, t_start)
        return ScheduledRun(outcomes, stats)


async def run_naive(
    registry: ExpertRegistry, residency: ResidencyManager, router: Router, queries: Sequence[Query],
    *, dispatcher: Dispatcher | None = None,
) -> ScheduledRun:
    """Per-query scheduling for comparison: each query's experts run in turn, loaded on demand."""
    stats = SchedulerStats()
    t_start = time.perf_counter()
    loads_before = dict(residency.loads)
    async with AsyncExitStack() as stack:
        if dispatcher is None:
            dispatcher = await stack.enter_async_context(Dispatcher(registry))
        # plain per-query order, no resident-first reordering: the baseline a grouped run is measured against
        executor = Executor(registry, dispatcher, grouped=True, residency=residency, stats=stats, resident_first=False)
        outcomes = []
        for q in queries:
            outcomes += await router.run([q], executor)
    _finish(stats, residency, loads_before, t_start)
    return ScheduledRun(outcomes, stats)


def _finish(stats: SchedulerStats, residency: ResidencyManager, loads_before: dict[str, int], t_start: float) -> None:
    stats.wall_s = time.perf_counter() - t_start
    stats.loads_per_expert = {k: v - loads_before.get(k, 0) for k, v in residency.loads.items() if v - loads_before.get(k, 0)}
    stats.model_loads = sum(stats.loads_per_expert.values())
