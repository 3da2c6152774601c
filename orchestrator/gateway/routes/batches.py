"""Batch jobs (`/v1/batches`): thin handlers over `BatchRunner` (the shapes are in `orchestrator.protocol`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import Caller
from orchestrator.gateway.batch_runner import BatchNotFound
from orchestrator.gateway.deps import CallerDep, GatewayState, Runner, State
from orchestrator.protocol import (
    BatchCreate,
    BatchItemError,
    BatchList,
    BatchObject,
    BatchRequestCounts,
    BatchResponse,
    BatchResultItem,
    BatchResults,
    ErrorInfo,
)
from store.records import BatchRecord

router = APIRouter(prefix="/v1/batches", tags=["batches"])


def batch_object(rec: BatchRecord) -> BatchObject:
    def ts(d):  # type: ignore[no-untyped-def]
        return int(d.timestamp()) if d is not None else None

    return BatchObject(
        id=rec.id, status=rec.status, created_at=ts(rec.created_at) or 0,  # type: ignore[arg-type]
        completed_at=ts(rec.completed_at) if rec.status == "completed" else None,
        cancelled_at=ts(rec.completed_at) if rec.status == "cancelled" else None,
        request_counts=BatchRequestCounts(total=rec.total, completed=rec.completed, failed=rec.failed),
        metadata=rec.meta or None,
        errors=ErrorInfo(message=rec.error, type="server_error") if rec.error else None,
    )


async def _owned(st: GatewayState, caller: Caller, batch_id: str) -> BatchRecord:
    """The caller's batch; another key's batch is reported as missing (no existence leak)."""
    with E.map_store_exceptions():
        rec = await st.runtime.store.get_batch(batch_id[:64], owner=caller.key_id)
    if rec is None:
        raise E.NotFound(f"no batch {batch_id[:64]!r}" + (" for this API key" if caller.key_id else ""), param="batch_id")
    return rec


@router.post("", response_model=BatchObject)
async def create_batch(body: BatchCreate, st: State, caller: CallerDep, runner: Runner) -> BatchObject:
    rec = await runner.submit(body, owner=caller.key_id)
    return batch_object(rec)


@router.get("", response_model=BatchList)
async def list_batches(st: State, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> BatchList:
    recs = await st.runtime.store.list_batches(owner=caller.key_id, limit=limit + 1)
    return BatchList(data=[batch_object(r) for r in recs[:limit]], has_more=len(recs) > limit)


@router.get("/{batch_id}", response_model=BatchObject)
async def get_batch(batch_id: str, st: State, caller: CallerDep) -> BatchObject:
    return batch_object(await _owned(st, caller, batch_id))


@router.get("/{batch_id}/results", response_model=BatchResults)
async def batch_results(
    batch_id: str, st: State, caller: CallerDep,
    after: Annotated[int, Query(ge=-1, description="only items with a larger index")] = -1,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> BatchResults:
    """Finished items in index order (partial while the job runs), paged with `after`/`limit`."""
    rec = await _owned(st, caller, batch_id)
    items = await st.runtime.store.batch_items(rec.id, after=after, limit=limit + 1)
    data = []
    for it in items[:limit]:
        err = None
        if not it.ok:
            info = it.body.get("error", {})
            err = BatchItemError(code=info.get("code"), message=info.get("message", "failed"))
        data.append(BatchResultItem(
            id=f"{rec.id}_req_{it.idx}", custom_id=it.custom_id, index=it.idx,
            response=BatchResponse(status_code=it.status_code, request_id=it.trace_id, body=it.body), error=err,
        ))
    return BatchResults(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                        has_more=len(items) > limit)


@router.post("/{batch_id}/cancel", response_model=BatchObject)
async def cancel_batch(batch_id: str, st: State, caller: CallerDep, runner: Runner) -> BatchObject:
    rec = await _owned(st, caller, batch_id)
    try:
        return batch_object(await runner.cancel(rec.id, owner=caller.key_id))
    except BatchNotFound:
        raise E.NotFound(f"no batch {batch_id[:64]!r}", param="batch_id") from None
