"""The one execution path: chat requests, batch jobs and benchmarks all run here.

    executor = Executor(registry, dispatcher)                                   # interactive
    executor = Executor(registry, dispatcher, grouped=True, residency=residency)  # grouped
    outcomes = await router.run(queries, executor)          # the Router calls back into us

`Executor` implements `routers.types.ExpertRuntime`. Every expert call goes through the
`Dispatcher` (circuit breaker, concurrency bound and coalescing shared with all other traffic),
and every plan is aggregated by `aggregate`, whatever the scheduling policy:

* interactive: each query on its own, its assignments concurrently, then its aggregation;
* grouped (Symbolic-MoE's batch inference): every (query, assignment) pair grouped by expert,
  each expert run once over its whole group (made resident once), then the fallbacks grouped by
  fallback expert, then the aggregations grouped by aggregator model.

The two give the same outcome for the same plans; only the order of calls differs.

A streaming chat request runs on `executor.streaming(sink)`, a view of the same executor for ONE
query: routing and the other experts' calls happen first, then the answering call (one expert's
output, or an LLM aggregator's) is made with `Dispatcher.stream`, its tokens going to `sink` as
the expert produces them. A vote over complete outputs is sent the moment it is decided. A
fallback replaces a failed answering call only while nothing has been sent.

Every plan is checked first: OpenAI fields that only one tool-capable expert can honour (tools,
response_format) on a plan that combines several outputs raise `UnsupportedRequest`.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from experts.backends.streaming import tool_call_deltas
from experts.registry import ExpertRegistry
from experts.types import ErrorInfo, GenerationDelta, GenerationRequest, GenerationResult
from orchestrator.dispatcher import CallAttempt, Dispatcher
from orchestrator.memo import GenerationMemo, memo_key
from orchestrator.residency import ResidencyManager
from routers import aggregation
from routers.tracing import call_record
from routers.types import (
    AnswerSelector,
    AnswerSink,
    Assignment,
    ExpertOutput,
    FinalAnswer,
    Plan,
    Query,
    QueryOutcome,
    UnsupportedRequest,
    extract_answer,
)
from store.records import ExpertCallRecord, TraceStepRecord

ProgressHook = Callable[[str, int, int], None]  # (phase, done, total)


class GroupEngine(Protocol):
    """Runs the expert groups of one grouped phase ("generate", "fallback"): each group is all of
    one expert's requests; the answer is one result list per group, in order. The default (no
    engine) runs them here, one after another, through the executor's dispatcher; the Ray engine
    (orchestrator/ray_engine.py) runs each group on its expert's Ray actor on a cluster. Routing
    before and aggregation after stay with the executor either way. `job()` scopes what the
    engine keeps resident (loaded models) to one job."""

    async def run_groups(self, executor: "Executor", groups: list[tuple[str, list[GenerationRequest]]],
                         phase: str) -> list[list[GenerationResult]]: ...

    def job(self) -> AbstractContextManager["GroupEngine"]: ...

AGGREGATE_SEQ = 10_000  # call and step order: assignments by index, then attempts, aggregation last


@dataclass
class SchedulerStats:
    """What one grouped run did: model loads, backend batches, calls, time per expert."""

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
class AssignmentResult:
    """One assignment's final output, the call records of every attempt, and its trace step."""

    output: ExpertOutput
    calls: list[ExpertCallRecord]
    step: TraceStepRecord


