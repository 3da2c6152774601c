"""Traces written off the request path: one supervised background task, batched, never losing a trace.

    writer = TraceWriter(store, journal=TraceJournal.open(directory, replica_id))
    await writer.start()
    await writer.put(trace)          # journaled at once; waits only while the queue is full
    writer.healthy                   # False while the store refuses writes or the task restarts
    await writer.aclose()            # flushes what it can; the journal keeps the rest

Why: one INSERT transaction per request on the request path serialises every request on the
database's write lock (SQLite) or a pool connection (Postgres). Here one task commits whatever has
accumulated in ONE transaction (at most one commit per `min_interval_s`), so the write cost is
shared by a batch.

Never loses a trace:
* `put` appends the trace to the local journal (store/trace_journal.py) before it returns, so a
  trace is in the kernel's hands before its request is answered: a SIGKILL loses none, and the
  next start of any replica sharing the journal directory replays what was not committed.
* A batch that fails to commit is kept and retried with backoff until the store takes it;
  meanwhile `healthy` is False, so the gateway fails new requests fast (503) and `/ready` says why.
* A batch the store refuses for good (a row that breaks a constraint) is written one trace at a
  time; the refused ones are set aside in an `unsaved-traces-*.jsonl` file, the others committed.
* The task is supervised: whatever ends it (a transient error while isolating a bad batch, a
  bug) marks the writer unhealthy, is logged, and the task is restarted after a backoff with
  every uncommitted trace still held.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from store.db import StoreUnavailable
from store.records import TraceRecord
from store.repository import Store
from store.trace_journal import TraceJournal

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


def spill(directory: Path, traces: list[TraceRecord]) -> Path:
    """Append traces the store refuses for good to `unsaved-traces-<time>.jsonl` (kept for a human)."""
    path = directory / f"unsaved-traces-{int(time.time())}.jsonl"
    with path.open("a") as f:
        for t in traces:
            f.write(t.model_dump_json() + "\n")
    return path


class TraceQueueFull(Exception):
    """Raised by `put` when the queue stayed full for `put_timeout_s` (the store is too slow)."""


_Held = tuple[TraceRecord, "int | None", float]  # a trace, its journal segment, when it was put (monotonic)


class TraceWriter:
    def __init__(
        self,
        store: Store,
        *,
        journal: TraceJournal | None = None,
        max_queue: int = 10_000,
        max_batch: int = 512,
        put_timeout_s: float = 5.0,
        retry_min_s: float = 0.2,
        retry_max_s: float = 5.0,
        min_interval_s: float = 0.05,
        spill_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.journal = journal
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.put_timeout_s = put_timeout_s
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.min_interval_s = min_interval_s
        self.spill_dir = spill_dir or (journal.directory if journal is not None else Path.cwd())
        # Traces accepted and not yet committed, oldest first (served to readers before they land).
        self._pending: OrderedDict[str, _Held] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._store_error: str | None = None  # the last commit failed (cleared by a commit)
        self._crash: str | None = None  # the task ended and is being restarted
        self._journal_error: str | None = None  # the last journal append failed
        self.written = 0
        self.commits = 0
        self.rejected = 0  # traces the store refused for good (spilled to a JSONL file)
        self.failed_attempts = 0
        self.restarts = 0
        self.commit_lag_s = 0.0
        self.commit_lag_max_s = 0.0
        self._lags: deque[float] = deque(maxlen=1000)  # of the last commits

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name="trace-writer")

    # ------------------------------------------------------------------ state
    @property
    def healthy(self) -> bool:
        return self._store_error is None and self._crash is None and self._journal_error is None

    @property
    def last_error(self) -> str | None:
        return self._crash or self._store_error or self._journal_error

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def pending(self, trace_id: str) -> TraceRecord | None:
        held = self._pending.get(trace_id)
        return held[0] if held is not None else None

    def snapshot(self) -> dict[str, Any]:
        """What `/ready` reports."""
        return {
            "healthy": self.healthy, "error": self.last_error, "backlog": self.backlog, "written": self.written,
            "rejected": self.rejected, "restarts": self.restarts, "commits": self.commits,
            "commit_lag_ms": self._lag_percentiles(), "commit_lag_max_ms": round(self.commit_lag_max_s * 1000, 1),
            "journaled": self.journal.outstanding if self.journal is not None else None,
        }

    def _lag_percentiles(self) -> dict[str, float]:
        """p50 / p99 / max of the commit lag over the last 1000 commits, in ms."""
        lags = sorted(self._lags)
        if not lags:
            return {}
        pick = lambda q: round(lags[min(len(lags) - 1, int(q * len(lags)))] * 1000, 1)  # noqa: E731
        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(lags[-1] * 1000, 1)}

    # ------------------------------------------------------------------ producers
    async def put(self, trace: TraceRecord) -> None:
        """Journal and queue a trace; waits (backpressure) while the queue is full, up to `put_timeout_s`."""
        if self._task is None:
            raise RuntimeError("TraceWriter.start() was not called")
        if len(self._pending) >= self.max_queue:
            try:
                await asyncio.wait_for(self._wait_for_room(), self.put_timeout_s)
            except asyncio.TimeoutError:
                raise TraceQueueFull(f"{self.max_queue} traces are waiting for the store; retry shortly") from None
        self.put_nowait(trace)

    def put_nowait(self, trace: TraceRecord) -> None:
        """Journal and queue a trace without waiting, even over the queue bound (for the trace of
        a request being cancelled, which cannot wait)."""
        segment = None
        if self.journal is not None:
            try:
                segment = self.journal.append(trace)
                if self._journal_error is not None:
                    logger.warning("the trace journal is writable again")
                    self._journal_error = None
            except OSError as e:  # the trace is still held in memory and committed when it can be
                if self._journal_error is None:
                    logger.error("cannot append to the trace journal in %s: %s", self.journal.directory, e)
                self._journal_error = f"trace journal: {type(e).__name__}: {e}"
        self._pending[trace.id] = (trace, segment, time.monotonic())
        self._idle.clear()
        self._wake.set()

    async def _wait_for_room(self) -> None:
        while len(self._pending) >= self.max_queue:
            self._room.clear()
            await self._room.wait()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every queued trace is committed; False if `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    # ------------------------------------------------------------------ the task
    async def _supervise(self) -> None:
        delay = self.retry_min_s
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever ended the loop: report, restart, keep every trace
                self.restarts += 1
                self._crash = f"trace writer restarting after {type(e).__name__}: {str(e)[:200]}"
                logger.error("the trace writer stopped (%s: %s); restarting in %.1f s with %d trace(s) held",
                             type(e).__name__, str(e)[:200], delay, len(self._pending), exc_info=e)
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
                if not self._pending:
                    self._crash = None  # nothing held: nothing left to prove by a commit

    async def _run(self) -> None:
        delay = self.retry_min_s
        syncing: asyncio.Task[None] | None = None
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.monotonic()
            batch = list(itertools.islice(self._pending.values(), self.max_batch))
            try:
                await self.store.save_traces([h[0] for h in batch])
            except Exception as e:  # noqa: BLE001 - any store failure: keep the batch
                if not is_transient(e):
                    # A trace the store will never take must not block every later one. A
                    # transient error while isolating ends this loop: the supervisor restarts it.
                    await self._isolate(batch)
                    continue
                self.failed_attempts += 1
                if self._store_error is None:
                    logger.warning("trace store write failed (%s: %s); retrying, %d traces held",
                                   type(e).__name__, str(e)[:200], len(self._pending))
                self._store_error = f"{type(e).__name__}: {str(e)[:200]}"
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
                continue
            self.commits += 1
            # How long the oldest trace of the batch waited to be committed: without the journal,
            # what a SIGKILL would lose; with it, about what a power cut could (fsync follows).
            self.commit_lag_s = time.monotonic() - batch[0][2]
            self.commit_lag_max_s = max(self.commit_lag_max_s, self.commit_lag_s)
            self._lags.append(self.commit_lag_s)
            self._resolve(batch)
            if self._store_error is not None or self._crash is not None:
                logger.warning("trace store is writable again; %d traces held", len(self._pending))
            self._store_error, self._crash, delay = None, None, self.retry_min_s
            if self.journal is not None and (syncing is None or syncing.done()):
                # Bound what a power cut could lose to about one interval, off the event loop.
                syncing = asyncio.create_task(asyncio.to_thread(self.journal.sync))
            # At most one commit per interval: idle, a trace is written at once; under load, the
            # traces of the interval share one transaction (a commit costs ~1 ms of loop CPU).
            await asyncio.sleep(max(0.0, self.min_interval_s - (time.monotonic() - started)))

    def _resolve(self, held: list[_Held], *, written: bool = True) -> None:
        """These traces are committed (or set aside): drop them from memory and the journal."""
        for t, segment, _put_at in held:
            self._pending.pop(t.id, None)
            if segment is not None and self.journal is not None:
                self.journal.resolved(segment)
        if written:
            self.written += len(held)
        if len(self._pending) < self.max_queue:
            self._room.set()
        if not self._pending:
            self._idle.set()

    async def _isolate(self, batch: list[_Held]) -> None:
        rejected: list[tuple[_Held, str]] = []
        try:
            for held in batch:
                try:
                    await self.store.save_traces([held[0]])
                except Exception as e:  # noqa: BLE001
                    if is_transient(e):  # the store went away meanwhile: the supervisor restarts the loop
                        raise
                    rejected.append((held, f"{type(e).__name__}: {str(e)[:300]}"))
                    continue
                self._resolve([held])
        finally:  # set aside what was refused so far, whatever ends the isolation
            if rejected:
                path = spill(self.spill_dir, [h[0] for h, _ in rejected])
                self.rejected += len(rejected)
                self._resolve([h for h, _ in rejected], written=False)
                logger.error("the store rejected %d trace(s) (%s); saved in %s", len(rejected), rejected[0][1], path)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Flush, stop the task. What the store still would not take stays in the journal (replayed
        by the next start) or, without a journal, is spilled to a JSONL file."""
        if self._task is None:
            return
        await self.flush(timeout_s)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        left = list(self._pending.values())
        if left:
            try:
                await asyncio.wait_for(self.store.save_traces([h[0] for h in left]), timeout_s)
                self._resolve(left)
                left = []
            except Exception as e:  # noqa: BLE001
                self._store_error = f"{type(e).__name__}: {e}"
        if left:
            unjournaled = [h[0] for h in left if h[1] is None]
            if unjournaled:
                path = spill(self.spill_dir, unjournaled)
                logger.error("the store refused %d traces at shutdown; they are saved in %s", len(unjournaled), path)
            if len(unjournaled) < len(left):
                assert self.journal is not None
                logger.error("the store refused %d traces at shutdown; they stay in the journal in %s and are written "
                             "by the next start", len(left) - len(unjournaled), self.journal.directory)
        self._pending.clear()
        self._idle.set()
        if self.journal is not None:
            self.journal.close()
