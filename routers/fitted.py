"""Routers fitted on per-expert outcomes, in RouteLLM's shape: a method is one scoring function.

A fitted router implements `score_batch(queries)`: for each query a score per expert, higher is
better (Symbolic-MoE's local × global skill weight or skill accuracy, CoE's classifier
confidence or expected category accuracy, best-single's fit accuracy). The base turns scores
into plans: the k best experts (`select`), each with its request, vote weight and reason, the
router's aggregation, and the scorer's detail. It also saves the fitted state to the store
after `fit` and restores the version stored for its own pool (the pinned one, else the newest;
fits for other pools stay stored and are never loaded).

Cold start: a router whose class sets `cold_start` and that finds no fit for its pool routes on
its prior (`prior="uniform"`: k distinct experts drawn uniformly, seeded per query) instead of
refusing; `prior="none"` refuses. Every plan's detail names the fit version it routed with
(`fit_version`, None on the prior) and, on the prior, `prior`.

Exploration (`explore=0.05`): that share of queries (drawn per query, seeded) also sends one
shadow call to a pool expert the plan did not pick, concurrently with the plan. Its output never
reaches the answer; it is recorded in the trace (role `shadow`, costed like any call), so
learning from traffic keeps outcomes of unpicked experts fresh. `explore_pick="uniform"` draws that
expert uniformly from the unpicked; `"least-labelled"` (routers that count their fit's outcomes
per expert, `label_counts`) takes the unpicked expert the current fit has the fewest outcomes for
on this query (ties drawn): the one the fit knows least about. Its counts are the fit version's,
so they are as stale as the fit (refreshed at every refit).

    class FirstExpertRouter(FittedRouter[ExpertScores]):
        name = "first-expert"
        fitted = True  # nothing to learn
        async def score_batch(self, queries):
            return [ExpertScores({self.pool[0]: 1.0}, reason="first of the pool") for _ in queries]
"""

from __future__ import annotations

import abc
import asyncio
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from experts.types import GenerationRequest
from routers.base import Router
from routers.tracing import call_record
from routers.types import (
    Aggregation, Assignment, ExpertRuntime, Plan, Query, QueryOutcome, RouterContext, RoutingError, extract_answer,
)
from store.records import TraceStepRecord


PRIORS = ("uniform", "none")  # what a cold-start router routes on before its first fit
EXPLORE_PICKS = ("uniform", "least-labelled")  # which unpicked expert a shadow call goes to