class Executor:
    """Runs plans and single expert calls for routers; see the module docstring."""

    def __init__(
        self,
        registry: ExpertRegistry,
        dispatcher: Dispatcher,
        *,
        grouped: bool = False,
        residency: ResidencyManager | None = None,
        progress: ProgressHook | None = None,
        keep_outputs: bool = True,
        stats: SchedulerStats | None = None,
        resident_first: bool = True,
        engine: GroupEngine | None = None,
    ) -> None:
        self.registry = registry
        self.engine = engine  # grouped: where expert groups run (None: here, through the dispatcher)
        self.dispatcher = dispatcher
        self.grouped = grouped
        self.residency = residency
        self.progress = progress
        self.keep_outputs = keep_outputs
        self.stats = stats or SchedulerStats()
        self.resident_first = resident_first  # grouped: run already-resident experts first (no load)
        # Set only on a streaming view (`streaming`): the sink, the calls made so far (what the
        # trace of a cancelled stream shows), the plan, and why a started answer broke off.
        self.answer_sink: AnswerSink | None = None
        self.attempts: list[tuple[str, CallAttempt]] | None = None
        self.plan: Plan | None = None
        self.interrupted: str | None = None

    def streaming(self, sink: AnswerSink) -> "Executor":
        """A view of this executor for ONE streaming query: the same registry, dispatcher and
        stats; the answer goes to `sink` as it is generated."""
        view = copy.copy(self)
        view.answer_sink, view.attempts, view.plan, view.interrupted = sink, [], None, None
        return view

    def _log(self, role: str, attempt: CallAttempt) -> None:
        if self.attempts is not None:
            self.attempts.append((role, attempt))

    # ------------------------------------------------------------------ ExpertRuntime
    async def generate(self, expert: str, request: GenerationRequest) -> GenerationResult:
        """One call through the dispatcher; failures come back in the result."""
        self.stats.expert_calls += 1
        result = await self.dispatcher.submit_or_error(expert, request)
        self._log("expert", CallAttempt(expert, result))
        return result

    async def generate_answer(self, expert: str, request: GenerationRequest, *, select: AnswerSelector | None = None) -> GenerationResult:
        """A call whose output is (or holds) the answer: streamed when this is a streaming view."""
        if self.answer_sink is None:
            return await self.generate(expert, request)
        self.stats.expert_calls += 1
        return await self._stream_call(expert, request, select=select)

    async def execute(self, queries: Sequence[Query], plans: Sequence[Plan]) -> list[QueryOutcome]:
        if len(queries) != len(plans):
            raise ValueError(f"{len(queries)} queries but {len(plans)} plans")
        for plan in plans:
            problem = plan.passthrough_problem(self.registry)
            if problem is not None:
                raise UnsupportedRequest(problem)
        if self.grouped:
            return await self._execute_grouped(queries, plans)
        if len(plans) == 1:
            if self.answer_sink is not None:
                return [await self._execute_streamed(queries[0], plans[0])]
            return [await self._execute_one(queries[0], plans[0])]
        return list(await asyncio.gather(*(self._execute_one(q, p) for q, p in zip(queries, plans, strict=True))))

    # ------------------------------------------------------------------ shared pieces
    def record(self, expert: str, result: GenerationResult, *, role: str = "expert", answer: str | None = None,
               fallback_for: str | None = None) -> ExpertCallRecord:
        return call_record(self.registry, expert, result, role=role, answer=answer, fallback_for=fallback_for,
                           keep_output=self.keep_outputs)

    async def call_assignment(self, query: Query, assignment: Assignment, index: int) -> AssignmentResult:
        """The assignment's expert, then its fallback expert if the first failed."""
        t0 = time.perf_counter()
        outcome = await self.dispatcher.call(assignment)
        self.stats.expert_calls += len(outcome.attempts)
        for att in outcome.attempts:
            self._log("expert", att)
        return self.record_assignment(query, assignment, index, outcome.attempts, time.perf_counter() - t0)

    def record_assignment(self, query: Query, assignment: Assignment, index: int, attempts: list[CallAttempt],
                          duration_s: float) -> AssignmentResult:
        calls = []
        for att in attempts:
            rec = self.record(att.expert, att.result, answer=extract_answer(query, att.result), fallback_for=att.fallback_for)
            rec.seq = index * 10 + len(calls)  # ordered by assignment, then attempt
            calls.append(rec)
        final = attempts[-1]
        output = ExpertOutput(index=index, expert=final.expert, text=final.result.text, answer=calls[-1].answer,
                              weight=assignment.weight, ok=final.result.ok, finish_reason=final.result.finish_reason,
                              tool_calls=final.result.tool_calls)
        step = TraceStepRecord(
            seq=index, kind="generate", duration_s=duration_s,
            detail={"expert": final.expert, "assigned": assignment.expert, "ok": final.result.ok, "fallback_used": len(attempts) > 1},
        )
        return AssignmentResult(output, calls, step)

    async def aggregate(self, query: Query, plan: Plan, outputs: list[ExpertOutput]) -> tuple[FinalAnswer, list[ExpertCallRecord], TraceStepRecord]:
        """Combine the outputs as the plan says; an aggregator model that fails falls back to the
        plan's `fallback` kind (the same rule for chat, batch jobs and benchmarks)."""
        t0 = time.perf_counter()
        agg = plan.aggregation
        calls: list[ExpertCallRecord] = []
        if agg.kind == "llm" and agg.expert and any(o.ok for o in outputs):
            request = aggregation.synthesis_request(query, outputs, temperature=agg.temperature)
            if self.answer_sink is not None:  # the aggregator's output is the answer: stream it
                result = await self._stream_call(agg.expert, request, role="aggregator")
            else:
                result = await self.dispatcher.submit_or_error(agg.expert, request)
                self._log("aggregator", CallAttempt(agg.expert, result))
            self.stats.aggregator_calls += 1
            rec = self.record(agg.expert, result, role="aggregator", answer=extract_answer(query, result))
            rec.seq = AGGREGATE_SEQ
            calls.append(rec)
            if result.ok:
                final = aggregation.from_synthesis(query, result, agg.expert)
            else:
                final = aggregation.combine(query, agg.fallback, outputs)
                final.detail["aggregator_failed"] = result.error.message if result.error else "unknown"
        else:
            final = aggregation.combine(query, agg.kind, outputs)
        step = TraceStepRecord(
            seq=AGGREGATE_SEQ, kind="aggregate", duration_s=time.perf_counter() - t0,
            detail={"method": final.method, "answer": final.answer, "tally": final.tally, **final.detail},
        )
        return final, calls, step

    @staticmethod
    def outcome(query: Query, plan: Plan, parts: Sequence[AssignmentResult],
                aggregated: tuple[FinalAnswer, list[ExpertCallRecord], TraceStepRecord]) -> QueryOutcome:
        final, agg_calls, agg_step = aggregated
        return QueryOutcome(
            query=query, plan=plan, final=final, outputs=[p.output for p in parts],
            calls=[c for p in parts for c in p.calls] + agg_calls, steps=[p.step for p in parts] + [agg_step],
        )

    # ------------------------------------------------------------------ interactive
    async def _execute_one(self, query: Query, plan: Plan) -> QueryOutcome:
        a = plan.assignments
        if len(a) == 1:  # the common case: no gather, no extra task
            parts = [await self.call_assignment(query, a[0], 0)]
        else:
            parts = list(await asyncio.gather(*(self.call_assignment(query, x, i) for i, x in enumerate(a))))
        return self.outcome(query, plan, parts, await self.aggregate(query, plan, [p.output for p in parts]))

    # ------------------------------------------------------------------ streaming (one query)
    async def _execute_streamed(self, query: Query, plan: Plan) -> QueryOutcome:
        """As `_execute_one`, the answering call streamed: the one expert of a single-expert plan
        (and its fallback), or the aggregator of an "llm" plan; a vote is sent once decided."""
        self.plan = plan
        a = plan.assignments
        if len(a) == 1 and plan.aggregation.kind in ("single", "vote", "weighted-vote"):
            parts = [await self._call_assignment_streamed(query, a[0])]
        elif len(a) == 1:
            parts = [await self.call_assignment(query, a[0], 0)]
        else:
            parts = list(await asyncio.gather(*(self.call_assignment(query, x, i) for i, x in enumerate(a))))
        aggregated = await self.aggregate(query, plan, [p.output for p in parts])
        final = aggregated[0]
        sink = self.answer_sink
        assert sink is not None
        if not sink.started and (final.text or final.tool_calls):
            # decided over complete outputs (a vote, a fallback): the whole answer at once, from
            # every expert that answered (as a non-streaming response's `model` names them)
            calls = [c for p in parts for c in p.calls] + aggregated[1]
            experts = ",".join(dict.fromkeys(c.expert for c in calls if c.error_kind is None))
            sink.send(final.text, tool_call_deltas(final.tool_calls) if final.tool_calls else None, expert=experts or None)
        return self.outcome(query, plan, parts, aggregated)

    async def _call_assignment_streamed(self, query: Query, assignment: Assignment) -> AssignmentResult:
        t0 = time.perf_counter()
        sink = self.answer_sink
        assert sink is not None
        attempts = [CallAttempt(assignment.expert, await self._stream_call(assignment.expert, assignment.request))]
        if (not attempts[0].result.ok and not sink.started and assignment.fallback
                and assignment.fallback != assignment.expert):
            second = await self._stream_call(assignment.fallback, assignment.request)
            attempts.append(CallAttempt(assignment.fallback, second, fallback_for=assignment.expert))
        self.stats.expert_calls += len(attempts)
        return self.record_assignment(query, assignment, 0, attempts, time.perf_counter() - t0)

    async def _stream_call(self, expert: str, request: GenerationRequest, *, select: AnswerSelector | None = None,
                           role: str = "expert") -> GenerationResult:
        """One call through `Dispatcher.stream`, its answer (or the part `select` picks) sent to
        the sink. Logged for the trace even when cancelled (with what was sent)."""
        sink = self.answer_sink
        assert sink is not None
        produced: list[str] = []
        sent = 0

        async def on_delta(delta: GenerationDelta) -> None:
            nonlocal sent
            produced.append(delta.text)
            if select is None:
                sink.send(delta.text, delta.tool_calls, expert=expert)
                sent += len(delta.text) + len(delta.tool_calls or ())
                return
            answer = select("".join(produced))
            if len(answer) > sent:
                sink.send(answer[sent:], expert=expert)
                sent = len(answer)

        try:
            result = await self.dispatcher.stream(expert, request, on_delta)
        except asyncio.CancelledError:
            cancelled = ErrorInfo(kind="cancelled", message="the client went away while the answer streamed")
            self._log(role, CallAttempt(expert, GenerationResult(text="".join(produced), error=cancelled)))
            raise
        if not result.ok and sent:
            self.interrupted = f"{expert}: {result.error.message if result.error else 'failed'}"
        self._log(role, CallAttempt(expert, result))
        return result

    # ------------------------------------------------------------------ grouped
    async def _execute_grouped(self, queries: Sequence[Query], plans: Sequence[Plan]) -> list[QueryOutcome]:
        if self.progress:
            self.progress("route", len(plans), len(queries))
        # 1. group (query, assignment) pairs by expert; run expert by expert
        groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for qi, plan in enumerate(plans):
            for ai, a in enumerate(plan.assignments):
                groups[self.registry.resolve(a.expert)].append((qi, ai))
        attempts: dict[tuple[int, int], list[CallAttempt]] = defaultdict(list)
        ordered = self._ordered(groups)
        ran = await self._run_groups([(e, [plans[qi].assignments[ai].request for qi, ai in pairs]) for e, pairs in ordered], "generate")
        for (expert, pairs), results in zip(ordered, ran, strict=True):
            for pair, r in zip(pairs, results, strict=True):
                attempts[pair].append(CallAttempt(expert, r))

        # 2. fallbacks for failed calls, grouped by fallback expert
        retry: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (qi, ai), tried in attempts.items():
            a = plans[qi].assignments[ai]
            if not tried[-1].result.ok and a.fallback and a.fallback in self.registry and self.registry.resolve(a.fallback) != tried[-1].expert:
                retry[self.registry.resolve(a.fallback)].append((qi, ai))
        ordered = self._ordered(retry)
        ran = await self._run_groups([(e, [plans[qi].assignments[ai].request for qi, ai in pairs]) for e, pairs in ordered], "fallback")
        for (expert, pairs), results in zip(ordered, ran, strict=True):
            for (qi, ai), r in zip(pairs, results, strict=True):
                attempts[(qi, ai)].append(CallAttempt(expert, r, fallback_for=plans[qi].assignments[ai].expert))

        # 3. per-query outputs and call records
        parts: list[list[AssignmentResult]] = []
        for qi, plan in enumerate(plans):
            row = []
            for ai, a in enumerate(plan.assignments):
                tried = attempts[(qi, ai)]
                self.stats.expert_calls += len(tried)
                row.append(self.record_assignment(queries[qi], a, ai, tried, sum(t.result.latency_s for t in tried)))
            parts.append(row)

        # 4. aggregation, grouped by aggregator model (plans needing no model call at once)
        aggregated: list[Any] = [None] * len(plans)
        by_aggregator: dict[str, list[int]] = defaultdict(list)
        for qi, plan in enumerate(plans):
            agg = plan.aggregation
            if agg.kind == "llm" and agg.expert and any(p.output.ok for p in parts[qi]):
                by_aggregator[self.registry.resolve(agg.expert)].append(qi)
            else:
                aggregated[qi] = await self.aggregate(queries[qi], plan, [p.output for p in parts[qi]])
        for expert, qis in self._ordered(by_aggregator):
            await self._acquire(expert)
            t0 = time.perf_counter()
            done = 0

            async def one(qi: int) -> None:
                nonlocal done
                aggregated[qi] = await self.aggregate(queries[qi], plans[qi], [p.output for p in parts[qi]])
                done += 1
                if self.progress:
                    self.progress(f"aggregate:{expert}", done, len(qis))

            await asyncio.gather(*(one(qi) for qi in qis))
            self._busy(expert, time.perf_counter() - t0)
        return [self.outcome(queries[qi], plans[qi], parts[qi], aggregated[qi]) for qi in range(len(plans))]

    async def _run_groups(self, groups: list[tuple[str, list[GenerationRequest]]], phase: str) -> list[list[GenerationResult]]:
        if not groups:
            return []
        if self.engine is not None:
            if self.dispatcher.memo is not None:
                return await self._run_groups_memo(self.engine, self.dispatcher.memo, groups, phase)
            return await self.engine.run_groups(self, groups, phase)
        return [await self._run_group(expert, requests, phase) for expert, requests in groups]

    async def _run_groups_memo(self, engine: GroupEngine, memo: GenerationMemo, groups: list[tuple[str, list[GenerationRequest]]],
                               phase: str) -> list[list[GenerationResult]]:
        """Groups on an engine, each (expert, request) the run's memo already holds (or that
        repeats within its group) not sent again; what comes back fills the memo."""
        out: list[list[GenerationResult | None]] = []
        todo: list[tuple[str, list[GenerationRequest]]] = []
        where: list[list[tuple[int, bytes | None]]] = []  # per group sent: (index in group, key)
        repeats: list[tuple[int, int, int]] = []  # (group, index, index of the same request sent)
        for g, (expert, requests) in enumerate(groups):
            row: list[GenerationResult | None] = [None] * len(requests)
            sent: list[tuple[int, bytes | None]] = []
            first: dict[bytes, int] = {}
            for i, req in enumerate(requests):
                key = memo_key(self.registry.resolve(expert), req)
                if key is not None and (hit := memo.get(key)) is not None:
                    row[i] = hit
                elif key is not None and key in first:
                    repeats.append((g, i, first[key]))
                else:
                    if key is not None:
                        first[key] = i
                    sent.append((i, key))
            out.append(row)
            todo.append((expert, [requests[i] for i, _ in sent]))
            where.append(sent)
        ran = await engine.run_groups(self, [t for t in todo if t[1]], phase)
        it = iter(ran)
        for g, (_expert, reqs) in enumerate(todo):
            results = next(it) if reqs else []
            for (i, key), r in zip(where[g], results, strict=True):
                out[g][i] = r
                if key is not None:
                    memo.misses += 1
                    memo.finish(key, r)
        for g, i, j in repeats:
            out[g][i] = out[g][j]
            memo.hits += 1
        assert all(r is not None for row in out for r in row)
        return out  # type: ignore[return-value]

    async def _run_group(self, expert: str, requests: list[GenerationRequest], phase: str) -> list[GenerationResult]:
        """All of one expert's requests, the expert resident once, through its dispatcher queue."""
        await self._acquire(expert)
        t0 = time.perf_counter()
        before = self.dispatcher.stats.get(expert)
        calls_before = before.backend_calls if before else 0
        hook = None
        if self.progress:
            progress, total = self.progress, len(requests)

            def hook(done: int) -> None:
                progress(f"{phase}:{expert}", done, total)

        results = await self.dispatcher.submit_many(expert, requests, on_result=hook)
        after = self.dispatcher.stats.get(expert)
        self.stats.backend_calls += (after.backend_calls if after else 0) - calls_before
        self._busy(expert, time.perf_counter() - t0)
        return results

    async def _acquire(self, expert: str) -> None:
        if self.residency is not None:
            await self.residency.acquire(expert)

    def record_group(self, expert: str, seconds: float, backend_calls: int) -> None:
        """What a group run elsewhere (a `GroupEngine`) did, in this run's stats."""
        self.stats.backend_calls += backend_calls
        self._busy(expert, seconds)

    def _busy(self, expert: str, seconds: float) -> None:
        self.stats.busy_s_per_expert[expert] = self.stats.busy_s_per_expert.get(expert, 0.0) + seconds

    def _ordered(self, groups: dict[str, list[Any]]) -> list[tuple[str, list[Any]]]:
        """Experts already resident first (no load), then the rest in first-use order."""
        if not self.resident_first or self.residency is None:
            return list(groups.items())
        resident = set(self.residency.resident)
        return sorted(groups.items(), key=lambda kv: kv[0] not in resident)
