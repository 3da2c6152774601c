"""ORM tables. Migrations in `store/migrations/versions` create exactly these."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ExpertRow(Base):
    __tablename__ = "experts"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    backend: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(512))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    # "config" (seeded from a replica's config file), "api" (registered through the gateway),
    # "deleted" (deleted through the gateway: a tombstone). See orchestrator/registry_sync.py.
    origin: Mapped[str] = mapped_column(String(16), default="config", server_default="config")


class RegistryStateRow(Base):
    """One row: the version of the shared expert registry, bumped by every change to `experts`
    (replicas poll it, and on Postgres are notified of it)."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, default=0)


class RequestRow(Base):
    """One query handled by the orchestrator: the root of a trace."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    router: Mapped[str] = mapped_column(String(64), index=True)
    query_text: Mapped[str] = mapped_column(Text)
    query_meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    answer_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)

    plan: Mapped["RoutingPlanRow | None"] = relationship(back_populates="request", cascade="all, delete-orphan", uselist=False)
    steps: Mapped[list["TraceStepRow"]] = relationship(back_populates="request", cascade="all, delete-orphan", order_by="TraceStepRow.seq")
    calls: Mapped[list["ExpertCallRow"]] = relationship(back_populates="request", cascade="all, delete-orphan", order_by="ExpertCallRow.seq")


class RoutingPlanRow(Base):
    __tablename__ = "routing_plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), unique=True)
    router: Mapped[str] = mapped_column(String(64))
    experts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    aggregation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    request: Mapped[RequestRow] = relationship(back_populates="plan")


class TraceStepRow(Base):
    __tablename__ = "trace_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)

    request: Mapped[RequestRow] = relationship(back_populates="steps")


class ExpertCallRow(Base):
    __tablename__ = "expert_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    expert: Mapped[str] = mapped_column(String(128), index=True)
    role: Mapped[str] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    fallback_for: Mapped[str | None] = mapped_column(String(128), nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer: Mapped[str | None] = mapped_column(String(256), nullable=True)

    request: Mapped[RequestRow] = relationship(back_populates="calls")


class BenchRunRow(Base):
    __tablename__ = "bench_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class BenchItemRow(Base):
    """One router's outcome on one question of a benchmark run (what makes a run resumable)."""

    __tablename__ = "bench_items"
    __table_args__ = (UniqueConstraint("run_id", "router", "question_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("bench_runs.id", ondelete="CASCADE"), index=True)
    router: Mapped[str] = mapped_column(String(64))
    question_id: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64), default="")
    pred: Mapped[str | None] = mapped_column(String(64), nullable=True)
    correct: Mapped[bool] = mapped_column(default=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ArtefactRow(Base):
    """A fitted, versioned router artefact (profiles, classifiers, maps, checkpoints)."""

    __tablename__ = "artefacts"
    __table_args__ = (UniqueConstraint("kind", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # records.pool_key(meta["pool"]): routers load the newest version fitted for their own pool.
    pool_key: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class FitPinRow(Base):
    """`orchestrator profile use VERSION`: the version every replica routes with for one pool,
    instead of the newest (a rollback). No row: the newest version."""

    __tablename__ = "fit_pins"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    pool_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class RefitStateRow(Base):
    """The online refit of one router artefact for one pool: the lease of the replica refitting
    it (claimed atomically, like batch jobs') and how many outcomes the last refit used."""

    __tablename__ = "refit_state"

    kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    pool_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    outcomes_used: Mapped[int] = mapped_column(Integer, default=0)
    refits: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class KeywordCacheRow(Base):
    __tablename__ = "keyword_cache"

    question_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tagger: Mapped[str] = mapped_column(String(128), primary_key=True)
    keywords: Mapped[list[Any]] = mapped_column(JSON)


class ApiKeyRow(Base):
    """A gateway API key; only its SHA-256 is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[bool] = mapped_column(default=False)
    role: Mapped[str] = mapped_column(String(16), default="user", server_default="user")  # admin | user


class IdempotencyKeyRow(Base):
    """An `Idempotency-Key` a caller sent with `POST /v1/batches`: the batch it created, so a
    retried submit returns that batch. `batch_id` is null while the first submit is under way."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # the key id; "" when auth is off
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BatchRow(Base):
    """A gateway batch job (`/v1/batches`); its requests are kept so a restart can resume it."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="in_progress", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[list[Any]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the Files API form
    # The lease of the replica running the job (store/repository.py: claim, renew, release); a
    # job whose lease has expired is taken over by any replica's sweeper.
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True, index=True)


class BatchItemRow(Base):
    """The result of one request of a batch; (batch_id, idx) is unique, so a resumed job never
    writes an item twice."""

    __tablename__ = "batch_items"
    __table_args__ = (UniqueConstraint("batch_id", "idx"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    ok: Mapped[bool] = mapped_column(default=True)
    status_code: Mapped[int] = mapped_column(Integer, default=200)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FileRow(Base):
    """An uploaded file (`/v1/files`, purpose "batch": a batch job's JSONL input)."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(256))
    size: Mapped[int] = mapped_column(Integer)  # bytes
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    content: Mapped[bytes] = mapped_column(LargeBinary)


class FeedbackRow(Base):
    """A caller's rating of one answered request (`POST /v1/feedback`), kept for online learning."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(ForeignKey("requests.id", ondelete="CASCADE"), index=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the key that rated it
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    call_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)  # one expert call's score; None: the answer's
