"""`GET /v1/traces/{trace_id}`: what happened to one answered request (plan, steps, every expert call)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter

from orchestrator.gateway import errors as E
from orchestrator.gateway.deps import CallerDep, State

router = APIRouter(prefix="/v1/traces")


@router.get("/{trace_id}")
async def get_trace(trace_id: str, st: State, caller: CallerDep) -> dict[str, Any]:
    # another key's trace is reported as missing (no existence leak)
    if len(trace_id) > 64:
        raise E.NotFound(f"no trace {trace_id[:64]!r}")
    pending = st.runtime.trace_writer.pending(trace_id) if st.runtime.trace_writer else None
    if pending is not None and (caller.key_id is None or pending.owner == caller.key_id):
        return json.loads(pending.model_dump_json())  # answered, not yet committed
    with E.map_store_exceptions():
        rec = await st.runtime.store.get_trace(trace_id, owner=caller.key_id)
    if rec is None:
        raise E.NotFound(f"no trace {trace_id!r}" + (" for this API key" if caller.key_id else ""))
    return json.loads(rec.model_dump_json())
