"""Batch jobs (`/v1/batches`): thin handlers over `BatchRunner` (the shapes are in `orchestrator.protocol`).

`POST /v1/batches` takes an uploaded file (`input_file_id`, the SDK's `client.batches.create`) or
the requests inline; a finished batch names its result files (`output_file_id`, `error_file_id`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from orchestrator.gateway import errors as E
from orchestrator.gateway import idempotency
from orchestrator.gateway.auth import Caller
from orchestrator.gateway.batch_files import read_input, result_file_id
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

    finished = rec.status in ("completed", "cancelled")
    return BatchObject(
        id=rec.id, status=rec.status, created_at=ts(rec.created_at) or 0,  # type: ignore[arg-type]
        input_file_id=rec.input_file_id, in_progress_at=ts(rec.created_at),
        completed_at=ts(rec.completed_at) if rec.status == "completed" else None,
        failed_at=ts(rec.completed_at) if rec.status == "failed" else None,
        cancelled_at=ts(rec.completed_at) if rec.status == "cancelled" else None,
        output_file_id=result_file_id(rec.id, "output") if finished else None,
        error_file_id=result_file_id(rec.id, "errors") if finished and rec.failed else None,
        request_counts=BatchRequestCounts(total=rec.total, completed=rec.completed, failed=rec.failed),
        metadata=rec.meta or None,
        # what broke stays in the log (it can be a database error); the caller learns that it broke
        errors=ErrorInfo(message="the batch job failed; the gateway's log has the details", type="server_error") if rec.error else None,
    )


async def _owned(st: GatewayState, caller: Caller, batch_id: str) -> BatchRecord:
    """The caller's batch; another key's batch is reported as missing (no existence leak)."""
    with E.map_store_exceptions():
        rec = await st.runtime.store.get_batch(batch_id[:64], owner=caller.key_id)
    if rec is None:
        raise E.NotFound(f"no batch {batch_id[:64]!r}" + (" for this API key" if caller.key_id else ""), param="batch_id")
    return rec


@router.post("", response_model=BatchObject)
async def create_batch(
    body: BatchCreate, st: State, caller: CallerDep, runner: Runner,
    idempotency_key: Annotated[str | None, Header(alias=idempotency.HEADER, pattern=idempotency.KEY_PATTERN,
                                                  description="a retried submit with the same key returns the first job")] = None,
) -> BatchObject:
    async def submit() -> BatchRecord:
        if body.input_file_id is None:
            return await runner.submit(body, owner=caller.key_id)
        with E.map_store_exceptions():
            file = await st.runtime.store.get_file(body.input_file_id[:64], owner=caller.key_id, with_content=True)
        if file is None or file.purpose != "batch":
            raise E.NotFound(f"no batch input file {body.input_file_id[:64]!r}" + (" for this API key" if caller.key_id else "")
                             + "; upload one with POST /v1/files (purpose 'batch')", param="input_file_id")
        lines = read_input(file.content or b"", endpoint=body.endpoint)
        return await runner.submit_lines(lines, owner=caller.key_id, metadata=body.metadata, input_file_id=file.id)

    if idempotency_key is not None:
        return batch_object(await idempotency.submit_once(st.runtime.store, body, caller, idempotency_key, submit))
    rec = await submit()
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
