"""The OpenAI-compatible REST gateway.

    app = create_app(config, GatewaySettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)

`model` in a chat request is a router name (the router decides which experts answer) or an
expert name (a direct call). Responses carry the experts used (`experts`, header
`x-orchestrator-experts`) and the trace id (`trace_id`, header `x-orchestrator-trace-id`).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from experts.errors import ConfigError
from experts.registry import UnknownExpert
from experts.spec import ExpertSpec, OrchestratorConfig, format_validation_error
from orchestrator.gateway import errors as E
from orchestrator.gateway.batches.service import BatchRunner
from orchestrator.gateway.metrics import CIRCUIT_STATES, GatewayMetrics, RequestMetrics
from orchestrator.gateway.protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageOut,
    ChunkChoice,
    DeltaMessage,
    ModelCard,
    ModelList,
    Usage,
    completion_id,
)
from orchestrator.gateway.queries import failure_error, query_from, resolve_model
from orchestrator.gateway.security import BodySizeLimit, Caller, RateLimiter, hash_key
from orchestrator.pipeline import QueryResult, Runtime
from routers.types import Query, RoutingError
from routers.registry import router_names
from store.db import StoreUnavailable
from store.trace_writer import TraceQueueFull, TraceWriter

logger = logging.getLogger("orchestrator.gateway")


class GatewaySettings(BaseSettings):
    """Environment: ORCHESTRATOR_MAX_BODY_BYTES, ORCHESTRATOR_RATE_LIMIT_RPM, ORCHESTRATOR_REQUIRE_API_KEY, ..."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    max_body_bytes: int = 1_048_576
    rate_limit_rpm: int = 0  # per API key; 0 = off
    rate_limit_burst: int | None = None
    require_api_key: bool = False  # also on whenever the store holds an active key
    default_max_tokens: int = 256
    health_cache_s: float = 10.0
    request_timeout_s: float = 600.0
    batch_chunk_size: int = 32  # batch items answered (and stored) together
    batch_pause_s: float = 0.0  # pause between batch chunks, leaving room for interactive traffic
    gc_tuning: bool = True  # freeze start-up objects and collect young garbage less often (see _gc_tuned)


class GatewayState:
    """Long-lived objects of one app, built in its lifespan."""

    def __init__(self, config: OrchestratorConfig, settings: GatewaySettings, runtime: Runtime, metrics: GatewayMetrics) -> None:
        self.config, self.settings, self.runtime, self.metrics = config, settings, runtime, metrics
        self.limiter = RateLimiter(settings.rate_limit_rpm, settings.rate_limit_burst)
        self.keys_cache: dict[str, tuple[float, Caller | None]] = {}
        self.auth_required_cache: tuple[float, bool] = (0.0, settings.require_api_key)
        self.health_cache: tuple[float, list[Any]] = (0.0, [])
        self.started = time.time()


def state_of(request: Request) -> GatewayState:
    return request.app.state.gateway


State = Annotated[GatewayState, Depends(state_of)]


async def _auth_required(st: GatewayState) -> bool:
    if st.settings.require_api_key:
        return True
    at, value = st.auth_required_cache
    if time.monotonic() - at < 5.0:
        return value
    try:
        value = await st.runtime.store.count_api_keys() > 0
    except Exception as e:  # noqa: BLE001 - a store outage must be a 503, not a 500
        raise E.ServiceUnavailable(f"the store is unavailable ({type(e).__name__}); retry shortly", retry_after=2) from None
    st.auth_required_cache = (time.monotonic(), value)
    return value


