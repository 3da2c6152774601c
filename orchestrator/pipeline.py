"""The runtime that answers queries: registry + dispatcher + routers + store.

    async with Runtime.create(config) as rt:
        result = await rt.answer(Query(text="Which enzyme unwinds DNA?"), router="all-vote")
        print(result.final.text, result.trace_id)

Every answered query is written to the store as one trace (request, plan, steps, expert calls),
in one transaction. A streaming caller passes a sink (`answer(..., sink=sink)`): the answer's
tokens reach it while the query runs. A query whose caller went away (its task cancelled: a
client disconnect, a stream closed early, a timeout) leaves a trace with status `cancelled`, with
the calls made until then.

The registry may change while the runtime serves (the gateway follows the registry its replicas
share: orchestrator/registry_sync.py). `put_expert` / `drop_expert` apply one change: the
expert's dispatcher queue and breaker are rebuilt over the new backend, and every cached router
whose pool or options involve the expert (or that took the whole registry as its pool) is built
again on its next use.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from experts.backends.base import ExpertBackend
from experts.registry import ExpertRegistry
from experts.spec import ExpertSpec, OrchestratorConfig
from orchestrator.dispatcher import BatchObserver, Dispatcher
from orchestrator.execution import Executor, GroupEngine
from orchestrator.residency import ResidencyManager
from orchestrator.response_cache import CacheHit, ResponseCaches
from orchestrator.scheduler import GroupedScheduler
from routers.base import Router
from routers.tracing import call_record
from routers.types import (
    AnswerSink,
    ExpertOutput,
    FinalAnswer,
    Plan,
    Query,
    QueryOutcome,
    RouterContext,
    RoutingError,
    UnsupportedRequest,
)
from routers.registry import build_router
from store.records import ExpertCallRecord, PlanRecord, TraceRecord, TraceStepRecord
from store.repository import Store
from store.trace_writer import TraceWriter

if TYPE_CHECKING:
    from orchestrator.telemetry import Telemetry

logger = logging.getLogger("orchestrator.runtime")


@dataclass
class QueryResult:
    trace_id: str
    router: str
    final: FinalAnswer
    plan: Plan | None
    outputs: list[ExpertOutput]
    calls: list[ExpertCallRecord]
    steps: list[TraceStepRecord]
    latency_s: float
    # Streaming only: why the answer broke off after its first token (the caller reports it in-band).
    interrupted: str | None = None
    # Set when a response cache answered ("exact" | "semantic"); `reused_experts` then names the
    # experts whose answer it is (this request made no expert call).
    cache: str | None = None
    reused_experts: list[str] | None = None

    @property
    def finish_reason(self) -> str:
        """Why the chosen answer ended ("stop", "length", "tool_calls"), as its expert said."""
        if self.final.finish_reason:
            return self.final.finish_reason
        return next((c.finish_reason for c in reversed(self.answer_calls) if c.error_kind is None and c.finish_reason), None) or "stop"

    @property
    def answer_calls(self) -> list[ExpertCallRecord]:
        """The calls the answer came from: all but exploration's shadow calls (never shown to the caller)."""
        return [c for c in self.calls if c.role != "shadow"]

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls)

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)

    @property
    def ok(self) -> bool:
        calls = self.answer_calls
        return any(c.error_kind is None for c in calls) or (not calls and bool(self.final.text))

    @property
    def experts_used(self) -> list[str]:
        if self.reused_experts is not None:
            return self.reused_experts
        return list(dict.fromkeys(c.expert for c in self.answer_calls if c.error_kind is None))


