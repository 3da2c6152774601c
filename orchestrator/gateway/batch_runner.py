"""Runs batch jobs: leased to one replica at a time, chunk by chunk, each chunk's results stored at once.

    runner = BatchRunner(runtime, replica_id="gw-1", lease_s=30, on_calls=metrics.record_calls)
    await runner.sweep()                  # take over the jobs nobody holds (also every sweep_s)
    record = await runner.submit(create, owner=caller.key_id)
    record = await runner.submit_lines(read_input(content), owner=..., input_file_id=file_id)  # the Files API form
    ...
    await runner.aclose()                 # at shutdown: stop, release the leases for others

A job is the list of its requests, kept in the store. Several gateway replicas may share the
store; a job runs in exactly one of them at a time, the holder of its lease (owner, expiry),
taken atomically in the store (`Store.claim_batches`: FOR UPDATE SKIP LOCKED on Postgres, a
conditional UPDATE on SQLite). The replica that accepts a job leases it at once; the lease is
renewed at every chunk and every `lease_s / 3` while a chunk runs. `sweep` (run every `sweep_s`
by every replica) takes over the jobs whose lease expired: a replica that dies stops renewing,
and within `lease_s` + `sweep_s` another one resumes the job. A clean shutdown releases its
leases, so another replica resumes at its next sweep.

A job's pending items are those without a stored result; they run in chunks of `chunk_size`:
per chunk, items are grouped by `model`, each group answered by its router at once in grouped
mode (`Runtime.answer_batch`: the same dispatcher, breakers and aggregation as chat), and the
chunk's results and traces are written in one transaction keyed by (batch id, index). A killed
replica therefore loses at most the chunk in flight (its successor answers it again: at most
`chunk_size` repeated upstream calls), and no result is ever stored twice.

Errors: a transient store error is retried with backoff (the job stays in progress, never
fails for it); a permanent error fails only the items it concerns (their results say why).
A request that cannot be answered (an unknown model, a router not fitted, a bad line of an input
file) fails alone: its error result is stored with the batch, the other requests are answered.
A request carrying tools or response_format is answered on its own, so a route that cannot honour
them fails that request only.

With an `engine` (ORCHESTRATOR_BATCH_ENGINE=ray: orchestrator/ray_engine.py), each chunk's expert
groups run on a Ray cluster, on one actor per expert that lives for the job (`engine.job()`: each
model loaded once per job, not per chunk); routing, aggregation and the store writes stay here, so a
group Ray re-runs after losing a node still gives one result per item, stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from experts.errors import ConfigError
from experts.registry import UnknownExpert
from orchestrator.execution import GroupEngine
from orchestrator.gateway import errors as E
from orchestrator.gateway.batch_files import BatchLine
from orchestrator.gateway.queries import chat_completion, failure_error, query_from, resolve_model
from orchestrator.pipeline import QueryResult, Runtime
from orchestrator.protocol import BatchCreate, BatchRequestItem
from orchestrator.residency import ResidencyManager
from routers.base import Router
from routers.types import Query, RoutingError, UnsupportedRequest
from store.records import BatchItemRecord, BatchRecord, ExpertCallRecord, TraceRecord
from store.trace_writer import is_transient

logger = logging.getLogger("orchestrator.gateway.batches")

CallsHook = Callable[[list[ExpertCallRecord]], None]
MAX_UNEXPECTED_ERRORS = 5  # consecutive non-transient job-level errors before a job is marked failed


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
        replica_id: str | None = None,
        chunk_size: int = 32,
        pause_s: float = 0.0,
        default_max_tokens: int = 256,
        lease_s: float = 30.0,
        max_jobs: int = 4,
        retry_min_s: float = 0.2,
        retry_max_s: float = 10.0,
        on_calls: CallsHook | None = None,
        registry: CollectorRegistry | None = None,
        engine: GroupEngine | None = None,
    ) -> None:
        self.runtime = runtime
        self.engine = engine  # where expert groups run (None: in this process; a RayEngine: on a Ray cluster)
        self.replica_id = replica_id or f"batch-runner-{secrets.token_hex(4)}"
        self.chunk_size = max(1, chunk_size)
        self.pause_s = pause_s
        self.default_max_tokens = default_max_tokens
        self.lease_s = lease_s
        self.max_jobs = max(1, max_jobs)
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.on_calls = on_calls
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        # Batch metrics join the app's registry (no process-global state).
        self.items_done = Counter("orchestrator_batch_items", "batch requests answered", ["status"], registry=registry)
        self.retries = Counter("orchestrator_batch_retries", "batch chunks retried after a transient error", registry=registry)
        self.takeovers = Counter("orchestrator_batch_takeovers", "batch jobs this replica took over from the store", registry=registry)
        running = Gauge("orchestrator_batch_jobs_running", "batch jobs running in this process", registry=registry)
        running.set_function(lambda: len(self._running))

    # ------------------------------------------------------------------ lifecycle
    async def sweep(self) -> list[str]:
        """Lease the unfinished jobs nobody holds (up to `max_jobs` running here) and run them;
        returns the ids started. Every replica calls this every `sweep_s`."""
        store = self.runtime.store
        started = []
        for batch_id, status in await store.claim_batches(self.replica_id, self.lease_s, limit=self.max_jobs - len(self._running)):
            if status == "cancelling":  # its holder died before it could stop: stop it here
                await store.set_batch_status(batch_id, "cancelled", only_from=("cancelling",))
                continue
            if self._start(batch_id):
                self.takeovers.inc()
                started.append(batch_id)
        if started:
            logger.info("took over %d batch job(s) with no live lease: %s", len(started), ", ".join(started))
        return started

    async def resume(self) -> list[str]:
        """At start: take over what stopped replicas left (`sweep`)."""
        return await self.sweep()

    async def aclose(self) -> None:
        """Stop the jobs running here and release their leases (the next sweep of any replica
        resumes them from their stored state)."""
        held = list(self._running)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for batch_id in held:
            try:
                await asyncio.wait_for(self.runtime.store.release_batch_lease(batch_id, self.replica_id), 5.0)
            except Exception as e:  # noqa: BLE001 - the lease then simply expires
                logger.warning("could not release the lease on batch %s (%s); it expires in at most %.0f s", batch_id, e, self.lease_s)

    def _start(self, batch_id: str) -> bool:
        if batch_id in self._running:
            return False
        task = asyncio.create_task(self._run(batch_id), name=f"batch:{batch_id}")
        self._tasks.add(task)
        self._running[batch_id] = task

        def _done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._running.pop(batch_id, None)

        task.add_done_callback(_done)
        return True

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
        # Leased to this replica from the start: no other replica's sweep takes it meanwhile.
        await self.runtime.store.create_batch(rec, refused, lease_owner=self.replica_id, lease_s=self.lease_s)
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
            # A job some replica holds stops at its next chunk boundary; one held by nobody stops now.
            await store.cancel_batch(batch_id)
        got = await store.get_batch(batch_id, owner=owner)
        assert got is not None
        return got

    # ------------------------------------------------------------------ the work
    async def _run(self, batch_id: str) -> None:
        """Run a job this replica holds the lease of, until done, cancelled, or the lease is lost."""
        with self._job_engine() as engine:  # a Ray engine: each expert's actor lives for this job (all passes)
            await self._run_passes(batch_id, engine)

    async def _run_passes(self, batch_id: str, engine: GroupEngine | None) -> None:
        delay = self.retry_min_s
        unexpected = 0
        while True:
            try:
                if await self._run_chunks(batch_id, engine):
                    return
                delay, unexpected = self.retry_min_s, 0
            except asyncio.CancelledError:
                raise  # shutdown: aclose releases the lease
            except Exception as e:  # noqa: BLE001 - a transient error is retried for as long as it lasts
                if is_transient(e):
                    logger.warning("batch %s: store unavailable (%s: %s); retrying in %.1f s", batch_id, type(e).__name__,
                                   str(e)[:200], delay)
                else:
                    # Item-level failures never get here (they become failed items); this is a
                    # bug or a corrupt job record: a few tries, then the job is marked failed.
                    unexpected += 1
                    logger.exception("batch %s: unexpected error (%d of %d)", batch_id, unexpected, MAX_UNEXPECTED_ERRORS)
                    if unexpected >= MAX_UNEXPECTED_ERRORS:
                        await self._fail(batch_id, e)
                        return
                self.retries.inc()
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)

    async def _fail(self, batch_id: str, e: Exception) -> None:
        try:
            await self.runtime.store.set_batch_status(batch_id, "failed", error=f"{type(e).__name__}: {e}"[:2000],
                                                      only_from=("in_progress", "cancelling"))
        except Exception:  # noqa: BLE001 - the lease expires and another replica tries again
            logger.exception("could not mark batch %s failed", batch_id)

    def _job_engine(self) -> AbstractContextManager[GroupEngine | None]:
        return self.engine.job() if self.engine is not None else contextlib.nullcontext()

    async def _run_chunks(self, batch_id: str, engine: GroupEngine | None = None) -> bool:
        """One pass over the job's pending items; True when the job needs nothing more from this
        replica (finished, cancelled, gone or leased to another), False to run it again."""
        store = self.runtime.store
        rec = await store.get_batch(batch_id, with_requests=True)
        if rec is None:
            return True
        done = await store.batch_done_indices(batch_id)
        pending = [i for i in range(rec.total) if i not in done]
        items = {i: BatchRequestItem.model_validate(rec.requests[i]) for i in pending}  # refused ones are done
        for start in range(0, len(pending), self.chunk_size):
            status = await store.renew_batch_lease(batch_id, self.replica_id, self.lease_s)
            if status != "in_progress":
                if status == "cancelling":
                    await store.set_batch_status(batch_id, "cancelled", only_from=("cancelling",))
                elif status is None:
                    logger.warning("batch %s: lease lost (another replica holds it, or it finished); stopping here", batch_id)
                return True
            chunk = pending[start : start + self.chunk_size]
            async with self._renewing(batch_id):
                results, traces = await self._execute(chunk, items, rec.owner, engine)
            await self._save(batch_id, results, traces)
            if self.runtime.telemetry is not None:  # stored items become OTel spans too, as chat requests do
                for trace in traces:
                    self.runtime.telemetry.export(trace, self.runtime.registry)
            for r in results:
                self.items_done.labels("ok" if r.ok else "error").inc()
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
        if len(await store.batch_done_indices(batch_id)) < rec.total:
            return False  # an item is still missing (it could not be stored): another pass
        if not await store.set_batch_status(batch_id, "completed", only_from=("in_progress",)):
            await store.set_batch_status(batch_id, "cancelled", only_from=("cancelling",))
        return True

    def _renewing(self, batch_id: str) -> "_LeaseHeartbeat":
        return _LeaseHeartbeat(self, batch_id)

    async def _save(self, batch_id: str, results: list[BatchItemRecord], traces: list[TraceRecord]) -> None:
        """Store a chunk in one transaction; if the store refuses it for good, item by item, and an
        item it refuses is stored as a failed item saying why (a transient error is raised for
        `_run` to retry)."""
        store = self.runtime.store
        try:
            await store.save_batch_items(batch_id, results, traces)
            return
        except Exception as e:  # noqa: BLE001
            if is_transient(e):
                raise
            logger.error("batch %s: the store refused a chunk (%s: %s); storing its items one by one", batch_id,
                         type(e).__name__, str(e)[:200])
        by_trace = {t.id: t for t in traces}
        for item in results:
            trace = by_trace.get(item.trace_id or "")
            try:
                await store.save_batch_items(batch_id, [item], [trace] if trace else [])
            except Exception as e:  # noqa: BLE001
                if is_transient(e):
                    raise
                # what the store said stays in the log (it can name tables and values); the caller learns that it broke
                logger.error("batch %s: the store refused item %d (%s: %s)", batch_id, item.idx, type(e).__name__, str(e)[:300])
                err = E.APIError("the result could not be stored; the gateway's log has the details", code="result_not_stored")
                await store.save_batch_items(batch_id, [BatchItemRecord(idx=item.idx, custom_id=item.custom_id, ok=False,
                                                                         status_code=err.status_code, body=E.error_body(err))])

    async def _execute(self, chunk: Sequence[int], items: dict[int, BatchRequestItem], owner: str | None,
                       engine: GroupEngine | None = None) -> tuple[list[BatchItemRecord], list[TraceRecord]]:
        by_model: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i in chunk:
            # a request with tools is a group of its own: a route that cannot honour them fails it alone
            by_model[(items[i].body.model, i if items[i].body.passthrough() else -1)].append(i)
        out: list[BatchItemRecord] = []
        traces: list[TraceRecord] = []
        for (model, _), idxs in by_model.items():
            try:
                answered = await self._answer_group(model, [items[i] for i in idxs], engine)
            except E.APIError as err:
                out += [_error_item(i, items[i].custom_id, err) for i in idxs]
                continue
            except Exception as e:  # noqa: BLE001 - a transient one is retried by _run; others fail these items only
                if is_transient(e):
                    raise
                logger.exception("batch items for model %s failed", model)
                err = E.APIError("internal error answering this item; the gateway's log has the details")
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

    async def _answer_group(self, model: str, group: list[BatchRequestItem],
                            engine: GroupEngine | None = None) -> list[tuple[Query, QueryResult]]:
        """Answer the requests of one model together (grouped mode, through the runtime's
        dispatcher and aggregation: the path chat requests take); every item gets a QueryResult."""
        name, _router, options = await self._router_for(model)
        queries = [query_from(it.body, self.default_max_tokens) for it in group]
        # Every expert may stay resident (the registry may have changed since the last chunk):
        # batch jobs share the process with interactive traffic, which loads the same backends.
        residency = ResidencyManager(self.runtime.registry, capacity=max(1, len(self.runtime.registry)))
        try:
            results = await self.runtime.answer_batch(queries, name, options=options, residency=residency, engine=engine)
        except UnsupportedRequest as e:  # tools on a route that cannot honour them
            raise E.BadRequest(str(e), param="body.tools", code="unsupported_for_route") from None
        return list(zip(queries, results, strict=True))


class _LeaseHeartbeat:
    """Renews a job's lease every `lease_s / 3` while one chunk runs (a chunk may outlast a lease)."""

    def __init__(self, runner: BatchRunner, batch_id: str) -> None:
        self.runner, self.batch_id = runner, batch_id
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        every = max(0.05, self.runner.lease_s / 3)
        while True:
            await asyncio.sleep(every)
            t0 = time.monotonic()
            try:
                status = await self.runner.runtime.store.renew_batch_lease(self.batch_id, self.runner.replica_id, self.runner.lease_s)
            except Exception as e:  # noqa: BLE001 - try again next beat; the lease may run out meanwhile
                logger.warning("batch %s: could not renew its lease (%s)", self.batch_id, e)
                continue
            if status is None:
                logger.warning("batch %s: lease lost during a chunk (renewal after %.2f s)", self.batch_id, time.monotonic() - t0)
                return

    async def __aenter__(self) -> "_LeaseHeartbeat":
        self._task = asyncio.create_task(self._beat(), name=f"lease:{self.batch_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
