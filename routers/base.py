"""The router interface.

A router answers queries against an `ExpertRuntime` (`run`). Most routers make a `Plan` per
query up front (`route`): which experts answer, with what request, and how their outputs combine;
the runtime then executes the plans (one query at a time for chat, grouped by expert for batch
jobs and benchmarks). Routers that decide in rounds (Router-R1) or run in-process (MoT) override
`run` and make their calls through `runtime.generate`, so every caller (pipeline, batch jobs,
bench) calls every router the same way.

    class MyRouter(Router):
        name = "my-router"
        async def route(self, query: Query) -> Plan:
            return Plan.single(self.name, "qwen2.5-7b", query.expert_request())

Routers never call HTTP: they use the runtime (or `ctx.dispatcher`, for calls they make while
fitting or tagging) they are given.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from routers.types import ExpertRuntime, FitData, Plan, Query, QueryOutcome, RouterContext, RoutingError
from store.records import TraceStepRecord


class Router(abc.ABC):
    """Base class of every routing method.

    Class flags:
      * `name`: registry key, CLI choice and gateway model id.
      * `needs_fit`: `fit()` must run before routing (the CLI and bench do it).
      * `uses_gold`: reads the gold answer (the oracle); benchmarks only, an upper bound.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    uses_gold: ClassVar[bool] = False

    def __init__(self, ctx: RouterContext, **options: Any) -> None:
        if options:
            raise RoutingError(f"router {self.name!r} takes no option(s) {', '.join(sorted(options))}")
        if not ctx.pool:
            raise RoutingError(f"router {self.name!r} needs at least one expert in its pool")
        self.ctx = ctx

    @property
    def pool(self) -> list[str]:
        return self.ctx.pool

    async def fit(self, data: FitData) -> dict[str, Any]:
        """Fit on per-expert outcomes; returns a summary for reports. Default: nothing to fit."""
        return {}

    @abc.abstractmethod
    async def route(self, query: Query) -> Plan:
        """Decide which experts answer `query` and how their outputs are combined."""

    async def route_batch(self, queries: Sequence[Query]) -> list[Plan]:
        """Plan many queries at once (override to vectorise, e.g. one embedding batch)."""
        return [await self.route(q) for q in queries]

    async def run(self, queries: Sequence[Query], runtime: ExpertRuntime) -> list[QueryOutcome]:
        """Answer `queries`: plan them all, then let the runtime execute the plans.

        Override for methods that cannot plan up front; each outcome's `steps` then tell the
        trace what happened (the base records one `route` step per query)."""
        t0 = time.perf_counter()
        plans = await self.route_batch(list(queries))
        route_share = (time.perf_counter() - t0) / max(1, len(plans))
        outcomes = await runtime.execute(queries, plans)
        for outcome in outcomes:
            outcome.steps.insert(0, TraceStepRecord(seq=0, kind="route", detail=outcome.plan.summary(), duration_s=route_share))
        return outcomes

    @property
    def executes_plans(self) -> bool:
        """Whether answers come from plans the runtime executes (and checks); False for methods
        that override `run` to make their own calls (Router-R1, MoT)."""
        return type(self).run is Router.run

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "pool": list(self.pool)}
