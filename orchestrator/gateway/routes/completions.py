"""`POST /v1/completions` and `POST /v1/embeddings`, passed through to an expert that serves them.

    client.completions.create(model="vllm-smol", prompt="Paris is", max_tokens=8)
    client.embeddings.create(model="vllm-embed", input=["a", "b"])

`model` names an expert on an OpenAI-compatible server (a direct call: routers answer chat
completions only); the body reaches its server unchanged but for `model`, and the answer comes
back with `model` set to the expert's name. The call goes through the expert's circuit breaker;
its tokens, cost and latency are in /metrics (router label "passthrough"). No trace is written:
nothing was routed.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from experts.errors import ExpertError
from experts.spec import BackendKind
from orchestrator.gateway import errors as E
from orchestrator.gateway.deps import CallerDep, GatewayState, State
from orchestrator.gateway.queries import FAILURE_PHRASES
from orchestrator.protocol import CompletionRequest, EmbeddingRequest, PassthroughRequest
from routers.registry import router_names
from store.records import ExpertCallRecord

logger = logging.getLogger("orchestrator.gateway")

router = APIRouter(tags=["passthrough"])

ROUTER_LABEL = "passthrough"


@router.post("/v1/completions")
async def completions(body: CompletionRequest, st: State, _: CallerDep) -> JSONResponse:
    return await _forward(st, "/completions", body)


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, st: State, _: CallerDep) -> JSONResponse:
    return await _forward(st, "/embeddings", body)


def _expert_for(st: GatewayState, model: str, path: str) -> str:
    registry = st.runtime.registry
    if model in router_names():
        raise E.BadRequest(f"{model!r} is a router; routers answer /v1/chat/completions, and /v1{path} takes an expert name "
                           f"({', '.join(registry.names)})", param="model")
    name = registry.find(model)
    if name is None:
        raise E.NotFound(f"unknown model {model!r}; experts: {', '.join(registry.names)}", param="model", code="model_not_found")
    spec = registry.spec(name)
    if spec.backend is not BackendKind.OPENAI:
        raise E.BadRequest(f"expert {name!r} runs on the {spec.backend.value} backend, which does not serve /v1{path}; "
                           "only experts on an OpenAI-compatible server do", param="model")
    return name


def _error(name: str, e: ExpertError) -> E.APIError:
    """What the client is told: the kind of failure, never the upstream's own message (it can
    hold its address or error body; that goes to the log, under the error id the client gets)."""
    error_id = f"err_{secrets.token_hex(6)}"
    logger.warning("passthrough %s to %s failed: %s: %s", error_id, name, e.kind, str(e.message)[:2000])
    status = getattr(e, "status_code", None)
    detail = f"expert {name!r} {FAILURE_PHRASES.get(e.kind, 'failed')} ({error_id}; the gateway's log has the details)"
    if e.kind == "rejected" and status in (400, 422):
        return E.BadRequest(f"the expert refused the request ({status}): {detail}", code="upstream_rejected")
    if e.kind == "timeout":
        return E.UpstreamTimeout(detail, code="upstream_timeout")
    if e.kind in ("rate_limited", "circuit_open", "overloaded"):
        return E.ServiceUnavailable(detail, code="overloaded", retry_after=getattr(e, "retry_after_s", None) or 1)
    return E.UpstreamFailed(detail, code="upstream_failed")


async def _forward(st: GatewayState, path: str, body: PassthroughRequest) -> JSONResponse:
    name = _expert_for(st, body.model, path)
    t0 = time.perf_counter()
    try:
        out: dict[str, Any] = await st.runtime.dispatcher.forward(name, path, body.model_dump(exclude_unset=True))
    except ExpertError as e:
        err = _error(name, e)
        st.metrics.record_calls([ExpertCallRecord(expert=name, error_kind=e.kind)])
        st.metrics.record_answer(ROUTER_LABEL, err.status_code)
        raise err from None
    usage = out.get("usage") if isinstance(out.get("usage"), dict) else {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cost = st.runtime.registry.spec(name).price_per_mtok.cost(prompt, completion)
    seconds = time.perf_counter() - t0
    st.metrics.record_calls([ExpertCallRecord(expert=name, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost,
                                              latency_s=seconds)])
    st.metrics.record_answer(ROUTER_LABEL, 200, seconds, cost)
    out["model"] = name
    return JSONResponse(out, headers={"x-orchestrator-experts": name, "x-orchestrator-router": ROUTER_LABEL})