async def current_caller(request: Request, st: State) -> Caller:
    header = request.headers.get("authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    if not await _auth_required(st):
        caller = Caller()
    else:
        if not token:
            raise E.Unauthorized("missing API key: send `Authorization: Bearer <key>` (create one with `orchestrator keys create`)")
        h = hash_key(token)
        hit = st.keys_cache.get(h)
        if hit is None or time.monotonic() - hit[0] > 60:
            found = await st.runtime.store.find_api_key(h)
            hit = (time.monotonic(), Caller(key_id=found[0], name=found[1]) if found else None)
            st.keys_cache[h] = hit
        if hit[1] is None:
            raise E.Unauthorized("invalid API key")
        caller = hit[1]
    wait = st.limiter.check(caller.key_id or "anonymous")
    if wait is not None:
        raise E.RateLimited(f"rate limit of {st.settings.rate_limit_rpm} requests per minute exceeded", retry_after=wait)
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


YOUNG_GC_THRESHOLD = 10_000


@contextmanager
def _gc_tuned(enabled: bool) -> Iterator[None]:
    """Cheaper garbage collection while serving; undone on exit.

    The cyclic collector costs ~0.1 ms per chat request with defaults (benchmarks/gateway_cpu.py
    with gc callbacks): full collections walk every object left from start-up (models, routers,
    modules), and young collections run every 700 allocations. Freezing the start-up heap and
    raising the young threshold to 10,000 cuts that to a few hundredths of a millisecond."""
    before = gc.get_threshold()
    if not enabled or before[0] >= YOUNG_GC_THRESHOLD:  # off, or already tuned (another app in this process)
        yield
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@asynccontextmanager
async def _lifespan(app: FastAPI, config: OrchestratorConfig, settings: GatewaySettings) -> AsyncIterator[None]:
    metrics = GatewayMetrics()
    runtime = await Runtime.create(config, on_batch=metrics.on_batch)
    runtime.trace_writer = TraceWriter(runtime.store)
    await runtime.trace_writer.start()
    app.state.gateway = GatewayState(config, settings, runtime, metrics)
    app.state.batches = BatchRunner(runtime, chunk_size=settings.batch_chunk_size, pause_s=settings.batch_pause_s,
                                    default_max_tokens=settings.default_max_tokens, on_calls=metrics.record_calls,
                                    registry=metrics.registry)
    await app.state.batches.resume()
    logger.info(
        "gateway ready: routers %s; experts %s; store %s",
        ", ".join(router_names()), ", ".join(runtime.registry.names), runtime.store.url,
    )
    try:
        with _gc_tuned(settings.gc_tuning):
            yield
    finally:
        await app.state.batches.aclose()
        await runtime.aclose()


def _query_from(req: ChatCompletionRequest, default_max_tokens: int) -> Query:
    # One conversion for chat and batches; `metadata.question_id` reaches recorded experts.
    return query_from(req, default_max_tokens)


def _experts_header(result: QueryResult) -> str:
    return ",".join(result.experts_used)


async def _run_chat(st: GatewayState, req: ChatCompletionRequest, caller: Caller) -> QueryResult:
    """Resolve `model` (router or expert), answer, record metrics; typed errors only."""
    query = _query_from(req, st.settings.default_max_tokens)
    writer = st.runtime.trace_writer
    if writer is not None and not writer.healthy:
        # fail fast: an answer we could not record would be lost from the audit trail
        raise E.ServiceUnavailable(f"the store is unavailable ({writer.last_error}); retry shortly", retry_after=2)
    router, options = resolve_model(st.runtime.registry, req.model)
    try:
        async with asyncio.timeout(st.settings.request_timeout_s):  # unlike wait_for, no extra task per request
            result = await st.runtime.answer(query, router, options=options, owner=caller.key_id)
    except RoutingError as e:
        raise E.BadRequest(str(e), param="model", code="routing_error") from None
    except (UnknownExpert, ConfigError) as e:
        raise E.BadRequest(str(e), param="model") from None
    except TimeoutError:
        raise E.UpstreamTimeout(f"no answer within {st.settings.request_timeout_s:g} s") from None
    except TraceQueueFull as e:
        raise E.ServiceUnavailable(f"the store is falling behind: {e}", retry_after=2) from None
    except (StoreUnavailable, OSError) as e:
        raise E.ServiceUnavailable(f"the store is unavailable ({type(e).__name__}); retry shortly", retry_after=2) from None
    except Exception as e:
        if "sqlalchemy" in type(e).__module__ or "asyncpg" in type(e).__module__:
            raise E.ServiceUnavailable(f"the store is unavailable ({type(e).__name__}); retry shortly", retry_after=2) from None
        raise
    st.metrics.record_calls(result.calls)
    err = failure_error(result)
    if err is not None:
        err.headers["x-orchestrator-trace-id"] = result.trace_id  # the trace says what each expert did
        raise err
    return result


def _usage(result: QueryResult) -> Usage:
    return Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                 total_tokens=result.prompt_tokens + result.completion_tokens)


