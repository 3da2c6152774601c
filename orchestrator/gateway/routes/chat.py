"""`POST /v1/chat/completions`: `model` is a router (it decides which experts answer) or an expert (a direct call).

Responses carry the experts used (`experts`, header `x-orchestrator-experts`), the router and the
trace id (`trace_id`, header `x-orchestrator-trace-id`); `stream: true` answers as server-sent
events, the answering expert's tokens as it produces them (`orchestrator.gateway.chat_stream`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request, Response

from experts.errors import ConfigError
from experts.registry import UnknownExpert
from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import Caller
from orchestrator.gateway.chat_stream import ChunkSink, stream_chat
from orchestrator.gateway.deps import GatewayState, state_of
from orchestrator.gateway.disconnect import CLIENT_CLOSED_REQUEST, ClientDisconnected, cancel_on_disconnect
from orchestrator.gateway.queries import chat_completion_json, failure_error, query_from, resolve_model
from orchestrator.pipeline import QueryResult
from orchestrator.protocol import ChatCompletionRequest, ChatCompletionResponse
from routers.types import RoutingError, UnsupportedRequest
from store.trace_writer import TraceQueueFull

logger = logging.getLogger("orchestrator.gateway")

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(req: ChatCompletionRequest, request: Request):  # type: ignore[no-untyped-def]
    # State and caller resolved by hand, not as dependencies: FastAPI's dependency solver costs
    # ~0.3 ms per request here, a third of the gateway's whole budget (orchestrator loadtest).
    st = state_of(request)
    caller = await st.auth.caller(request.headers.get("authorization", ""), request.client.host if request.client else "unknown")
    if req.stream:
        return await stream_chat(st, req, caller, request, run=_run_chat)  # cancels on disconnect itself
    try:  # a client that goes away cancels its expert calls
        result = await cancel_on_disconnect(request, _run_chat(st, req, caller))
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    headers = {"x-orchestrator-experts": _experts_header(result), "x-orchestrator-router": result.router,
               "x-orchestrator-trace-id": result.trace_id}
    if result.cache is not None:
        headers["x-orchestrator-cache"] = result.cache
    # Serialised here, straight from the result: returning the model would make FastAPI validate it
    # again, and building it costs five pydantic models per request (the response_model stays the schema).
    return Response(chat_completion_json(result, req.model), media_type="application/json", headers=headers)


async def _run_chat(st: GatewayState, req: ChatCompletionRequest, caller: Caller, *, sink: ChunkSink | None = None,
                    trace_id: str | None = None) -> QueryResult:
    """Resolve `model` (router or expert), answer, record metrics; typed errors only. With
    `sink`, the answer streams into it while this runs (errors before its first piece are raised
    here all the same, so a stream fails with the status a plain request would get)."""
    query = query_from(req, st.settings.default_max_tokens)
    writer = st.runtime.trace_writer
    if writer is not None and not writer.healthy:
        # fail fast: an answer we could not record would be lost from the audit trail
        # (the database's error stays in the log, where the writer put it: it can name hosts and users)
        raise E.store_unavailable("traces cannot be written")
    router_name, options = resolve_model(st.runtime.registry, req.model)
    t0 = time.perf_counter()
    try:
        try:
            async with asyncio.timeout(st.settings.request_timeout_s):  # unlike wait_for, no extra task per request
                with E.map_store_exceptions():
                    result = await st.runtime.answer(query, router_name, options=options, owner=caller.key_id,
                                                     sink=sink, trace_id=trace_id)
        except UnsupportedRequest as e:  # e.g. tools on a vote: say so, never drop them
            param = next((f for f in query.tool_fields() if f != "tool messages"), "messages")
            raise E.BadRequest(str(e), param=param, code="unsupported_for_route") from None
        except RoutingError as e:
            raise E.BadRequest(str(e), param="model", code="routing_error") from None
        except (UnknownExpert, ConfigError) as e:
            raise E.BadRequest(str(e), param="model") from None
        except TimeoutError:
            raise E.UpstreamTimeout(f"no answer within {st.settings.request_timeout_s:g} s") from None
        except TraceQueueFull as e:
            raise E.ServiceUnavailable(f"the store is falling behind: {e}", retry_after=2) from None
        st.metrics.record_calls(result.calls)
        budget = st.runtime.exploration_budget(router_name, options)
        if budget:
            st.metrics.record_exploration(router_name, budget, result.calls)
        err = failure_error(result)
        if err is not None:
            err.headers["x-orchestrator-trace-id"] = result.trace_id  # the trace says what each expert did
            raise err
    except E.APIError as e:
        st.metrics.record_answer(router_name, e.status_code)
        raise
    st.metrics.record_answer(router_name, 200, time.perf_counter() - t0, result.cost_usd)
    return result


run_chat = _run_chat  # the dashboard's playground answers through this same path


def _experts_header(result: QueryResult) -> str:
    return ",".join(result.experts_used)
