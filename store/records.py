"""Typed records the store accepts and returns (no ORM objects leave the store)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ExpertCallRecord(BaseModel):
    seq: int = 0
    expert: str
    role: str = "expert"  # expert | aggregator | keyword | callee | policy
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    finish_reason: str | None = None
    error_kind: str | None = None
    error_message: str | None = None
    fallback_for: str | None = None
    output: str | None = None
    answer: str | None = None


class TraceStepRecord(BaseModel):
    seq: int = 0
    kind: str
    detail: dict[str, Any] = Field(default_factory=dict)
    duration_s: float = 0.0


class PlanRecord(BaseModel):
    router: str
    experts: list[Any] = Field(default_factory=list)
    aggregation: dict[str, Any] = Field(default_factory=dict)
    detail: dict[str, Any] = Field(default_factory=dict)


class TraceRecord(BaseModel):
    """One request with its plan, steps and expert calls: written in one transaction."""

    id: str
    created_at: datetime | None = None
    router: str
    query_text: str
    query_meta: dict[str, Any] = Field(default_factory=dict)
    answer_text: str | None = None
    answer: str | None = None
    status: str = "ok"
    error: str | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    owner: str | None = None
    plan: PlanRecord | None = None
    steps: list[TraceStepRecord] = Field(default_factory=list)
    calls: list[ExpertCallRecord] = Field(default_factory=list)


class BenchItemRecord(BaseModel):
    router: str
    question_id: str
    category: str = ""
    pred: str | None = None
    correct: bool = False
    detail: dict[str, Any] = Field(default_factory=dict)


def pool_key(pool: Sequence[str] | None) -> str | None:
    """The key fits are stored under for an expert pool: the same set of names in any order gives
    the same key (None: an artefact not fitted for a pool, such as a MoT checkpoint)."""
    if pool is None:
        return None
    return hashlib.sha256("\n".join(sorted(set(pool))).encode()).hexdigest()[:32]


class ArtefactRecord(BaseModel):
    """One stored version of a fitted router's state. `pool_key` names the pool it was fitted
    for (routers load the newest, or the pinned, version for their own pool)."""

    kind: str
    name: str
    version: int
    created_at: datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    payload: bytes = b""
    pool_key: str | None = None
    pinned: bool = False  # `orchestrator profile use VERSION` pinned it for its pool


class BatchRecord(BaseModel):
    """A batch job as stored; `requests` are the submitted items (custom_id + chat body)."""

    id: str
    owner: str | None = None
    status: str = "in_progress"
    created_at: datetime | None = None
    completed_at: datetime | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    requests: list[dict[str, Any]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    input_file_id: str | None = None
    lease_owner: str | None = None  # the replica running it, while its lease lasts
    lease_expires_at: datetime | None = None


class BatchItemRecord(BaseModel):
    """One finished request of a batch: a chat completion body, or an error envelope."""

    idx: int
    custom_id: str | None = None
    ok: bool = True
    status_code: int = 200
    body: dict[str, Any] = Field(default_factory=dict)
    trace_id: str | None = None


class ApiKeyRecord(BaseModel):
    """A gateway API key as stored (never the key itself: only its hash is kept)."""

    id: str
    name: str
    role: str = "user"  # admin | user
    created_at: datetime | None = None
    revoked: bool = False


class IdempotencyRecord(BaseModel):
    """Who holds an idempotency key: `claimed` if this call took it, else the holder's request
    hash and batch (None while the holder is still submitting)."""

    owner: str
    key: str
    request_hash: str
    batch_id: str | None = None
    claimed: bool = False


class FileRecord(BaseModel):
    """An uploaded file; `content` is loaded only when asked for."""

    id: str
    owner: str | None = None
    purpose: str = "batch"
    filename: str = ""
    size: int = 0  # bytes
    created_at: datetime | None = None
    content: bytes | None = None


class FeedbackRecord(BaseModel):
    """A rating of one trace: `score` in [-1, 1] (thumbs down -1, up 1), by the key `owner`."""

    id: int | None = None
    trace_id: str
    owner: str | None = None
    score: float
    comment: str | None = None
    created_at: datetime | None = None
    call_seq: int | None = None  # a score for one expert call of the trace (its seq); None: the answer's


class TraceSummaryRecord(BaseModel):
    """A trace as listed (no plan, steps or outputs): what a search result shows."""

    id: str
    created_at: datetime | None = None
    router: str
    status: str = "ok"
    latency_s: float = 0.0
    cost_usd: float = 0.0
    owner: str | None = None
    query_text: str = ""  # its first 200 characters
    experts: list[str] = Field(default_factory=list)


class TrafficGroup(BaseModel):
    """One router's (or expert's) answers in a window: exact counts and sums, and the latencies
    of its newest ones (a bounded sample, for percentiles)."""

    name: str
    requests: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    latencies_s: list[float] = Field(default_factory=list)


class TrafficRecord(BaseModel):
    routers: list[TrafficGroup] = Field(default_factory=list)
    experts: list[TrafficGroup] = Field(default_factory=list)