def create_app(config: OrchestratorConfig, settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _lifespan(app, config, settings):
            yield

    app = FastAPI(title="llm-orchestrator", version="0.1.0", lifespan=lifespan)
    E.install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    app.add_middleware(RequestMetrics)

    # ------------------------------------------------------------------ chat
    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(req: ChatCompletionRequest, request: Request):  # type: ignore[no-untyped-def]
        # State and caller resolved by hand, not as dependencies: FastAPI's dependency solver costs
        # ~0.3 ms per request here, a third of the gateway's whole budget (orchestrator loadtest).
        st = state_of(request)
        caller = await current_caller(request, st)
        if req.stream:
            return StreamingResponse(_stream(st, req, caller), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await _run_chat(st, req, caller)
        headers = {"x-orchestrator-experts": _experts_header(result), "x-orchestrator-router": result.router,
                   "x-orchestrator-trace-id": result.trace_id}
        finish = next((c.finish_reason for c in reversed(result.calls) if c.error_kind is None), "stop") or "stop"
        body = ChatCompletionResponse(
            model=_experts_header(result) or req.model,
            choices=[ChatChoice(message=ChatMessageOut(content=result.final.text), finish_reason=finish if finish in ("stop", "length") else "stop")],
            usage=_usage(result), experts=result.experts_used, router=result.router, trace_id=result.trace_id,
        )
        # Serialised once here: returning the model would make FastAPI validate it again.
        return Response(body.model_dump_json(), media_type="application/json", headers=headers)

    async def _stream(st: GatewayState, req: ChatCompletionRequest, caller: Caller) -> AsyncIterator[str]:
        cid, created = completion_id(), int(time.time())

        def chunk(delta: DeltaMessage, finish: str | None = None, model: str = req.model, usage: Usage | None = None, empty: bool = False) -> str:
            c = ChatCompletionChunk(id=cid, created=created, model=model,
                                    choices=[] if empty else [ChunkChoice(delta=delta, finish_reason=finish)], usage=usage)
            return f"data: {c.model_dump_json(exclude_none=False)}\n\n"

        # First frame at once (fast time-to-first-byte); after it, failures are in-band.
        yield chunk(DeltaMessage(role="assistant", content=""))
        try:
            result = await _run_chat(st, req, caller)
        except E.APIError as exc:
            yield f"data: {json.dumps(E.error_body(exc))}\n\n"
            yield "data: [DONE]\n\n"
            return
        except Exception:  # noqa: BLE001 - never hang a stream on an unexpected error
            logger.exception("stream failed")
            yield f"data: {json.dumps(E.error_body(E.APIError('internal error')))}\n\n"
            yield "data: [DONE]\n\n"
            return
        model = _experts_header(result) or req.model
        text = result.final.text
        step = 64
        for i in range(0, len(text), step):
            yield chunk(DeltaMessage(content=text[i : i + step]), model=model)
        yield chunk(DeltaMessage(), finish="stop", model=model)
        if req.stream_options and req.stream_options.include_usage:
            yield chunk(DeltaMessage(), model=model, usage=_usage(result), empty=True)
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------ models and experts
    @app.get("/v1/models", response_model=ModelList)
    async def list_models(st: State, _: CallerDep) -> ModelList:
        cards = [ModelCard(id=r, kind="router", created=int(st.started)) for r in router_names()]
        cards += [ModelCard(id=n, kind="expert", created=int(st.started)) for n in st.runtime.registry.names]
        return ModelList(data=cards)

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard)
    async def get_model(model_id: str, st: State, _: CallerDep) -> ModelCard:
        if model_id in router_names():
            return ModelCard(id=model_id, kind="router", created=int(st.started))
        if st.runtime.registry.find(model_id):
            return ModelCard(id=st.runtime.registry.resolve(model_id), kind="expert", created=int(st.started))
        raise E.NotFound(f"unknown model {model_id!r}", param="model", code="model_not_found")

    async def _health(st: GatewayState, fresh: bool = False) -> list[Any]:
        at, cached = st.health_cache
        if fresh or not cached or time.monotonic() - at > st.settings.health_cache_s:
            cached = await st.runtime.registry.check(timeout_s=5.0)
            st.health_cache = (time.monotonic(), cached)
        return cached

    @app.get("/v1/experts")
    async def list_experts(st: State, _: CallerDep) -> dict[str, Any]:
        health = {h.name: h for h in await _health(st)}
        data = []
        for spec in st.runtime.registry.specs():
            h = health.get(spec.name)
            circuit = st.runtime.dispatcher.breaker(spec.name).snapshot()
            healthy = h.healthy if h else None
            if circuit["state"] == "open":
                healthy = False  # calls fail fast right now, whatever the last probe said
            data.append({**spec.model_dump(mode="json"), "healthy": healthy, "health_detail": h.detail if h else "", "circuit": circuit})
        return {"object": "list", "data": data}

    @app.post("/v1/experts", status_code=201)
    async def add_expert(request: Request, st: State, _: CallerDep) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise E.BadRequest("the request body is not valid JSON", code="invalid_json") from None
        try:
            spec = ExpertSpec.model_validate(body)
        except ValidationError as e:
            first = e.errors()[0]
            raise E.Unprocessable(format_validation_error(e, "expert").split("\n")[0], param=".".join(str(p) for p in first["loc"]) or None) from None
        if st.runtime.registry.find(spec.name):
            raise E.BadRequest(f"expert {spec.name!r} already exists; DELETE it first", param="name", code="conflict")
        try:
            st.runtime.registry.add(spec)
        except ConfigError as e:
            raise E.BadRequest(str(e), param="name") from None
        await st.runtime.store.upsert_experts([spec.model_dump(mode="json")])
        st.health_cache = (0.0, [])
        return spec.model_dump(mode="json")

    @app.delete("/v1/experts/{name}")
    async def delete_expert(name: str, st: State, _: CallerDep) -> dict[str, Any]:
        canonical = st.runtime.registry.find(name)
        if canonical is None:
            raise E.NotFound(f"unknown expert {name!r}", param="name")
        backend = st.runtime.registry.remove(canonical)
        await backend.aclose()
        await st.runtime.store.delete_expert(canonical)
        st.health_cache = (0.0, [])
        return {"id": canonical, "object": "expert", "deleted": True}

    # ------------------------------------------------------------------ traces
    @app.get("/v1/traces/{trace_id}")
    async def get_trace(trace_id: str, st: State, caller: CallerDep) -> dict[str, Any]:
        if len(trace_id) > 64:
            raise E.NotFound(f"no trace {trace_id[:64]!r}")
        pending = st.runtime.trace_writer.pending(trace_id) if st.runtime.trace_writer else None
        if pending is not None and (caller.key_id is None or pending.owner == caller.key_id):
            return json.loads(pending.model_dump_json())  # answered, not yet committed
        try:
            rec = await st.runtime.store.get_trace(trace_id, owner=caller.key_id)
        except Exception as e:  # noqa: BLE001
            raise E.ServiceUnavailable(f"the store is unavailable ({type(e).__name__})", retry_after=2) from None
        if rec is None:
            raise E.NotFound(f"no trace {trace_id!r}" + (" for this API key" if caller.key_id else ""))
        return json.loads(rec.model_dump_json())

    # ------------------------------------------------------------------ health and metrics
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(st: State, response: Response) -> dict[str, Any]:
        problems = []
        try:
            await st.runtime.store.ping()
        except StoreUnavailable as e:
            problems.append(str(e))
        statuses = await _health(st)
        if not any(h.healthy for h in statuses):
            problems.append("no healthy expert")
        if problems:
            response.status_code = 503
        return {"status": "ready" if not problems else "not ready", "problems": problems,
                "experts": {h.name: h.healthy for h in statuses}}

    @app.get("/metrics")
    async def metrics(st: State) -> Response:
        for name in st.runtime.registry.names:
            st.metrics.queue_depth.labels(name).set(st.runtime.dispatcher.queue_depth(name))
        for name, b in st.runtime.dispatcher.breakers().items():
            st.metrics.circuit_state.labels(name).set(CIRCUIT_STATES[b.state])
            st.metrics.circuit_opens.labels(name).set(b.opens)
        if st.runtime.trace_writer is not None:
            st.metrics.trace_backlog.set(st.runtime.trace_writer.backlog)
        return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    from orchestrator.gateway.batches.api import router as batches_router

    app.include_router(batches_router)  # before the /v1 catch-all below

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown_v1(rest: str) -> None:
        raise E.NotFound(f"no route /v1/{rest[:100]}; see GET /v1/models")

    return app



__all__ = ["GatewaySettings", "create_app"]
