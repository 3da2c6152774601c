"""Per-expert request queues that coalesce concurrent requests into backend batches.

    dispatcher = Dispatcher(registry)
    result = await dispatcher.submit("qwen2.5-7b", request)       # batched with its neighbours
    outcome = await dispatcher.call(assignment)                      # + fallback expert on failure
    results = await dispatcher.submit_many("qwen2.5-7b", requests)   # grouped work: waits for room
    result = await dispatcher.stream("qwen2.5-7b", request, on_delta)  # tokens as they come
    await dispatcher.aclose()

Each expert gets one bounded `asyncio.Queue` and one collector task. The collector takes the
first waiting request, then keeps taking until the batch holds `max_batch_size` requests or
`max_wait_ms` has passed, and sends the batch as ONE backend call while at most
`max_concurrency` batches are in flight. A full queue rejects an interactive request at once
with `ExpertOverloaded` (retryable), so memory stays bounded under overload; grouped work
(`submit_many`: batch jobs, benchmarks) waits for room instead, so one expert's whole group
streams through the same queue, breaker and concurrency bound as chat traffic. A streamed
request (`stream`: the answering call of a streaming chat request) is never batched, since its
tokens go to one caller, but takes one of the expert's concurrency slots and answers to its breaker.

Each backend call is one result for the expert's circuit breaker, recorded with the ticket of
the epoch its requests were admitted in (orchestrator/circuit.py). A caller that gives up (a
client disconnect cancels its task) cancels its request; a backend call whose every caller gave
up is cancelled, which closes its upstream connections. `retire` swaps an expert's queue when
the registry replaces or removes it: new calls get a queue over the new backend, queued ones
finish on the old.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from experts.errors import ExpertError, ExpertOverloaded, ExpertTimeout, ExpertUnavailable
from experts.registry import ExpertRegistry
from orchestrator.circuit import CircuitBreaker, Ticket, counts_as_failure
from orchestrator.memo import GenerationMemo, memo_key
from experts.types import DeltaHandler, GenerationRequest, GenerationResult
from routers.types import Assignment


@dataclass
class CallAttempt:
    """One expert call as the trace records it."""

    expert: str
    result: GenerationResult
    fallback_for: str | None = None


@dataclass
class CallOutcome:
    """The final result of an assignment, with every attempt (primary, then fallback)."""

    attempts: list[CallAttempt]

    @property
    def final(self) -> CallAttempt:
        return self.attempts[-1]

    @property
    def ok(self) -> bool:
        return self.final.result.ok


@dataclass
class QueueStats:
    backend_calls: int = 0
    requests: int = 0
    rejected: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)


@dataclass
class _Pending:
    request: GenerationRequest
    future: asyncio.Future[GenerationResult]
    ticket: Ticket | None = None


class _ExpertQueue:
    def __init__(self, name: str, registry: ExpertRegistry, stats: QueueStats, on_batch: "BatchObserver | None",
                 breaker: CircuitBreaker) -> None:
        spec = registry.spec(name)
        self.name = name
        self.backend = registry.backend(name)
        self.breaker = breaker
        self.max_batch = spec.max_batch_size
        self.max_wait = spec.max_wait_ms / 1000.0
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=spec.max_queue)
        self.slots = asyncio.Semaphore(spec.max_concurrency)
        self.stats = stats
        self.on_batch = on_batch
        self.inflight: set[asyncio.Task[None]] = set()
        self.submit_timeout_s = spec.timeout_s * (1 + spec.max_retries) + 5.0
        self.collector = asyncio.create_task(self._collect(), name=f"dispatch:{name}")

    def idle_unbatched(self) -> bool:
        """True when a request may skip the queue: no batching window, nothing waiting ahead
        of it, and a free concurrency slot (so the order and the bound are those of the queue)."""
        return self.max_wait <= 0 and self.queue.empty() and not self.slots.locked()

    @staticmethod
    def future() -> asyncio.Future[GenerationResult]:
        return asyncio.get_running_loop().create_future()

    async def put_waiting(self, req: GenerationRequest, ticket: Ticket | None = None) -> asyncio.Future[GenerationResult]:
        """Enqueue, waiting while the queue is full (backpressure for grouped work)."""
        fut = self.future()
        await self.queue.put(_Pending(req, fut, ticket))
        return fut

    def put(self, req: GenerationRequest, ticket: Ticket | None = None) -> asyncio.Future[GenerationResult]:
        fut = self.future()
        try:
            self.queue.put_nowait(_Pending(req, fut, ticket))
        except asyncio.QueueFull:
            self.stats.rejected += 1
            raise ExpertOverloaded(
                f"expert {self.name!r} has {self.queue.maxsize} requests waiting; retry later", expert=self.name
            ) from None
        return fut

    async def _collect(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                # Take what is already queued without waiting, then wait up to the deadline.
                try:
                    batch.append(self.queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            await self.slots.acquire()
            task = asyncio.create_task(self.run(batch))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

            def abandon(_f: object, task: asyncio.Task[None] = task, batch: list[_Pending] = batch) -> None:
                if all(p.future.cancelled() for p in batch):  # every caller gave up: stop the call
                    task.cancel()

            for p in batch:
                p.future.add_done_callback(abandon)

    async def run(self, batch: list[_Pending]) -> None:
        """Send one batch (its concurrency slot already taken; released here) and record its
        outcome on the breaker once."""
        try:
            live = []
            for p in batch:
                if p.future.done():  # the caller gave up before it was sent
                    self.breaker.release(p.ticket)
                else:
                    live.append(p)
            if not live:
                return
            self.stats.backend_calls += 1
            self.stats.requests += len(live)
            self.stats.batch_sizes[len(live)] += 1
            if self.on_batch is not None:
                self.on_batch(self.name, len(live), self.queue.qsize())
            try:
                results = await self.backend.generate([p.request for p in live])
            except asyncio.CancelledError:
                for p in live:  # cut short (its callers left): says nothing about the expert
                    self.breaker.release(p.ticket)
                raise
            except Exception as e:  # a backend bug must not strand its callers
                err = ExpertUnavailable(f"expert {self.name!r} failed: {type(e).__name__}: {e}", expert=self.name)
                results = [GenerationResult.failed(err) for _ in live]
            self._record(live, results)
            for p, r in zip(live, results, strict=True):
                if not p.future.done():
                    p.future.set_result(r)
        finally:
            self.slots.release()

    def _record(self, live: list[_Pending], results: list[GenerationResult]) -> None:
        """One backend call is one result for the breaker: ok if any request got an answer, a
        failure if any failed in a way that says the expert is unwell, else nothing. It counts
        in the epoch of its probe if it carried one, else of its newest admission."""
        tickets = [p.ticket for p in live if p.ticket is not None]
        ticket = next((t for t in tickets if t.probe), None) or max(tickets, key=lambda t: t.epoch, default=None)
        if any(r.ok for r in results):
            self.breaker.record(ok=True, ticket=ticket)
        elif any(counts_as_failure(r.error) for r in results):
            self.breaker.record(ok=False, ticket=ticket)
        else:
            self.breaker.release(ticket)
        for t in tickets:  # any other probe ticket in the batch
            if t is not ticket:
                self.breaker.release(t)

    async def drain(self, grace_s: float) -> None:
        """Let what is queued and in flight finish (up to `grace_s`), then close."""
        deadline = time.monotonic() + grace_s
        while (not self.queue.empty() or self.inflight) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.aclose()

    async def aclose(self) -> None:
        self.collector.cancel()
        for t in list(self.inflight):
            t.cancel()
        await asyncio.gather(self.collector, *self.inflight, return_exceptions=True)
        while not self.queue.empty():
            p = self.queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(ExpertUnavailable(f"dispatcher closed before {self.name!r} answered", expert=self.name))


class BatchObserver:
    """Called with (expert, batch_size, queue_depth) for every backend call (metrics hook)."""

    def __call__(self, expert: str, batch_size: int, queue_depth: int) -> None:  # pragma: no cover - protocol
        ...


class Dispatcher:
    """Schedules expert calls: one coalescing queue per expert, fallback on failure."""

    def __init__(self, registry: ExpertRegistry, *, on_batch: BatchObserver | None = None,
                 memo: GenerationMemo | None = None) -> None:
        self.registry = registry
        # A run's memo (a live bench): identical temperature-0 requests to one expert generated once
        self.memo = memo
        self._queues: dict[str, _ExpertQueue] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self.stats: dict[str, QueueStats] = {}
        self._on_batch = on_batch
        self._closed = False

    def _queue(self, expert: str) -> _ExpertQueue:
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        name = self.registry.resolve(expert)
        q = self._queues.get(name)
        if q is None:
            stats = self.stats.setdefault(name, QueueStats())
            q = self._queues[name] = _ExpertQueue(name, self.registry, stats, self._on_batch, self.breaker(name))
        return q

    def detach(self, expert: str) -> "_ExpertQueue | None":
        """Forget an expert's queue and breaker at once (the registry replaced or removed it): the
        next call builds both afresh from the registry. Returns the old queue, whose `drain` lets
        the calls already in it finish on the old backend."""
        self._breakers.pop(expert, None)
        return self._queues.pop(expert, None)

    async def retire(self, expert: str, *, grace_s: float = 30.0) -> None:
        """`detach`, then drain the old queue (up to `grace_s`)."""
        q = self.detach(expert)
        if q is not None:
            await q.drain(grace_s)

    def queue_depth(self, expert: str) -> int:
        q = self._queues.get(self.registry.resolve(expert))
        return q.queue.qsize() if q else 0

    async def submit(self, expert: str, request: GenerationRequest) -> GenerationResult:
        """One request to one expert, batched with concurrent requests to the same expert.

        Raises `ExpertOverloaded` when the expert's queue is full; other failures come back in
        the result's `error`. The wait is bounded by the expert's timeout. With a memo, a
        temperature-0 request already answered (or in flight) is not sent again."""
        if self.memo is not None:
            key = memo_key(self.registry.resolve(expert), request)
            if key is not None:
                return await self._submit_memo(self.memo, key, expert, request)
        return await self._submit(expert, request)

    async def _submit_memo(self, memo: GenerationMemo, key: bytes, expert: str, request: GenerationRequest) -> GenerationResult:
        while True:
            hit = memo.get(key)
            if hit is not None:
                return hit
            fut = memo.inflight(key)
            if fut is None:
                break
            try:  # the same call is in flight: its outcome is ours (a failure too, as coalescing would give)
                result = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if fut.cancelled():  # its caller gave up, not us: claim it ourselves
                    continue
                raise
            memo.hits += 1
            return result
        memo.begin(key)
        result = None
        try:
            result = await self._submit(expert, request)
        finally:
            memo.finish(key, result)
        return result

    async def _submit(self, expert: str, request: GenerationRequest) -> GenerationResult:
        q = self._queue(expert)
        breaker = q.breaker
        ticket = breaker.allow()
        if ticket is None:
            return GenerationResult.failed(breaker.open_error(), attempts=0)  # fail fast: nothing is sent
        try:
            direct = q.idle_unbatched()
            fut = q.future() if direct else q.put(request, ticket)
        except ExpertOverloaded:
            breaker.release(ticket)
            raise
        timeout = q.submit_timeout_s
        try:
            if direct:
                # A batch of one with no window to wait for: run it in this task, skipping the
                # collector's hand-off (two tasks and a queue round trip per request).
                await q.slots.acquire()
                async with asyncio.timeout(timeout):
                    await q.run([_Pending(request, fut, ticket)])
                result = fut.result()
            else:
                async with asyncio.timeout(timeout):
                    result = await asyncio.shield(fut)
        except TimeoutError:
            fut.cancel()
            if direct:  # our own call overran every timeout of its backend: the expert is unwell
                breaker.record(ok=False, ticket=ticket)
            result = GenerationResult.failed(ExpertTimeout(f"expert {q.name!r} gave no answer within {timeout:.0f} s", expert=q.name))
        except BaseException:
            fut.cancel()  # queued: dropped unsent, or its batch cancelled once every caller left
            raise
        return result

    async def submit_many(
        self, expert: str, requests: list[GenerationRequest], *, on_result: "Callable[[int], None] | None" = None
    ) -> list[GenerationResult]:
        """Many requests to one expert, results in their order: the grouped scheduler's way in.

        Requests are enqueued as room frees up (never rejected as overloaded) and coalesced into
        backend batches by the expert's collector like any other traffic. There is no deadline on
        the wait in the queue (a group of thousands waits its turn); each backend call keeps its
        own timeout. `on_result(done)` is called as results arrive (progress bars). With a memo,
        temperature-0 requests already answered, in flight, or repeated in the group are sent once."""
        if self.memo is not None and requests:
            return await self._submit_many_memo(self.memo, expert, requests, on_result)
        return await self._submit_many(expert, requests, on_result=on_result)

    async def _submit_many_memo(self, memo: GenerationMemo, expert: str, requests: list[GenerationRequest],
                                on_result: "Callable[[int], None] | None") -> list[GenerationResult]:
        name = self.registry.resolve(expert)
        keys = [memo_key(name, r) for r in requests]
        results: list[GenerationResult | None] = [None] * len(requests)
        send: list[int] = []  # indices sent to the expert
        claimed: dict[bytes, int] = {}  # key -> the index whose call answers it
        repeats: list[tuple[int, bytes]] = []  # the same request again in this group
        waits: list[tuple[int, asyncio.Future[GenerationResult]]] = []  # in flight elsewhere
        for i, key in enumerate(keys):
            if key is None:
                send.append(i)
            elif (hit := memo.get(key)) is not None:
                results[i] = hit
            elif key in claimed:
                repeats.append((i, key))
            elif (fut := memo.inflight(key)) is not None:
                waits.append((i, fut))
            else:
                memo.begin(key)
                claimed[key] = i
                send.append(i)
        offset = len(requests) - len(send) - len(repeats) - len(waits)  # answered from the memo already
        if on_result is not None and offset:
            on_result(offset)
        hook = None if on_result is None else (lambda done: on_result(offset + done))
        sent: list[GenerationResult] | None = None
        try:
            sent = await self._submit_many(expert, [requests[i] for i in send], on_result=hook)
        finally:
            position = {i: n for n, i in enumerate(send)}
            for key, i in claimed.items():
                memo.finish(key, sent[position[i]] if sent is not None else None)
        for i, r in zip(send, sent, strict=True):
            results[i] = r
        for i, key in repeats:
            results[i] = results[claimed[key]]
        for i, fut in waits:
            try:
                results[i] = await asyncio.shield(fut)
            except asyncio.CancelledError:
                if not fut.cancelled():
                    raise
                results[i] = await self.submit_or_error(expert, requests[i])  # its caller gave up: ask ourselves
        memo.hits += len(repeats) + len(waits)
        if on_result is not None and (repeats or waits):
            on_result(len(requests))
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    async def _submit_many(
        self, expert: str, requests: list[GenerationRequest], *, on_result: "Callable[[int], None] | None" = None
    ) -> list[GenerationResult]:
        if not requests:
            return []
        q = self._queue(expert)
        breaker = q.breaker
        done = 0
        results: list[GenerationResult | None] = [None] * len(requests)

        async def one(i: int, fut: "asyncio.Future[GenerationResult]") -> None:
            nonlocal done
            try:
                result = await fut
            except ExpertError as e:  # closed under us
                result = GenerationResult.failed(e)
            results[i] = result  # the breaker heard of it from the backend call (_ExpertQueue.run)
            done += 1
            if on_result is not None:
                on_result(done)

        waiters: list[asyncio.Task[None]] = []
        try:
            # Enqueued shortest prompt first: a batch then holds prompts of like length, so a
            # padded local batch computes little padding (MMLU-Pro prompts vary 5x in length).
            for i in sorted(range(len(requests)), key=lambda j: prompt_chars(requests[j])):
                req = requests[i]
                ticket = breaker.allow()
                if ticket is None:  # open: the rest of the group fails fast, nothing is sent
                    results[i] = GenerationResult.failed(breaker.open_error(), attempts=0)
                    done += 1
                    if on_result is not None:
                        on_result(done)
                    continue
                fut = await q.put_waiting(req, ticket)
                waiters.append(asyncio.create_task(one(i, fut)))
            await asyncio.gather(*waiters)
        except BaseException:
            for t in waiters:
                t.cancel()
            raise
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    async def stream(self, expert: str, request: GenerationRequest, on_delta: DeltaHandler) -> GenerationResult:
        """One request streamed from one expert, each delta passed to `on_delta` as it comes.

        Not batched (its tokens go to one caller) but bound like batches: it waits for one of the
        expert's concurrency slots (up to the expert's submit timeout), is refused at once when
        the expert's queue is full or its circuit open, and its outcome feeds the breaker in the
        epoch it was admitted in. Failures come back in the result; cancelling the caller (a
        client disconnect) cancels the upstream stream and says nothing about the expert."""
        q = self._queue(expert)
        breaker = q.breaker
        ticket = breaker.allow()
        if ticket is None:
            return GenerationResult.failed(breaker.open_error(), attempts=0)  # fail fast: nothing is sent
        if q.queue.full():
            breaker.release(ticket)
            q.stats.rejected += 1
            return GenerationResult.failed(ExpertOverloaded(
                f"expert {q.name!r} has {q.queue.maxsize} requests waiting; retry later", expert=q.name))
        try:
            try:
                async with asyncio.timeout(q.submit_timeout_s):
                    await q.slots.acquire()
            except TimeoutError:
                breaker.release(ticket)
                return GenerationResult.failed(ExpertTimeout(
                    f"expert {q.name!r} had no free slot within {q.submit_timeout_s:.0f} s", expert=q.name))
            try:
                q.stats.backend_calls += 1
                q.stats.requests += 1
                q.stats.batch_sizes[1] += 1
                if self._on_batch is not None:
                    self._on_batch(q.name, 1, q.queue.qsize())
                try:
                    result = await q.backend.stream(request, on_delta)
                except ExpertError as e:  # backends return failures; a raised one is still typed
                    result = GenerationResult.failed(e)
                except Exception as e:  # noqa: BLE001 - a backend bug must not strand its caller
                    result = GenerationResult.failed(ExpertUnavailable(f"expert {q.name!r} failed: {type(e).__name__}: {e}", expert=q.name))
            finally:
                q.slots.release()
        except BaseException:  # cancelled (the client went away): says nothing about the expert
            breaker.release(ticket)
            raise
        if result.ok:
            breaker.record(ok=True, ticket=ticket)
        elif counts_as_failure(result.error):
            breaker.record(ok=False, ticket=ticket)
        else:
            breaker.release(ticket)
        return result

    async def forward(self, expert: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Another OpenAI endpoint of the expert's server (`/completions`, `/embeddings`), under
        the expert's breaker (in the epoch it was admitted in); raises `ExpertError` (an open
        circuit: `ExpertCircuitOpen`)."""
        name = self.registry.resolve(expert)
        breaker = self.breaker(name)
        ticket = breaker.allow()
        if ticket is None:
            raise breaker.open_error()
        try:
            out = await self.registry.backend(name).forward(path, body)
        except ExpertError as e:
            if counts_as_failure(e):
                breaker.record(ok=False, ticket=ticket)
            else:
                breaker.release(ticket)
            raise
        except BaseException:  # cancelled (the client went away): says nothing about the expert
            breaker.release(ticket)
            raise
        breaker.record(ok=True, ticket=ticket)
        return out

    def breaker(self, expert: str) -> CircuitBreaker:
        """The expert's circuit breaker (made on first use from its spec)."""
        name = self.registry.resolve(expert)
        b = self._breakers.get(name)
        if b is None:
            spec = self.registry.spec(name)
            b = self._breakers[name] = CircuitBreaker(name, failures=spec.breaker_failures, cooldown_s=spec.breaker_cooldown_s)
        return b

    def breakers(self) -> dict[str, CircuitBreaker]:
        return dict(self._breakers)

    async def submit_or_error(self, expert: str, request: GenerationRequest) -> GenerationResult:
        try:
            return await self.submit(expert, request)
        except ExpertError as e:
            return GenerationResult.failed(e)

    async def call(self, assignment: Assignment) -> CallOutcome:
        """Run an assignment; if its expert fails and the plan named a fallback, ask that one."""
        first = await self.submit_or_error(assignment.expert, assignment.request)
        attempts = [CallAttempt(assignment.expert, first)]
        if not first.ok and assignment.fallback and assignment.fallback != assignment.expert:
            second = await self.submit_or_error(assignment.fallback, assignment.request)
            attempts.append(CallAttempt(assignment.fallback, second, fallback_for=assignment.expert))
        return CallOutcome(attempts)

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.gather(*(q.aclose() for q in self._queues.values()), return_exceptions=True)
        self._queues.clear()

    async def __aenter__(self) -> "Dispatcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()




def prompt_chars(request: GenerationRequest) -> int:
    """The length of a request's prompt in characters (a cheap stand-in for its token count)."""
    if request.prompt is not None:
        return len(request.prompt)
    return sum(len(m.content or "") for m in request.messages or ())
