"""Persistence: SQLAlchemy 2 async models, Alembic migrations, and the `Store` repository.

    from store import Store, TraceRecord

The typed records (`store.records`, plain pydantic) are imported at once; the database layer
(`Store`, `StoreUnavailable`, `open_engine`) only when first asked for, so code that needs the
records alone (the gateway's client) does not load SQLAlchemy and Alembic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from store.db import StoreUnavailable, open_engine
    from store.repository import Store

_DATABASE_LAYER = {"Store": "store.repository", "StoreUnavailable": "store.db", "open_engine": "store.db"}


def __getattr__(name: str) -> Any:
    module = _DATABASE_LAYER.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


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
