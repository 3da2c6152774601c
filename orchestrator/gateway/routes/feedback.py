"""`POST /v1/feedback`: a caller's rating of one answered request, kept in the store (for the
online-learning issue) and shown on the dashboard's trace page. A key rates only its own traces
(another key's is reported missing, as `GET /v1/traces` does); an admin rates any."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import Caller
from orchestrator.gateway.deps import CallerDep, GatewayState, State
from orchestrator.protocol import FeedbackCreate, FeedbackObject
from store.records import FeedbackRecord

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])
PENDING_FLUSH_S = 5.0  # a trace answered but not yet committed is waited for this long


async def record_feedback(st: GatewayState, caller: Caller, body: FeedbackCreate) -> FeedbackRecord:
    """Store `body` if `caller` may rate its trace (the dashboard's form calls this too)."""
    writer = st.runtime.trace_writer
    if writer is not None and writer.pending(body.trace_id) is not None:
        # The row must exist before a rating can refer to it. Still waiting after the flush (a slow
        # or locked store): the trace exists, so say "retry", not "no such trace".
        if not await writer.flush(PENDING_FLUSH_S) and writer.pending(body.trace_id) is not None:
            raise E.ServiceUnavailable(f"trace_id: trace {body.trace_id!r} is answered but not stored yet (the store is slow); "
                                       "retry shortly", param="trace_id", code="trace_pending", retry_after=2)
    with E.map_store_exceptions():
        trace = await st.runtime.store.get_trace(body.trace_id, owner=None if caller.is_admin else caller.key_id)
        if trace is None:
            raise E.NotFound(f"trace_id: no trace {body.trace_id!r}" + ("" if caller.is_admin else " for this API key"),
                             param="trace_id", code="trace_not_found")
        if body.call_seq is not None and body.call_seq not in {c.seq for c in trace.calls}:
            raise E.BadRequest(f"call_seq: trace {trace.id!r} has no expert call {body.call_seq} (its calls are 0..{len(trace.calls) - 1})",
                               param="call_seq")
        return await st.runtime.store.add_feedback(FeedbackRecord(trace_id=trace.id, owner=caller.key_id, score=body.score,
                                                                  comment=body.comment, call_seq=body.call_seq))


def feedback_object(rec: FeedbackRecord) -> FeedbackObject:
    return FeedbackObject(id=rec.id or 0, trace_id=rec.trace_id, score=rec.score, comment=rec.comment,
                          created_at=int(rec.created_at.timestamp()) if rec.created_at else 0, call_seq=rec.call_seq)


@router.post("", response_model=FeedbackObject, status_code=201)
async def create_feedback(body: FeedbackCreate, st: State, caller: CallerDep) -> FeedbackObject:
    return feedback_object(await record_feedback(st, caller, body))
