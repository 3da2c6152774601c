"""For operators and orchestrators of containers: `/health` (the process is up), `/ready` (the store
answers, the trace writer commits, the replica's background loops run, and some expert is
healthy; the details for admins only) and `/metrics` (Prometheus, for admin keys: it reveals the
server's traffic and experts)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator.gateway.deps import AdminDep, IsAdmin, State
from orchestrator.gateway.metrics import CIRCUIT_STATES
from store.db import StoreUnavailable

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(st: State, request: Request, response: Response, admin: IsAdmin) -> dict[str, Any]:
    """503 unless ready. Anyone may ask (probes carry no key); only admins see why and which experts."""
    problems = []
    try:
        await st.runtime.store.ping()
    except StoreUnavailable as e:
        problems.append(str(e))
    writer = st.runtime.trace_writer
    if writer is not None and not writer.healthy:
        problems.append(f"trace writer: {writer.last_error}")  # requests would answer 503 meanwhile
    replica = getattr(request.app.state, "replica", None)
    if replica is not None:
        problems += replica.problems()
    statuses = await st.expert_health()
    if not any(h.healthy for h in statuses):
        problems.append("no healthy expert")
    if problems:
        response.status_code = 503
    status = "ready" if not problems else "not ready"
    if not admin:  # the problems name the store's and the writer's errors: admins only
        return {"status": status, "problems": [], "experts": {}}
    body: dict[str, Any] = {"status": status, "problems": problems, "experts": {h.name: h.healthy for h in statuses}}
    if writer is not None:
        body["trace_writer"] = writer.snapshot()
    if replica is not None:
        body["replica"] = replica.snapshot()
    return body


@router.get("/metrics")
async def metrics(st: State, _: AdminDep) -> Response:
    for name in st.runtime.registry.names:
        st.metrics.queue_depth.labels(name).set(st.runtime.dispatcher.queue_depth(name))
    for name, b in st.runtime.dispatcher.breakers().items():
        st.metrics.circuit_state.labels(name).set(CIRCUIT_STATES[b.state])
        st.metrics.circuit_opens.labels(name).set(b.opens)
    if st.runtime.trace_writer is not None:
        st.metrics.trace_backlog.set(st.runtime.trace_writer.backlog)
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)