def top_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The k highest-scoring experts; ties go to the expert scored first (a stable sort)."""
    return sorted(scores, key=scores.__getitem__, reverse=True)[:k]


@dataclass(frozen=True)
class ExpertScores:
    """One query's scores, and what its plan says about them.

    `weights` are the experts' vote weights (None: every vote counts 1); `reason` is shown on
    each assignment and `detail` on the plan."""

    scores: dict[str, float]
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] | None = None


ScoresT = TypeVar("ScoresT", bound=ExpertScores)


class FittedRouter(Router, Generic[ScoresT]):
    """Base of routers that score experts per query from what they learnt in `fit`.

    Subclasses set `fit_hint` (how to fit it, for the not-fitted error), `artefact_kind` to
    persist their state (with `dump_state` / `load_state`), and implement `fitted` and
    `score_batch`; `select`, `request`, `vote_weight` and `explain` can be overridden."""

    needs_fit = True
    fit_hint: ClassVar[str] = "run `orchestrator bench`"
    artefact_kind: ClassVar[str | None] = None  # None: the fitted state is not stored
    cold_start: ClassVar[bool] = False  # may route on a prior before its first fit (`prior` option)
    counts_labels: ClassVar[bool] = False  # implements `label_counts` (exploration may pick the least-labelled)

    def __init__(self, ctx: RouterContext, **options: Any) -> None:
        # `artefact` names the stored state; a router that stores nothing takes no such option.
        self.artefact = str(options.pop("artefact", "default")) if self.artefact_kind else "default"
        prior = str(options.pop("prior", "uniform" if self.cold_start else "none"))
        explore = float(options.pop("explore", 0.0))
        explore_pick = str(options.pop("explore_pick", "uniform"))
        super().__init__(ctx, **options)
        if not 0.0 <= explore <= 1.0:
            raise RoutingError(f"router {self.name!r}: explore is the share of queries that get a shadow call, within [0, 1]; got {explore}")
        picks = EXPLORE_PICKS if self.counts_labels else ("uniform",)
        if explore_pick not in picks:
            raise RoutingError(f"router {self.name!r}: explore_pick must be one of {', '.join(picks)}, got {explore_pick!r}")
        self.explore, self.explore_pick = explore, explore_pick
        if prior not in PRIORS or (prior != "none" and not self.cold_start):
            allowed = ", ".join(PRIORS) if self.cold_start else "none"
            raise RoutingError(f"router {self.name!r}: prior must be one of {allowed}, got {prior!r}")
        self.prior_kind = prior
        self.k = 1
        self.fallback: str | None = None  # answers when no expert is scored; takes over failed calls
        self.aggregation = Aggregation()
        self.fit_info: dict[str, Any] = {}
        self.fit_version: int | None = None  # the stored version routed with (None: fitted here, or the prior)
        self.on_prior = False  # no fit yet: routing on the prior
        self.save_meta: dict[str, Any] = {}  # stored beside the next fit (what it was fitted on)

    def start_cold(self) -> bool:
        """Route on the prior until a fit arrives; False when this router has none (it refuses)."""
        if self.prior_kind == "none":
            return False
        self.on_prior = True
        return True

    # ------------------------------------------------------------------ the method
    @property
    @abc.abstractmethod
    def fitted(self) -> bool:
        """Whether `fit` (or `restore`) has run."""

    @abc.abstractmethod
    async def score_batch(self, queries: Sequence[Query]) -> list[ScoresT]:
        """Each query's expert scores (vectorised: one embedding batch for all queries)."""

    async def score(self, query: Query) -> ScoresT:
        return (await self.score_batch([query]))[0]

    # ------------------------------------------------------------------ scores → plans
    def select(self, query: Query, scored: ScoresT) -> list[str]:
        """The k best experts, distinct; the fallback when no expert is scored."""
        chosen = top_k(scored.scores, self.k)
        return chosen or ([self.fallback] if self.fallback else [])

    def request(self, query: Query, index: int) -> GenerationRequest:
        """The request for the `index`-th recruit."""
        return query.expert_request()

    def vote_weight(self, query: Query, scored: ScoresT, expert: str) -> float:
        """The weight of `expert`'s vote (a weighted vote uses it; a plain vote ignores it)."""
        return 1.0 if scored.weights is None else scored.weights.get(expert, 0.0)

    def explain(self, scored: ScoresT, expert: str, weight: float) -> str:
        """Why `expert` was recruited (the assignment's reason)."""
        return scored.reason

    def plan(self, query: Query, scored: ScoresT) -> Plan:
        assignments = []
        for i, expert in enumerate(self.select(query, scored)):
            weight = self.vote_weight(query, scored, expert)
            assignments.append(Assignment(
                expert=expert, request=self.request(query, i), weight=weight, reason=self.explain(scored, expert, weight),
                fallback=self.fallback if self.fallback != expert else None,
            ))
        return Plan(router=self.name, assignments=assignments, aggregation=self.aggregation,
                    detail={**scored.detail, "fit_version": self.fit_version})

    def prior_plan(self, query: Query) -> Plan:
        """The plan before any fit: k distinct experts drawn uniformly, seeded per query (so a
        replayed question gets the same draw), combined by a vote when k > 1."""
        rng = random.Random(f"{self.ctx.seed}:{self.name}:prior:{query.question_id or query.text}")
        experts = rng.sample(self.pool, min(self.k, len(self.pool)))
        why = f"prior: uniform over the pool of {len(self.pool)} (no fit stored for this pool yet)"
        assignments = [Assignment(expert=e, request=self.request(query, i), weight=1.0, reason=why) for i, e in enumerate(experts)]
        aggregation = Aggregation(kind="vote") if len(experts) > 1 else Aggregation()
        return Plan(router=self.name, assignments=assignments, aggregation=aggregation,
                    detail={"fit_version": None, "prior": "uniform"})

    async def route(self, query: Query) -> Plan:
        return (await self.route_batch([query]))[0]

    # ------------------------------------------------------------------ exploration
    @property
    def executes_plans(self) -> bool:
        return True  # `run` adds shadow calls beside the plans; the answers still come from the plans

    def label_counts(self, query: Query, plan: Plan) -> Mapping[str, float] | None:
        """How many fit outcomes on this query's kind each expert has (None: no fit to count,
        exploration draws uniformly). Routers that set `counts_labels` implement it."""
        return None

    def shadow_expert(self, query: Query, plan: Plan) -> str | None:
        """The unpicked expert this query explores, or None (not drawn, or every expert picked)."""
        if self.explore <= 0:
            return None
        rng = random.Random(f"{self.ctx.seed}:{self.name}:explore:{query.question_id or query.text}")
        if rng.random() >= self.explore:
            return None
        picked = {a.expert for a in plan.assignments}
        unpicked = [e for e in dict.fromkeys(self.pool) if e not in picked]
        if not unpicked:
            return None
        counts = self.label_counts(query, plan) if self.explore_pick == "least-labelled" else None
        if counts is not None:
            fewest = min(counts.get(e, 0.0) for e in unpicked)
            unpicked = [e for e in unpicked if counts.get(e, 0.0) == fewest]
        return rng.choice(unpicked)

    async def run(self, queries: Sequence[Query], runtime: ExpertRuntime) -> list[QueryOutcome]:
        if self.explore <= 0:
            return await super().run(queries, runtime)
        queries = list(queries)
        t0 = time.perf_counter()
        plans = await self.route_batch(queries)
        route_share = (time.perf_counter() - t0) / max(1, len(plans))
        shadows = [(i, e) for i, (q, p) in enumerate(zip(queries, plans, strict=True)) if (e := self.shadow_expert(q, p))]
        for i, _ in shadows:
            plans[i] = plans[i].model_copy(update={"detail": {**plans[i].detail, "explore": self.explore}})
        outcomes, results = await asyncio.gather(
            runtime.execute(queries, plans),
            asyncio.gather(*(runtime.generate(e, queries[i].expert_request()) for i, e in shadows)))
        for outcome, plan in zip(outcomes, plans, strict=True):
            outcome.steps.insert(0, TraceStepRecord(seq=0, kind="route", detail=plan.summary(), duration_s=route_share))
        for (i, expert), result in zip(shadows, results, strict=True):
            rec = call_record(self.ctx.registry, expert, result, role="shadow", answer=extract_answer(queries[i], result))
            rec.seq = max((c.seq for c in outcomes[i].calls), default=-1) + 1
            outcomes[i].calls.append(rec)
        return outcomes

    async def route_batch(self, queries: Sequence[Query]) -> list[Plan]:
        if not self.fitted:
            if self.on_prior:
                return [self.prior_plan(q) for q in queries]
            raise RoutingError(f"router {self.name!r} is not fitted: {self.fit_hint}")
        queries = list(queries)
        return [self.plan(q, s) for q, s in zip(queries, await self.score_batch(queries), strict=True)]

    # ------------------------------------------------------------------ persistence
    def dump_state(self) -> bytes:
        """The fitted state as stored (needed when `artefact_kind` is set)."""
        raise NotImplementedError

    def load_state(self, payload: bytes) -> None:
        """Set the fitted state (and `fit_info`) from a stored payload."""
        raise NotImplementedError

    async def save(self, meta: dict[str, Any] | None = None) -> int | None:
        """Store the fitted state as a new version of artefact `artefact_kind`/`artefact` for
        this pool; returns its version (None: nothing stored)."""
        if self.ctx.store is None or self.artefact_kind is None:
            return None
        self.fit_version = await self.ctx.store.save_artefact(self.artefact_kind, self.artefact, self.dump_state(),
                                                              {**self.save_meta, **(meta or {}), "pool": self.pool})
        self.on_prior = False
        return self.fit_version

    async def restore(self, version: int | None = None) -> bool:
        """Load the stored state for this pool: `version`, else the pinned one, else the newest
        (used by `ask` and the gateway). False when this pool has no such fit."""
        if self.ctx.store is None or self.artefact_kind is None:
            return False
        rec = await self.ctx.store.load_artefact(self.artefact_kind, self.artefact, version, pool=self.pool)
        if rec is None:
            return False
        stored_pool = rec.meta.get("pool")
        if stored_pool is not None and sorted(set(stored_pool)) != sorted(set(self.pool)):  # a pool-key collision
            raise RoutingError(f"router {self.name!r}: the stored artefact {self.artefact_kind}/{self.artefact} (v{rec.version}) "
                               f"was fitted for pool {stored_pool}, not {self.pool}")
        self.load_state(rec.payload)
        self.fit_info = {**self.fit_info, "version": rec.version}
        self.fit_version = rec.version
        self.on_prior = False
        return True
