"""Plain baselines: single expert, random k, all-experts vote, best single, oracle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from routers.base import Router
from routers.fitted import ExpertScores, FittedRouter, top_k
from routers.types import Aggregation, Assignment, FitData, Plan, Query, RouterContext, RoutingError


class SingleRouter(Router):
    """Every query to one named expert (default: the first of the pool)."""

    name = "single"
    description = "one named expert answers every query"

    def __init__(self, ctx: RouterContext, expert: str | None = None, **options: Any) -> None:
        super().__init__(ctx, **options)
        chosen = expert or ctx.pool[0]
        canonical = ctx.registry.find(chosen)
        if canonical is None:
            raise RoutingError(f"router 'single': unknown expert {chosen!r}; choose one of: {', '.join(ctx.pool)}")
        self.expert = canonical

    async def route(self, query: Query) -> Plan:
        return Plan.single(self.name, self.expert, query.expert_request(), reason="fixed expert")


class RandomRouter(Router):
    """k experts drawn uniformly without replacement, majority vote (k=1: one random expert)."""

    name = "random"
    description = "k experts drawn at random, majority vote"

    def __init__(self, ctx: RouterContext, k: int = 1, **options: Any) -> None:
        super().__init__(ctx, **options)
        if not 1 <= k <= len(ctx.pool):
            raise RoutingError(f"router 'random': k must be between 1 and the pool size {len(ctx.pool)}, got {k}")
        self.k = k

    async def route(self, query: Query) -> Plan:
        rng = self.ctx.rng(f"random:{query.question_id or query.text}")
        chosen = rng.sample(self.pool, self.k)
        req = query.expert_request()
        return Plan(
            router=self.name,
            assignments=[Assignment(expert=e, request=req, reason="random draw") for e in chosen],
            aggregation=Aggregation(kind="single" if self.k == 1 else "vote"),
        )


class AllVoteRouter(Router):
    """Every pool expert answers; majority vote over their extracted answers."""

    name = "all-vote"
    description = "every expert answers, majority vote"

    async def route(self, query: Query) -> Plan:
        req = query.expert_request()
        return Plan(
            router=self.name,
            assignments=[Assignment(expert=e, request=req, reason="all experts") for e in self.pool],
            aggregation=Aggregation(kind="vote"),
        )


class BestSingleRouter(FittedRouter[ExpertScores]):
    """The expert with the highest accuracy on the fit data answers everything."""

    name = "best-single"
    description = "the expert with the best fit-data accuracy"
    fit_hint = "run it through `orchestrator bench` or fit it first"

    def __init__(self, ctx: RouterContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        self.accuracies: dict[str, float] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.accuracies)

    async def fit(self, data: FitData) -> dict[str, Any]:
        self.accuracies = {e: data.accuracy(e) for e in self.pool}
        expert = top_k(self.accuracies, 1)[0]  # ties go to the earlier pool entry: deterministic
        return {"expert": expert, "fit_accuracy": self.accuracies[expert]}

    async def score_batch(self, queries: Sequence[Query]) -> list[ExpertScores]:
        return [ExpertScores(self.accuracies, reason="best fit-data accuracy") for _ in queries]


class OracleRouter(Router):
    """Upper bound: asks every expert and keeps a correct answer if any expert gave one.

    Reads the gold answer, so it exists for benchmarks only."""

    name = "oracle"
    description = "upper bound: correct if any expert is correct (benchmarks only)"
    uses_gold = True

    async def route(self, query: Query) -> Plan:
        # The generic outcomes format has no key: the benchmark scores the best recorded output.
        if query.gold is None and query.metadata.get("scoring") != "outcomes":
            raise RoutingError("router 'oracle' needs the gold answer: it is a benchmark-only upper bound")
        req = query.expert_request()
        return Plan(
            router=self.name,
            assignments=[Assignment(expert=e, request=req, reason="oracle") for e in self.pool],
            aggregation=Aggregation(kind="oracle"),
            detail={"upper_bound": True},
        )
