"""Graph state shared by the pipeline's LangGraph graphs.

List fields merge by concatenation, so fan-out branches (one per expert call) each return only
the records they add."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from orchestrator.aggregators import ExpertOutput, FinalAnswer
from routers.base import Plan, Query
from store.records import ExpertCallRecord, TraceStepRecord


class QueryState(TypedDict, total=False):
    query: Query
    plan: Plan
    outputs: Annotated[list[ExpertOutput], operator.add]
    calls: Annotated[list[ExpertCallRecord], operator.add]
    steps: Annotated[list[TraceStepRecord], operator.add]
    final: FinalAnswer
    scratch: dict[str, Any]  # per-method working state (Router-R1's transcript, ...)
