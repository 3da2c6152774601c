"""Runs batch jobs: chunk by chunk with the grouped scheduler, each chunk's results stored at once.

    runner = BatchRunner(runtime, on_calls=metrics.record_calls, chunk_size=32)
    await runner.resume()                 # at start: finish what a previous process left
    record = await runner.submit(create, owner=caller.key_id)
    record = await runner.submit_lines(read_input(content), owner=..., input_file_id=file_id)  # the Files API form
    ...
    await runner.aclose()                 # at shutdown: cancels the tasks; jobs stay resumable

A job is the list of its requests, kept in the store. Its pending items are those without a
stored result; they run in chunks of `chunk_size`: per chunk, items are grouped by `model`, each
group answered by its router at once in grouped mode (`Runtime.answer_batch`: the same dispatcher,
breakers and aggregation as chat), and the chunk's results
and traces are written in one transaction keyed by (batch id, index). A killed process therefore
loses at most the chunk in flight, and a resumed job never writes a result twice.

A request that cannot be answered (an unknown model, a router not fitted, a bad line of an input
file) fails alone: its error result is stored with the batch, the other requests are answered.
A request carrying tools or response_format is answered on its own, so a route that cannot honour
them fails that request only.
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
from orchestrator.gateway.batch_files import BatchLine
from orchestrator.gateway.queries import chat_completion, failure_error, query_from, resolve_model
from orchestrator.pipeline import QueryResult, Runtime
from orchestrator.protocol import BatchCreate, BatchRequestItem
from orchestrator.residency import ResidencyManager
from routers.base import Router
from routers.types import Query, RoutingError, UnsupportedRequest
from store.records import BatchItemRecord, BatchRecord, ExpertCallRecord, TraceRecord

logger = logging.getLogger("orchestrator.gateway.batches")

CallsHook = Callable[[list[ExpertCallRecord]], None]


class BatchNotFound(LookupError):
    """Raised when a batch id is unknown, or belongs to another API key."""


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def _error_item(idx: int, custom_id: str | None, err: E.APIError, trace_id: str | None = None) -> BatchItemRecord:
    return BatchItemRecord(idx=idx, custom_id=custom_id, ok=False, status_code=err.status_code, body=E.error_body(err), trace_id=trace_id)


def _answer_item(idx: int, item: BatchRequestItem, result: QueryResult) -> BatchItemRecord:
    err = failure_error(result)
    if err is not None:
        return _error_item(idx, item.custom_id, err, result.trace_id)
    # the chosen output's finish reason (a vote's winner), as a chat request reports it
    resp = chat_completion(result, item.body.model)
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
    async def line_error(self, item: BatchRequestItem, routers: dict[str, E.APIError | None] | None = None) -> E.APIError | None:
        """Why the chat endpoint would refuse this request before answering it, or None.

        `routers` caches the outcome per model (a router that must be fitted first is looked up once)."""
        routers = {} if routers is None else routers
        model = item.body.model
        if model not in routers:
            try:
                await self._router_for(model)
                routers[model] = None
            except E.APIError as e:
                e.param = f"body.{e.param}" if e.param else "body"
                routers[model] = e
        if routers[model] is not None:
            return routers[model]
        try:
            query_from(item.body, self.default_max_tokens)
        except E.APIError as e:
            e.param = f"body.{e.param}" if e.param else "body"
            return e
        return None

    async def submit(self, create: BatchCreate, *, owner: str | None) -> BatchRecord:
        """An inline batch (`requests`); its requests that cannot be answered fail alone."""
        assert create.requests is not None, "a batch from a file goes through submit_lines"
        return await self.submit_lines([BatchLine(r.custom_id, item=r) for r in create.requests], owner=owner,
                                       metadata=create.metadata)

    async def submit_lines(self, lines: list[BatchLine], *, owner: str | None, metadata: dict[str, str] | None = None,
                           input_file_id: str | None = None) -> BatchRecord:
        """Store a batch of these requests and start it. Lines that failed to parse, and requests
        the chat endpoint would refuse, are stored as error results at once: they fail alone."""
        routers: dict[str, E.APIError | None] = {}
        requests: list[dict[str, Any]] = []
        refused: list[BatchItemRecord] = []
        for i, line in enumerate(lines):
            err = line.error if line.item is None else await self.line_error(line.item, routers)
            if err is not None:
                refused.append(_error_item(i, line.custom_id, err))
                requests.append({"custom_id": line.custom_id, "refused": True})  # never run: its result is stored
            else:
                assert line.item is not None
                requests.append(line.item.model_dump(mode="json", exclude_none=True))
        rec = BatchRecord(id=new_batch_id(), owner=owner, status="in_progress", total=len(lines), requests=requests,
                          meta=metadata or {}, input_file_id=input_file_id)
        await self.runtime.store.create_batch(rec, refused)
        for _ in refused:
            self.items_done.labels("error").inc()
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
            done = await store.batch_done_indices(batch_id)
            pending = [i for i in range(rec.total) if i not in done]
            items = {i: BatchRequestItem.model_validate(rec.requests[i]) for i in pending}  # refused ones are done
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

    async def _execute(self, chunk: Sequence[int], items: dict[int, BatchRequestItem], owner: str | None) -> tuple[list[BatchItemRecord], list[TraceRecord]]:
        by_model: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i in chunk:
            # a request with tools is a group of its own: a route that cannot honour them fails it alone
            by_model[(items[i].body.model, i if items[i].body.passthrough() else -1)].append(i)
        out: list[BatchItemRecord] = []
        traces: list[TraceRecord] = []
        for (model, _), idxs in by_model.items():
            try:
                answered = await self._answer_group(model, [items[i] for i in idxs])
            except E.APIError as err:
                out += [_error_item(i, items[i].custom_id, err) for i in idxs]
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
        try:
            results = await self.runtime.answer_batch(queries, name, options=options, residency=self.residency)
        except UnsupportedRequest as e:  # tools on a route that cannot honour them
            raise E.BadRequest(str(e), param="body.tools", code="unsupported_for_route") from None
        return list(zip(queries, results, strict=True))