class Runtime:
    """Owns the long-lived objects; build it in a lifespan or `async with`, never at import."""

    def __init__(
        self,
        config: OrchestratorConfig,
        registry: ExpertRegistry,
        store: Store,
        *,
        seed: int = 0,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self.seed = seed
        self.dispatcher = Dispatcher(registry, on_batch=on_batch)
        self.executor = Executor(registry, self.dispatcher)  # interactive policy; batch jobs run grouped
        self.services: dict[str, Any] = {"embedder_backend": config.embedder}
        # Set by the gateway: traces then go through a batched background writer (store/trace_writer.py).
        self.trace_writer: TraceWriter | None = None
        # Set by the gateway when OTLP export is configured: every recorded trace also becomes
        # OTel spans (orchestrator/telemetry.py). None costs one attribute test per query.
        self.telemetry: Telemetry | None = None
        # Set by the gateway when the config turns a response cache on (orchestrator/response_cache.py).
        self.response_cache: ResponseCaches | None = None
        self._routers: dict[str, Router] = {}
        # What each cached router depends on: expert names, or None for the whole registry.
        self._router_deps: dict[str, frozenset[str] | None] = {}
        self._retiring: set[asyncio.Task[None]] = set()  # old queues and backends finishing their calls
        self._registry_changes = 0
        # Fit versions: when each cached fitted router last looked up its pool's current version.
        self.fit_poll_s = 2.0  # the staleness bound of a fit version (`profile use`, a refit)
        self._fit_checked: dict[str, float] = {}
        self._fit_checking: set[str] = set()
        self.registry_grace_s = 30.0  # how long a replaced expert's queued calls may take to finish

    @classmethod
    async def create(cls, config: OrchestratorConfig, *, store_url: str | None = None, seed: int = 0,
                     store_command_timeout_s: float | None = 30.0, **kw: Any) -> "Runtime":
        store = await Store.open(store_url or config.store, command_timeout_s=store_command_timeout_s)
        registry = ExpertRegistry.from_specs(config.experts, secrets=config.secrets)
        return cls(config, registry, store, seed=seed, **kw)

    async def aclose(self) -> None:
        if self.trace_writer is not None:
            await self.trace_writer.aclose()  # before the store closes: flush every trace
        for t in list(self._retiring):
            t.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.dispatcher.aclose()
        await self.registry.aclose()
        await self.store.aclose()

    async def __aenter__(self) -> "Runtime":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def router_context(self, pool: list[str] | None = None) -> RouterContext:
        return RouterContext(
            pool=pool or self.registry.names,
            registry=self.registry,
            dispatcher=self.dispatcher,
            store=self.store,
            seed=self.seed,
            services=self.services,
        )

    async def router(self, name: str, options: dict[str, Any] | None = None) -> Router:
        """The named router, built once with the config's options (and restored if fitted).

        A stored fitted router follows its pool's fit version: at most every `fit_poll_s` one
        request looks up the current version (pinned, else newest) and, if it changed, builds the
        router again on it. Requests already holding the old router finish on it; requests that
        start more than `fit_poll_s` after a change (`profile use`, a refit) route on the new one."""
        key = name if options is None else f"{name}:{sorted(options.items())}"
        cached = self._routers.get(key)
        if cached is None:
            return await self._build_router(key, name, options)
        if (getattr(cached, "artefact_kind", None) is not None and key not in self._fit_checking
                and time.monotonic() - self._fit_checked.get(key, 0.0) >= self.fit_poll_s):
            await self._follow_fit(key, name, options, cached)
        return self._routers.get(key, cached)

    def exploration_budget(self, name: str, options: dict[str, Any] | None = None) -> float:
        """The cached router's `explore` share (0: it does not explore, or is not built yet)."""
        key = name if options is None else f"{name}:{sorted(options.items())}"
        return float(getattr(self._routers.get(key), "explore", 0.0) or 0.0)

    async def _build_router(self, key: str, name: str, options: dict[str, Any] | None) -> Router:
        opts = dict(self.config.routers.get(name, {}))
        opts.update(options or {})
        pool = opts.pop("pool", None)
        deps = None if pool is None else frozenset(self.registry.find(e) or e for e in pool) | self._experts_named(opts)
        generation = self._registry_changes
        router = build_router(name, self.router_context(pool), opts)
        if router.needs_fit:
            restore = getattr(router, "restore", None)
            restored = restore is not None and await restore()
            start_cold = getattr(router, "start_cold", None)
            if not restored and (start_cold is None or not start_cold()):
                raise RoutingError(
                    f"router {name!r} must be fitted first (e.g. `orchestrator bench ... --router {name}` "
                    "or its fit command); no fitted artefact was found in the store"
                )
        self._fit_checked[key] = time.monotonic()
        if generation != self._registry_changes:
            return router  # the registry changed while it was restored: use it once, cache the next
        self._routers[key] = router
        self._router_deps[key] = deps
        return router

    async def _follow_fit(self, key: str, name: str, options: dict[str, Any] | None, cached: Router) -> None:
        """Swap in the pool's current fit version if it is not the one `cached` routes with."""
        self._fit_checking.add(key)  # one lookup per router at a time; the others keep routing
        try:
            current = await self.store.current_artefact_version(cached.artefact_kind, cached.artefact, cached.pool)  # type: ignore[attr-defined]
            if current is not None and current != getattr(cached, "fit_version", None):
                fresh = await self._build_router(key, name, options)
                logger.info("router %s: fit v%s -> v%s", name, getattr(cached, "fit_version", None), getattr(fresh, "fit_version", None))
        except Exception as e:  # noqa: BLE001 - a store hiccup must not fail the request: keep the version we have
            logger.warning("router %s: could not check its fit version (%s: %s)", name, type(e).__name__, e)
        finally:
            self._fit_checked[key] = time.monotonic()
            self._fit_checking.discard(key)

    def _experts_named(self, value: Any) -> frozenset[str]:
        """The registered experts a router option names (an aggregator, a fallback, a team)."""
        if isinstance(value, str):
            found = self.registry.find(value)
            return frozenset({found}) if found else frozenset()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, (list, tuple, set)):
            return frozenset().union(*(self._experts_named(v) for v in value)) if value else frozenset()
        return frozenset()

    # ------------------------------------------------------------------ registry changes
    def _forget_routers(self, expert: str) -> None:
        self._registry_changes += 1
        if self.response_cache is not None:  # an answer of the old expert must not be served again
            self.response_cache.clear()
        for key in [k for k, deps in self._router_deps.items() if deps is None or expert in deps]:
            self._routers.pop(key, None)
            self._router_deps.pop(key, None)

    def _retire(self, name: str, old: ExpertBackend | None) -> None:
        """Swap the expert's dispatcher queue now (calls from here on get the new backend); let
        the old queue and backend finish their calls off the request path, then close them."""
        queue = self.dispatcher.detach(name)

        async def finish() -> None:
            try:
                if queue is not None:
                    await queue.drain(grace_s=self.registry_grace_s)
            finally:  # also when shutdown cuts the drain short
                if old is not None:
                    await old.aclose()

        task = asyncio.create_task(finish(), name=f"retire:{name}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def put_expert(self, spec: ExpertSpec) -> bool:
        """Register or replace an expert in this process; False if it was already registered as is.
        Raises ConfigError (a name or alias clash)."""
        current = self.registry.find(spec.name)
        if current is not None and self.registry.spec(current) == spec:
            return False
        old = self.registry.replace(spec)
        self._retire(spec.name, old)
        self._forget_routers(spec.name)
        logger.info("expert %s %s (%s %s)", spec.name, "replaced" if old is not None else "added", spec.backend.value, spec.model)
        return True

    def drop_expert(self, name: str) -> bool:
        """Remove an expert from this process; False if it was not registered."""
        canonical = self.registry.find(name)
        if canonical is None:
            return False
        old = self.registry.remove(canonical)
        self._retire(canonical, old)
        self._forget_routers(canonical)
        logger.info("expert %s removed", canonical)
        return True

    async def register_expert(self, spec: ExpertSpec) -> None:
        """Add or replace an expert in the shared registry (the store: every replica follows it),
        and in this process at once. Raises ConfigError (a name or alias clash) before storing."""
        self.registry.check_names(spec)
        await self.store.upsert_experts([spec.model_dump(mode="json")], origin="api")
        self.put_expert(spec)

    async def unregister_expert(self, name: str) -> bool:
        """Delete an expert from the shared registry (every replica drops it) and from this process."""
        canonical = self.registry.find(name) or name
        spec = self.registry.spec(canonical).model_dump(mode="json") if canonical in self.registry else None
        deleted = await self.store.delete_expert(canonical, spec=spec)
        return self.drop_expert(canonical) or deleted

    async def answer(
        self, query: Query, router: str, *, options: dict[str, Any] | None = None, owner: str | None = None, record: bool = True,
        sink: AnswerSink | None = None, trace_id: str | None = None,
    ) -> QueryResult:
        """Route, generate, aggregate and record one query (the router runs on the interactive
        executor; with `sink`, on a streaming view of it that sends the answer as it comes)."""
        r = await self.router(router, options)
        self.check_passthrough(r, query)
        executor = self.executor if sink is None else self.executor.streaming(sink)
        trace_id = trace_id or str(uuid.uuid4())
        t0 = time.perf_counter()
        pending = None
        if self.response_cache is not None and sink is None and record:
            version = getattr(r, "fit_version", None)
            hit, pending = await self.response_cache.find(query, router, options, owner=owner, fit_version=version)
            if hit is not None:
                return await self._answer_cached(query, router, hit, trace_id, owner, time.perf_counter() - t0, version)
        try:
            (outcome,) = await r.run([query], executor)
        except asyncio.CancelledError:
            if record:  # the caller went away (client disconnect, stream closed, shutdown): say so in the trace
                self._record_cancelled(query, router, executor, time.perf_counter() - t0, trace_id, owner)
            raise
        result = self.result(router, outcome, time.perf_counter() - t0, trace_id=trace_id)
        result.interrupted = executor.interrupted
        if record:
            await self._record(query, result, owner)
        if pending is not None and self.response_cache is not None:
            self.response_cache.keep(pending, result)
        return result

    async def _record(self, query: Query, result: QueryResult, owner: str | None) -> None:
        trace = self.trace_record(query, result, owner=owner)
        if self.telemetry is None:
            await self._save(trace)
        else:  # spans for a recorded trace only (a refused save fails the request), ending as the query did
            ended_ns = time.time_ns()
            await self._save(trace)
            self.telemetry.export(trace, self.registry, end_ns=ended_ns)

    async def _answer_cached(self, query: Query, router: str, hit: CacheHit, trace_id: str, owner: str | None,
                             latency_s: float, fit_version: int | None) -> QueryResult:
        """A cached answer as its own trace: no expert call, one `cache` step naming the trace
        that produced the answer (and, for a fitted router, the fit version it was routed with)."""
        src = hit.result
        detail = hit.detail() if fit_version is None else {**hit.detail(), "fit_version": fit_version}
        result = QueryResult(
            trace_id=trace_id, router=router, final=src.final, plan=None, outputs=[], calls=[],
            steps=[TraceStepRecord(seq=0, kind="cache", duration_s=latency_s, detail=detail)],
            latency_s=latency_s, cache=hit.kind, reused_experts=src.experts_used,
        )
        await self._record(query, result, owner)
        return result

    async def _save(self, trace: TraceRecord) -> None:
        if self.trace_writer is not None:
            await self.trace_writer.put(trace)
        else:
            await self.store.save_trace(trace)

    @staticmethod
    def check_passthrough(router: Router, query: Query) -> None:
        """Refuse OpenAI fields (tools, response_format) a router could never pass on: one that
        does not answer through plans the executor checks (Router-R1, MoT) would drop them."""
        fields = query.tool_fields()
        if fields and not router.executes_plans:
            raise UnsupportedRequest(f"router {router.name!r} makes its own expert calls, so it cannot honour "
                                     f"{', '.join(fields)}; call a tool-capable expert by name")

    def _record_cancelled(self, query: Query, router: str, executor: Executor, latency_s: float, trace_id: str,
                          owner: str | None) -> None:
        """The trace of a cancelled query: the calls made until then (a streaming executor keeps
        them; the partial answer is the cancelled call's text), written without awaiting."""
        calls = [call_record(self.registry, att.expert, att.result, role=role, fallback_for=att.fallback_for)
                 for role, att in executor.attempts or ()]
        for i, c in enumerate(calls):
            c.seq = i
        partial = next((c.output or "" for c in reversed(calls) if c.error_kind == "cancelled"), "")
        result = QueryResult(trace_id=trace_id, router=router, final=FinalAnswer(partial, None, "cancelled"), plan=executor.plan,
                             outputs=[], calls=calls, steps=[], latency_s=latency_s)
        trace = self.trace_record(query, result, owner=owner).model_copy(update={
            "status": "cancelled",
            "error": "cancelled before the answer was complete (the client went away or the request timed out); "
                     "its expert calls were cancelled"})
        if self.telemetry is not None:
            self.telemetry.export(trace, self.registry)
        if self.trace_writer is not None:
            self.trace_writer.put_nowait(trace)  # no awaiting inside a cancelled task
        else:  # no writer (CLI): write it from a task of its own
            task = asyncio.get_running_loop().create_task(self._save_logged(trace))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _save_logged(self, trace: TraceRecord) -> None:
        try:
            await self.store.save_trace(trace)
        except Exception:  # noqa: BLE001 - the store's trouble must not hide the cancellation
            logger.exception("could not record the cancelled query %s", trace.id)

    async def answer_batch(
        self, queries: list[Query], router: str, *, options: dict[str, Any] | None = None,
        residency: ResidencyManager | None = None, engine: GroupEngine | None = None,
    ) -> list["QueryResult"]:
        """Answer many queries with one router in grouped mode, through this runtime's dispatcher
        (the bounds and breakers chat traffic uses), or with the expert groups on `engine` (a Ray
        cluster); not recorded (the caller stores them)."""
        r = await self.router(router, options)
        for q in queries:
            self.check_passthrough(r, q)
        t0 = time.perf_counter()
        run = await GroupedScheduler(self.registry, residency, dispatcher=self.dispatcher, engine=engine).run(r, queries)
        share = (time.perf_counter() - t0) / max(1, len(queries))
        return [self.result(router, o, share) for o in run.outcomes]

    @staticmethod
    def result(router: str, outcome: QueryOutcome, latency_s: float, *, trace_id: str | None = None) -> "QueryResult":
        """A router's outcome as the trace records it: calls and steps renumbered in order."""
        calls = sorted(outcome.calls, key=lambda c: c.seq)
        for i, c in enumerate(calls):
            c.seq = i
        # By seq, and on a tie the plan step first (the route and first generate steps both have
        # seq 0; multi-round methods number their steps in order).
        steps = sorted(outcome.steps, key=lambda s: (s.seq, s.kind != "route"))
        for i, s in enumerate(steps):
            s.seq = i
        return QueryResult(
            trace_id=trace_id or str(uuid.uuid4()), router=router, final=outcome.final, plan=outcome.plan,
            outputs=sorted(outcome.outputs, key=lambda o: o.index), calls=calls, steps=steps, latency_s=latency_s,
        )

    @staticmethod
    def trace_record(query: Query, result: QueryResult, *, owner: str | None = None) -> TraceRecord:
        # Validated, not `model_construct`: pydantic's validation runs in Rust and costs about half
        # of an unvalidated Python-level build of this record (benchmarks/gateway_hot_path.py).
        plan = result.plan
        return TraceRecord(
            id=result.trace_id,
            router=result.router,
            query_text=query.text,
            query_meta={k: v for k, v in query.model_dump(exclude={"text", "gold", "prompt", "messages"}).items() if v not in (None, {}, ())},
            answer_text=result.final.text,
            answer=result.final.answer,
            status="ok" if result.ok else "error",
            error=None if result.ok else "; ".join(c.error_message or "" for c in result.calls if c.error_kind) or "no expert answered",
            latency_s=result.latency_s,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
            owner=owner,
            plan=PlanRecord(
                router=plan.router,
                experts=[a.expert for a in plan.assignments],
                aggregation=plan.aggregation.model_dump(),
                detail={"reasons": [a.reason for a in plan.assignments], **plan.detail},
            )
            if plan
            else None,
            steps=result.steps,
            calls=result.calls,
        )
