"""Grouped batch scheduling (Symbolic-MoE's batch inference) and its naive per-query baseline.

    scheduler = GroupedScheduler(registry, ResidencyManager(registry, capacity=1))
    run = await scheduler.run(router, queries)
    run.outcomes[i].final.answer, run.stats.model_loads, run.stats.wall_s

Grouped: route ALL queries first, group the (query, expert) pairs by expert, run each expert
once over all of its pairs (loaded once), then aggregate grouped by aggregator model. Failed
calls whose plan names a fallback expert are re-run, grouped by that fallback, afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from experts.registry import ExpertRegistry
from experts.types import GenerationRequest, GenerationResult
from orchestrator import aggregators
from orchestrator.aggregators import ExpertOutput, FinalAnswer
from orchestrator.residency import ResidencyManager
from orchestrator.trace import call_record
from routers.base import Plan, Query, Router
from store.records import ExpertCallRecord

ProgressHook = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class QueryOutcome:
    query: Query
    plan: Plan
    final: FinalAnswer
    outputs: list[ExpertOutput]
    calls: list[ExpertCallRecord]


@dataclass
class SchedulerStats:
    model_loads: int = 0
    loads_per_expert: dict[str, int] = field(default_factory=dict)
    busy_s_per_expert: dict[str, float] = field(default_factory=dict)
    backend_calls: int = 0
    expert_calls: int = 0
    aggregator_calls: int = 0
    route_s: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_loads": self.model_loads,
            "loads_per_expert": self.loads_per_expert,
            "busy_s_per_expert": {k: round(v, 3) for k, v in self.busy_s_per_expert.items()},
            "backend_calls": self.backend_calls,
            "expert_calls": self.expert_calls,
            "aggregator_calls": self.aggregator_calls,
            "route_s": round(self.route_s, 3),
            "wall_s": round(self.wall_s, 3),
        }


@dataclass
class ScheduledRun:
    outcomes: list[QueryOutcome]
    stats: SchedulerStats


class _Runner:
    """Runs all the requests of one expert in backend batches, the expert loaded once."""

    def __init__(self, registry: ExpertRegistry, residency: ResidencyManager, stats: SchedulerStats, progress: ProgressHook | None):
        self.registry, self.residency, self.stats, self.progress = registry, residency, stats, progress

    async def run_expert(self, expert: str, requests: list[GenerationRequest], phase: str) -> list[GenerationResult]:
        spec = self.registry.spec(expert)
        backend = self.registry.backend(expert)
        await self.residency.acquire(expert)
        t0 = time.perf_counter()
        chunks = [requests[i : i + spec.max_batch_size] for i in range(0, len(requests), spec.max_batch_size)]
        slots = asyncio.Semaphore(spec.max_concurrency)
        done = 0
        results: list[list[GenerationResult]] = [[] for _ in chunks]

        async def one(i: int, chunk: list[GenerationRequest]) -> None:
            nonlocal done
            async with slots:
                results[i] = await backend.generate(chunk)
                self.stats.backend_calls += 1
                done += len(chunk)
                if self.progress:
                    self.progress(f"{phase}:{expert}", done, len(requests))

        await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
        self.stats.busy_s_per_expert[expert] = self.stats.busy_s_per_expert.get(expert, 0.0) + time.perf_counter() - t0
        return [r for chunk in results for r in chunk]


class GroupedScheduler:
    def __init__(
        self,
        registry: ExpertRegistry,
        residency: ResidencyManager | None = None,
        *,
        progress: ProgressHook | None = None,
        keep_outputs: bool = True,
    ) -> None:
        self.registry = registry
        self.residency = residency or ResidencyManager(registry, capacity=len(registry) or 1)
        self.progress = progress
        self.keep_outputs = keep_outputs

    async def run(self, router: Router, queries: Sequence[Query], plans: Sequence[Plan] | None = None) -> ScheduledRun:
        stats = SchedulerStats()
        t_start = time.perf_counter()
        loads_before = dict(self.residency.loads)
        runner = _Runner(self.registry, self.residency, stats, self.progress)

        # 1. route everything first
        if plans is None:
            t0 = time.perf_counter()
            plans = await router.route_batch(list(queries))
            stats.route_s = time.perf_counter() - t0
        if self.progress:
            self.progress("route", len(plans), len(queries))

        # 2. group (query, assignment) pairs by expert; run expert by expert
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for qi, plan in enumerate(plans):
            for ai, a in enumerate(plan.assignments):
                groups[self.registry.resolve(a.expert)].append((qi, ai))
        results: dict[tuple[int, int], list[tuple[str, GenerationResult, str | None]]] = defaultdict(list)
        for expert, pairs in self._ordered(groups):
            res = await runner.run_expert(expert, [plans[qi].assignments[ai].request for qi, ai in pairs], "generate")
            for pair, r in zip(pairs, res, strict=True):
                results[pair].append((expert, r, None))

        # 3. fallbacks for failed calls, grouped by fallback expert
        retry: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (qi, ai), attempts in results.items():
            a = plans[qi].assignments[ai]
            if not attempts[-1][1].ok and a.fallback and a.fallback in self.registry:
                retry[self.registry.resolve(a.fallback)].append((qi, ai))
        for expert, pairs in self._ordered(retry):
            res = await runner.run_expert(expert, [plans[qi].assignments[ai].request for qi, ai in pairs], "fallback")
            for (qi, ai), r in zip(pairs, res, strict=True):
                results[(qi, ai)].append((expert, r, plans[qi].assignments[ai].expert))

        # 4. per-query outputs and call records
        outputs: list[list[ExpertOutput]] = []
        calls: list[list[ExpertCallRecord]] = []
        for qi, plan in enumerate(plans):
            q_out, q_calls = [], []
            for ai, a in enumerate(plan.assignments):
                attempts = results[(qi, ai)]
                for expert, r, fb in attempts:
                    ans = aggregators.extract_answer(queries[qi], r)
                    q_calls.append(call_record(self.registry, expert, r, answer=ans, fallback_for=fb, keep_output=self.keep_outputs))
                    stats.expert_calls += 1
                expert, r, _ = attempts[-1]
                q_out.append(ExpertOutput(index=ai, expert=expert, text=r.text, answer=q_calls[-1].answer, weight=a.weight, ok=r.ok))
            outputs.append(q_out)
            calls.append(q_calls)

        # 5. aggregation, grouped by aggregator model
        finals: list[FinalAnswer | None] = [None] * len(plans)
        by_aggregator: dict[str, list[int]] = defaultdict(list)
        for qi, plan in enumerate(plans):
            agg = plan.aggregation
            if agg.kind == "llm" and agg.expert and any(o.ok for o in outputs[qi]):
                by_aggregator[self.registry.resolve(agg.expert)].append(qi)
            else:
                finals[qi] = self._combine(queries[qi], plan, outputs[qi])
        for expert, qis in self._ordered(by_aggregator):
            reqs = [aggregators.synthesis_request(queries[qi], outputs[qi]) for qi in qis]
            res = await runner.run_expert(expert, reqs, "aggregate")
            for qi, r in zip(qis, res, strict=True):
                ans = aggregators.extract_answer(queries[qi], r)
                calls[qi].append(call_record(self.registry, expert, r, role="aggregator", answer=ans, keep_output=self.keep_outputs))
                stats.aggregator_calls += 1
                if r.ok:
                    finals[qi] = aggregators.from_synthesis(queries[qi], r, expert)
                else:
                    fin = aggregators.vote(outputs[qi])
                    fin.detail["aggregator_failed"] = r.error.message if r.error else ""
                    finals[qi] = fin

        stats.wall_s = time.perf_counter() - t_start
        stats.loads_per_expert = {k: v - loads_before.get(k, 0) for k, v in self.residency.loads.items() if v - loads_before.get(k, 0)}
        stats.model_loads = sum(stats.loads_per_expert.values())
        outcomes = [
            QueryOutcome(query=queries[i], plan=plans[i], final=finals[i] or FinalAnswer("", None, "none"), outputs=outputs[i], calls=calls[i])
            for i in range(len(plans))
        ]
        return ScheduledRun(outcomes, stats)

    def _ordered(self, groups: dict[str, list[Any]]) -> list[tuple[str, list[Any]]]:
        """Experts already resident first (no load), then the rest in first-use order."""
        resident = set(self.residency.resident)
        return sorted(groups.items(), key=lambda kv: kv[0] not in resident)

    @staticmethod
    def _combine(query: Query, plan: Plan, outputs: list[ExpertOutput]) -> FinalAnswer:
        kind = plan.aggregation.kind
        if kind == "oracle":
            return aggregators.oracle(outputs, query.gold)
        if kind == "weighted-vote":
            return aggregators.vote(outputs, weighted=True)
        if kind == "single":
            ok = [o for o in outputs if o.ok] or outputs
            if not ok:
                return FinalAnswer("", None, "single")
            return FinalAnswer(ok[0].text, ok[0].answer, "single", detail={"expert": ok[0].expert})
        return aggregators.vote(outputs)


async def run_naive(
    registry: ExpertRegistry, residency: ResidencyManager, router: Router, queries: Sequence[Query]
) -> ScheduledRun:
    """Per-query scheduling for comparison: each query's experts run in turn, loaded on demand."""
    stats = SchedulerStats()
    t_start = time.perf_counter()
    loads_before = dict(residency.loads)
    runner = _Runner(registry, residency, stats, None)
    outcomes = []
    for q in queries:
        plan = await router.route(q)
        outs, calls = [], []
        for ai, a in enumerate(plan.assignments):
            expert = registry.resolve(a.expert)
            (r,) = await runner.run_expert(expert, [a.request], "generate")
            ans = aggregators.extract_answer(q, r)
            calls.append(call_record(registry, expert, r, answer=ans))
            outs.append(ExpertOutput(index=ai, expert=expert, text=r.text, answer=ans, weight=a.weight, ok=r.ok))
            stats.expert_calls += 1
        outcomes.append(QueryOutcome(q, plan, GroupedScheduler._combine(q, plan, outs), outs, calls))
    stats.wall_s = time.perf_counter() - t_start
    stats.loads_per_expert = {k: v - loads_before.get(k, 0) for k, v in residency.loads.items() if v - loads_before.get(k, 0)}
    stats.model_loads = sum(stats.loads_per_expert.values())
    return ScheduledRun(outcomes, stats)
