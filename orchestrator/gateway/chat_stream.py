"""Streamed chat completions: the answer's tokens as the answering expert produces them.

    response = await stream_chat(st, body, caller, request, run=_run_chat)

The query runs in a task of its own: routing and the other experts' calls first, then the
answering call (one expert's output, or an aggregator's) streams into a `ChunkSink`; a vote over
complete outputs arrives whole, the moment it is decided. This waits for the first piece:

* an error before it is raised as the HTTP error the same request without streaming gets (same
  status, same envelope), not an in-band event;
* after it the status is 200, each piece is a `chat.completion.chunk`, the last one carries the
  chosen output's `finish_reason`, `stream_options.include_usage` adds a usage chunk, and a
  failure is an in-band `data: {"error": ...}` event followed by `data: [DONE]`.

A client that goes away, before or during the stream, cancels the task, which closes the
upstream stream (vLLM aborts the request; an in-process model stops at its next token). The
trace is written when the task ends, cancelled or not (`Runtime.answer`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from orchestrator.gateway import errors as E
from orchestrator.gateway.disconnect import CLIENT_CLOSED_REQUEST
from orchestrator.gateway.queries import finish_reason, resolve_model, usage
from orchestrator.protocol import ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, DeltaMessage, Usage, completion_id

if TYPE_CHECKING:
    from orchestrator.gateway.auth import Caller
    from orchestrator.gateway.deps import GatewayState
    from orchestrator.pipeline import QueryResult

logger = logging.getLogger("orchestrator.gateway")

Piece = tuple[str, list[dict[str, Any]] | None]
RunChat = Callable[..., Awaitable["QueryResult"]]
_END = object()  # the query's task finished (its result or error is on the task)
_GONE = object()  # the client disconnected

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChunkSink:
    """The `AnswerSink` of one streaming request: what the executor sends queues up for the response."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Piece | object] = asyncio.Queue()
        self.parts: list[str] = []
        self.expert: str | None = None  # who produced the first piece (the chunks' `model`)
        self.first_at: float | None = None
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def send(self, text: str, tool_calls: list[dict[str, Any]] | None = None, *, expert: str | None = None) -> None:
        if not text and not tool_calls:
            return
        if not self._started:
            self._started, self.first_at, self.expert = True, time.perf_counter(), expert
        self.parts.append(text)
        self.queue.put_nowait((text, tool_calls))

    def close(self) -> None:
        self.queue.put_nowait(_END)


async def stream_chat(st: "GatewayState", req: ChatCompletionRequest, caller: "Caller", request: Request, *, run: RunChat) -> Response:
    """Answer `req` as server-sent events; see the module docstring."""
    t0 = time.perf_counter()
    router_name, _ = resolve_model(st.runtime.registry, req.model)  # an unknown model: a 404 at once
    sink = ChunkSink()
    trace_id = str(uuid.uuid4())
    task = asyncio.create_task(run(st, req, caller, sink=sink, trace_id=trace_id), name=f"chat-stream:{trace_id}")
    st.tasks.add(task)  # held until done (the event loop keeps only weak references)
    task.add_done_callback(st.tasks.discard)
    task.add_done_callback(lambda _: sink.close())
    try:
        first = await _first_piece(sink, request)
    except BaseException:
        task.cancel()
        raise
    if first is _GONE:  # nobody is left to read an answer: stop the work, its trace says so
        task.cancel()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    result: QueryResult | None = None
    if first is _END:  # done before any piece: a failure is a plain HTTP error
        if task.cancelled():
            raise E.ServiceUnavailable("the request was cancelled", retry_after=1)
        exc = task.exception()
        if exc is not None:
            raise exc
        result = task.result()
        model = ",".join(result.experts_used) or req.model
        pieces: list[Piece] = []
    else:
        assert isinstance(first, tuple)
        st.metrics.record_first_token(router_name, (sink.first_at or time.perf_counter()) - t0)
        model = sink.expert or req.model
        pieces = [first]
    headers = {**SSE_HEADERS, "x-orchestrator-trace-id": trace_id, "x-orchestrator-router": router_name,
               "x-orchestrator-experts": model}
    frames = _frames(req, sink, task, pieces, model=model, done=first is _END)
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _first_piece(sink: ChunkSink, request: Request) -> Piece | object:
    """The first piece, `_END` if the query finished without one, or `_GONE` if the client left."""
    get = asyncio.ensure_future(sink.queue.get())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # The response listens for disconnects itself once it streams: stop listening here.
        for f in (get, gone):
            if not f.done():
                f.cancel()
    return get.result() if get in done else _GONE


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _frames(req: ChatCompletionRequest, sink: ChunkSink, task: "asyncio.Task[QueryResult]", pieces: list[Piece], *,
                  model: str, done: bool) -> AsyncIterator[str]:
    cid, created = completion_id(), int(time.time())

    def chunk(delta: DeltaMessage, finish: str | None = None, usage_: Usage | None = None, empty: bool = False) -> str:
        c = ChatCompletionChunk(id=cid, created=created, model=model,
                                choices=[] if empty else [ChunkChoice(delta=delta, finish_reason=finish)], usage=usage_)
        return f"data: {c.model_dump_json()}\n\n"

    def content(piece: Piece) -> str:
        text, calls = piece
        return chunk(DeltaMessage(content=text if text or not calls else None, tool_calls=calls))

    try:
        yield chunk(DeltaMessage(role="assistant", content=""))
        for piece in pieces:
            yield content(piece)
        while not done:
            item = await sink.queue.get()
            if item is _END:
                break
            yield content(item)  # type: ignore[arg-type]
        err = _failure(task)
        if err is not None:
            yield f"data: {json.dumps(E.error_body(err))}\n\n"
            yield "data: [DONE]\n\n"
            return
        result = task.result()
        final = result.final.text
        if final.startswith(sink.text) and len(final) > len(sink.text):
            yield chunk(DeltaMessage(content=final[len(sink.text):]))  # what the answer's selection held back
        yield chunk(DeltaMessage(), finish=finish_reason(result))
        if req.stream_options and req.stream_options.include_usage:
            yield chunk(DeltaMessage(), usage_=usage(result), empty=True)
        yield "data: [DONE]\n\n"
    finally:
        if not task.done():
            task.cancel()  # the client went away mid-stream: cancel the upstream stream


def _failure(task: "asyncio.Task[QueryResult]") -> E.APIError | None:
    """The in-band error of a stream that had started, or None when it finished well."""
    if task.cancelled():
        return E.ServiceUnavailable("the answer was cancelled before it was complete")
    exc = task.exception()
    if isinstance(exc, E.APIError):
        return exc
    if exc is not None:
        error_id = f"err_{secrets.token_hex(6)}"  # the client gets this id; the log has the detail
        logger.error("stream failed %s", error_id, exc_info=exc)
        return E.APIError(f"internal error {error_id}; the gateway's log has the details")
    result = task.result()
    if result.interrupted:
        # what the expert's server said stays in the trace and the log (it can hold its address or body)
        logger.warning("trace %s: the streamed answer broke off: %s", result.trace_id, result.interrupted[:2000])
        expert = result.interrupted.split(":", 1)[0]
        return E.UpstreamFailed(f"the answer broke off after it had started: {expert} failed; trace {result.trace_id} has the details",
                                code="stream_interrupted")
    return None
