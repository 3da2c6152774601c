"""Runs batch jobs: chunk by chunk with the grouped scheduler, each chunk's results stored at once.

    runner = BatchRunner(runtime, on_calls=metrics.record_calls, chunk_size=32)
    await runner.resume()                 # at start: finish what a previous process left
    record = await runner.submit(create, owner=caller.key_id)
    ...
    await runner.aclose()                 # at shutdown: cancels the tasks; jobs stay resumable

A job is the list of its requests, kept in the store. Its pending items are those without a
stored result; they run in chunks of `chunk_size`: per chunk, items are grouped by `model`, each
group answered by its router at once in grouped mode (`Runtime.answer_batch`: the same dispatcher,
breakers and aggregation as chat), and the chunk's results
and traces are written in one transaction keyed by (batch id, index). A killed process therefore
loses at most the chunk in flight, and a resumed job never writes a result twice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from experts.errors import ConfigError
from experts.registry import UnknownExpert
from orchestrator.gateway import errors as E
from orchestrator.gateway.queries import failure_error, query_from, resolve_model
from orchestrator.pipeline import QueryResult, Runtime
from orchestrator.protocol import BatchCreate, BatchRequestItem, ChatChoice, ChatCompletionResponse, ChatMessageOut, Usage
from orchestrator.residency import ResidencyManager
from routers.base import Router
from routers.types import Query, RoutingError
from routers.registry import router_names
from store.records import BatchItemRecord, BatchRecord, ExpertCallRecord, TraceRecord

logger = logging.getLogger("orchestrator.gateway.batches")

CallsHook = Callable[[list[ExpertCallRecord]], None]


class BatchNotFound(LookupError):
    """Raised when a batch id is unknown, or belongs to another API key."""


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def _error_item(idx: int, item: BatchRequestItem, err: E.APIError, trace_id: str | None = None) -> BatchItemRecord:
    return BatchItemRecord(idx=idx, custom_id=item.custom_id, ok=False, status_code=err.status_code, body=E.error_body(err), trace_id=trace_id)


def _answer_item(idx: int, item: BatchRequestItem, result: QueryResult) -> BatchItemRecord:
    err = failure_error(result)
    if err is not None:
        return _error_item(idx, item, err, result.trace_id)
    finish = next((c.finish_reason for c in reversed(result.calls) if c.error_kind is None), "stop") or "stop"
    experts = ",".join(result.experts_used)
    resp = ChatCompletionResponse(
        model=experts or item.body.model,
        choices=[ChatChoice(message=ChatMessageOut(content=result.final.text), finish_reason=finish if finish in ("stop", "length") else "stop")],
        usage=Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                    total_tokens=result.prompt_tokens + result.completion_tokens),
        experts=result.experts_used, router=result.router, trace_id=result.trace_id,
    )
    return BatchItemRecord(idx=idx, custom_id=item.custom_id, ok=True, status_code=200, body=resp.model_dump(mode="json"), trace_id=result.trace_id)


class BatchRunner:
    """Owns the background tasks of the batch jobs of one gateway process."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        chunk_size: int = 32,
        pause_s: float = 0.0,
        default_max_tokens: int = 256,
        on_calls: CallsHook | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.runtime = runtime
        self.chunk_size = max(1, chunk_size)
        self.pause_s = pause_s
        self.default_max_tokens = default_max_tokens
        self.on_calls = on_calls
        # Experts stay resident across chunks (capacity = all of them): batch jobs share the
        # process with interactive traffic, which loads the same backends.
        self.residency = ResidencyManager(runtime.registry, capacity=max(1, len(runtime.registry)))
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        # Batch metrics join the app's registry (no process-global state).
        self.items_done = Counter("orchestrator_batch_items", "batch requests answered", ["status"], registry=registry)
        running = Gauge("orchestrator_batch_jobs_running", "batch jobs running in this process", registry=registry)
        running.set_function(lambda: len(self._running))

    # ------------------------------------------------------------------ lifecycle
    async def resume(self) -> list[str]:
        """Restart every job a previous process left unfinished; returns their ids."""
        resumed = []
        for rec in await self.runtime.store.list_batches(statuses=("in_progress", "cancelling"), limit=100_000):
            if rec.status == "cancelling":
                await self.runtime.store.set_batch_status(rec.id, "cancelled", only_from=("cancelling",))
                continue
            self._start(rec.id)
            resumed.append(rec.id)
        if resumed:
            logger.info("resuming %d unfinished batch job(s): %s", len(resumed), ", ".join(resumed))
        return resumed

    async def aclose(self) -> None:
        """Cancel running jobs (their stored state lets the next process resume them)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, batch_id: str) -> None:
        if batch_id in self._running:
            return
        task = asyncio.create_task(self._run(batch_id), name=f"batch:{batch_id}")
        self._tasks.add(task)
        self._running[batch_id] = task

        def _done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._running.pop(batch_id, None)

        task.add_done_callback(_done)

    async def wait(self, batch_id: str) -> None:
        """Wait for a job running in this process (tests and the CLI)."""
        task = self._running.get(batch_id)
        if task is not None:
            await asyncio.shield(task)

    # ------------------------------------------------------------------ requests from the API
    def validate(self, create: BatchCreate) -> None:
        """Refuse a batch the way the chat endpoint would refuse its requests (before storing it)."""
        known_routers = set(router_names())
        for i, item in enumerate(create.requests):
            model = item.body.model
            if model not in known_routers and self.runtime.registry.find(model) is None:
                raise E.NotFound(
                    f"requests[{i}]: unknown model {model!r}; routers: {', '.join(sorted(known_routers))}; "
                    f"experts: {', '.join(self.runtime.registry.names)}",
                    param=f"requests.{i}.body.model", code="model_not_found",
                )
            try:
                query_from(item.body, self.default_max_tokens)
            except E.APIError as e:
                e.param = f"requests.{i}.body.{e.param}" if e.param else f"requests.{i}.body"
                e.message = f"requests[{i}]: {e.message}"
                raise

    async def submit(self, create: BatchCreate, *, owner: str | None) -> BatchRecord:
        self.validate(create)
        first_use: dict[str, int] = {}
        for i, item in enumerate(create.requests):
            first_use.setdefault(item.body.model, i)
        for model, i in first_use.items():  # e.g. a router that must be fitted first: refuse now, not per item
            try:
                await self._router_for(model)
            except E.APIError as e:
                e.param, e.message = f"requests.{i}.body.model", f"requests[{i}]: {e.message}"
                raise
        rec = BatchRecord(
            id=new_batch_id(), owner=owner, status="in_progress", total=len(create.requests),
            requests=[r.model_dump(mode="json", exclude_none=True) for r in create.requests], meta=create.metadata or {},
        )
        await self.runtime.store.create_batch(rec)
        self._start(rec.id)
        return await self.runtime.store.get_batch(rec.id) or rec

    async def cancel(self, batch_id: str, *, owner: str | None) -> BatchRecord:
        store = self.runtime.store
        rec = await store.get_batch(batch_id, owner=owner)
        if rec is None:
            raise BatchNotFound(batch_id)
        if rec.status == "in_progress":
            # A running job stops at its next chunk boundary; one running nowhere stops now.
            target = "cancelling" if batch_id in self._running else "cancelled"
            await store.set_batch_status(batch_id, target, only_from=("in_progress",))
        got = await store.get_batch(batch_id, owner=owner)
        assert got is not None
        return got

    # ------------------------------------------------------------------ the work
    async def _run(self, batch_id: str) -> None:
        store = self.runtime.store
        try:
            rec = await store.get_batch(batch_id, with_requests=True)
            if rec is None:
                return
            items = [BatchRequestItem.model_validate(r) for r in rec.requests]
            done = await store.batch_done_indices(batch_id)
            pending = [i for i in range(rec.total) if i not in done]
            for start in range(0, len(pending), self.chunk_size):
                now = await store.get_batch(batch_id)
                if now is None or now.status != "in_progress":
                    if now is not None and now.status == "cancelling":
                        await store.set_batch_status(batch_id, "cancelled", only_from=("cancelling",))
                    return
                chunk = pending[start : start + self.chunk_size]
                results, traces = await self._execute(chunk, items, rec.owner)
                await store.save_batch_items(batch_id, results, traces)
                for r in results:
                    self.items_done.labels("ok" if r.ok else "error").inc()
                if self.pause_s:
                    await asyncio.sleep(self.pause_s)
            if not await store.set_batch_status(batch_id, "completed", only_from=("in_progress",)):
                await store.set_batch_status(batch_id, "cancelled", only_from=("cancelling",))
        except asyncio.CancelledError:
            raise  # shutdown: the job stays in_progress and resumes at the next start
        except Exception as e:  # noqa: BLE001 - a broken job is marked failed, not left hanging
            logger.exception("batch %s failed", batch_id)
            try:
                await store.set_batch_status(batch_id, "failed", error=f"{type(e).__name__}: {e}"[:2000])
            except Exception:  # noqa: BLE001 - the store itself is down: the job resumes later
                logger.exception("could not mark batch %s failed", batch_id)

    async def _execute(self, chunk: Sequence[int], items: list[BatchRequestItem], owner: str | None) -> tuple[list[BatchItemRecord], list[TraceRecord]]:
        by_model: dict[str, list[int]] = defaultdict(list)
        for i in chunk:
            by_model[items[i].body.model].append(i)
        out: list[BatchItemRecord] = []
        traces: list[TraceRecord] = []
        for model, idxs in by_model.items():
            try:
                answered = await self._answer_group(model, [items[i] for i in idxs])
            except E.APIError as err:
                out += [_error_item(i, items[i], err) for i in idxs]
                continue
            for i, (query, result) in zip(idxs, answered, strict=True):
                if self.on_calls is not None:
                    self.on_calls(result.calls)
                traces.append(Runtime.trace_record(query, result, owner=owner))
                out.append(_answer_item(i, items[i], result))
        return sorted(out, key=lambda r: r.idx), traces

    async def _router_for(self, model: str) -> tuple[str, Router, dict[str, Any] | None]:
        name, options = resolve_model(self.runtime.registry, model)  # NotFound: its expert was deleted since
        try:
            return name, await self.runtime.router(name, options), options
        except RoutingError as e:
            raise E.BadRequest(str(e), param="model", code="routing_error") from None
        except (UnknownExpert, ConfigError) as e:
            raise E.BadRequest(str(e), param="model") from None

    async def _answer_group(self, model: str, group: list[BatchRequestItem]) -> list[tuple[Query, QueryResult]]:
        """Answer the requests of one model together (grouped mode, through the runtime's
        dispatcher and aggregation: the path chat requests take); every item gets a QueryResult."""
        name, _router, options = await self._router_for(model)
        queries = [query_from(it.body, self.default_max_tokens) for it in group]
        results = await self.runtime.answer_batch(queries, name, options=options, residency=self.residency)
        return list(zip(queries, results, strict=True))
