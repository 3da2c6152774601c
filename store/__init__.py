"""Persistence: SQLAlchemy 2 async models, Alembic migrations, and the `Store` repository."""

from store.db import StoreUnavailable, open_engine
from store.records import (
    ArtefactRecord,
    BatchItemRecord,
    BatchRecord,
    BenchItemRecord,
    ExpertCallRecord,
    PlanRecord,
    TraceRecord,
    TraceStepRecord,
)
from store.repository import Store

__all__ = [
    "ArtefactRecord",
    "BatchItemRecord",
    "BatchRecord",
    "BenchItemRecord",
    "ExpertCallRecord",
    "PlanRecord",
    "Store",
    "StoreUnavailable",
    "TraceRecord",
    "TraceStepRecord",
    "open_engine",
]
