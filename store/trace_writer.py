"""Traces written off the request path: one background task, batched, never losing a trace.

    writer = TraceWriter(store)
    await writer.start()
    await writer.put(trace)          # returns at once; waits only when the queue is full
    writer.healthy                   # False while the store refuses writes (requests answer 503)
    await writer.aclose()            # flushes everything still queued

Why: one INSERT transaction per request on the request path serialises every request on the
database's write lock (SQLite) or a pool connection (Postgres). Here one task drains the queue
and commits whatever has accumulated in ONE transaction (at most one commit per
`min_interval_s`), so the write cost is shared by a batch.

Never loses a trace: a batch that fails to commit is kept and retried (with backoff) until the
store takes it; meanwhile `healthy` is False so the gateway fails new requests fast instead of
piling up answers it cannot record. At shutdown, traces that still cannot be written are spilled
to a JSONL file (named in the log) rather than dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from pathlib import Path

from store.db import StoreUnavailable
from store.records import TraceRecord
from store.repository import Store

logger = logging.getLogger("store.trace_writer")


def is_transient(exc: BaseException) -> bool:
    """A failure that retrying may cure (connection lost, server down or shutting down, timeout),
    not a bad row. Only errors that name the data itself (SQLSTATE classes 22 data, 23 integrity,
    42 syntax/undefined object) are permanent: losing a trace on a misread outage is worse than
    retrying a bad row a few times."""
    from sqlalchemy import exc as sa

    if isinstance(exc, (sa.IntegrityError, sa.DataError)):
        return False
    if isinstance(exc, sa.DBAPIError):
        orig = exc.orig
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(code, str) and code[:2] in ("22", "23", "42"):
            return False
        return True
    if isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError, StoreUnavailable)):
        return True
    return bool(getattr(exc, "connection_invalidated", False))


class TraceQueueFull(Exception):
    """Raised by `put` when the queue stayed full for `put_timeout_s` (the store is too slow)."""


class TraceWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_queue: int = 10_000,
        max_batch: int = 512,
        put_timeout_s: float = 5.0,
        retry_min_s: float = 0.2,
        retry_max_s: float = 5.0,
        min_interval_s: float = 0.05,
        spill_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.put_timeout_s = put_timeout_s
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.min_interval_s = min_interval_s
        self.spill_dir = spill_dir or Path.cwd()
        self._queue: asyncio.Queue[TraceRecord] = asyncio.Queue(maxsize=max_queue)
        # Traces accepted but not yet committed, by id (served to readers before they land).
        self._pending: OrderedDict[str, TraceRecord] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.healthy = True
        self.last_error: str | None = None
        self.written = 0
        self.commits = 0
        self.rejected = 0  # traces the store refused for good (spilled to a JSONL file)
        self.failed_attempts = 0

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="trace-writer")

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def pending(self, trace_id: str) -> TraceRecord | None:
        return self._pending.get(trace_id)

    async def put(self, trace: TraceRecord) -> None:
        """Queue a trace; waits (backpressure) while the queue is full, up to `put_timeout_s`."""
        if self._task is None:
            raise RuntimeError("TraceWriter.start() was not called")
        self._pending[trace.id] = trace
        self._idle.clear()
        try:
            self._queue.put_nowait(trace)
        except asyncio.QueueFull:
            try:
                await asyncio.wait_for(self._queue.put(trace), self.put_timeout_s)
            except asyncio.TimeoutError:
                self._pending.pop(trace.id, None)
                raise TraceQueueFull(f"{self._queue.maxsize} traces are waiting for the store; retry shortly") from None

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued trace is committed; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def _run(self) -> None:
        delay = self.retry_min_s
        while True:
            batch = [await self._queue.get()]
            started = time.monotonic()
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self.store.save_traces(batch)
                    self.commits += 1
                    break
                except asyncio.CancelledError:
                    for t in reversed(batch):  # keep them for aclose's final attempt / spill
                        self._requeue_front(t)
                    raise
                except Exception as e:  # noqa: BLE001 - any store failure: keep the batch, retry
                    if not is_transient(e):
                        # A trace the store will never take (a constraint it breaks) must not
                        # block every later one: write the batch one by one, spill the rejects.
                        await self._isolate(batch)
                        break
                    self.failed_attempts += 1
                    if self.healthy:
                        logger.warning("trace store write failed (%s: %s); retrying, %d traces held", type(e).__name__, str(e)[:200], len(self._pending))
                    self.healthy, self.last_error = False, f"{type(e).__name__}: {str(e)[:200]}"
                    await asyncio.sleep(delay)
                    delay = min(self.retry_max_s, delay * 2)
            if not self.healthy:
                logger.warning("trace store is writable again; %d traces held", len(self._pending))
            self.healthy, self.last_error, delay = True, None, self.retry_min_s
            self.written += len(batch)
            for t in batch:
                self._pending.pop(t.id, None)
            if not self._pending:
                self._idle.set()
            # At most one commit per interval: idle, a trace is written at once; under load, the
            # traces of the interval share one transaction (a commit costs ~1 ms of loop CPU).
            await asyncio.sleep(max(0.0, self.min_interval_s - (time.monotonic() - started)))

    async def _isolate(self, batch: list[TraceRecord]) -> None:
        rejected = []
        for t in batch:
            try:
                await self.store.save_traces([t])
            except Exception as e:  # noqa: BLE001
                if is_transient(e):  # the store went away meanwhile: keep it for the retry loop
                    raise
                rejected.append((t, f"{type(e).__name__}: {str(e)[:300]}"))
        if rejected:
            path = self._spill([t for t, _ in rejected])
            self.rejected += len(rejected)
            logger.error("the store rejected %d trace(s) (%s); saved in %s", len(rejected), rejected[0][1], path)

    def _spill(self, traces: list[TraceRecord]) -> Path:
        path = self.spill_dir / f"unsaved-traces-{int(time.time())}.jsonl"
        with path.open("a") as f:
            for t in traces:
                f.write(t.model_dump_json() + "\n")
        return path

    def _requeue_front(self, trace: TraceRecord) -> None:
        # the batch stays in _pending; aclose writes everything in _pending
        self._pending.move_to_end(trace.id, last=False)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Flush, stop the task; spill what the store would not take to a JSONL file."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        left = list(self._pending.values())
        if left:
            try:
                await asyncio.wait_for(self.store.save_traces(left), timeout_s)
                left = []
            except Exception as e:  # noqa: BLE001
                self.last_error = f"{type(e).__name__}: {e}"
        if left:
            path = self._spill(left)
            logger.error("the store refused %d traces at shutdown; they are saved in %s", len(left), path)
        self._pending.clear()
        self._idle.set()
