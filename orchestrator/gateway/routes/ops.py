"""For operators and orchestrators of containers: `/health` (the process is up), `/ready` (the store
answers and some expert is healthy) and `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.gateway.deps import State
from orchestrator.gateway.metrics import CIRCUIT_STATES
from store.db import StoreUnavailable

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(st: State, response: Response) -> dict[str, Any]:
    problems = []
    try:
        await st.runtime.store.ping()
    except StoreUnavailable as e:
        problems.append(str(e))
    statuses = await st.expert_health()
    if not any(h.healthy for h in statuses):
        problems.append("no healthy expert")
    if problems:
        response.status_code = 503
    return {"status": "ready" if not problems else "not ready", "problems": problems,
            "experts": {h.name: h.healthy for h in statuses}}


@router.get("/metrics")
async def metrics(st: State) -> Response:
    for name in st.runtime.registry.names:
        st.metrics.queue_depth.labels(name).set(st.runtime.dispatcher.queue_depth(name))
    for name, b in st.runtime.dispatcher.breakers().items():
        st.metrics.circuit_state.labels(name).set(CIRCUIT_STATES[b.state])
        st.metrics.circuit_opens.labels(name).set(b.opens)
    if st.runtime.trace_writer is not None:
        st.metrics.trace_backlog.set(st.runtime.trace_writer.backlog)
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)
