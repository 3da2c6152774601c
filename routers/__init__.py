"""Routers: one module or folder per method, all on the `Router` base, over the plain types of
`routers.types`. Nothing in this package imports the orchestrator."""

from routers.base import Router
from routers.registry import ROUTER_CLASSES, build_router, router_class, router_names
from routers.types import (
    Aggregation,
    Assignment,
    ExpertOutput,
    ExpertRuntime,
    FinalAnswer,
    FitData,
    FitOutcome,
    Plan,
    Query,
    QueryOutcome,
    RouterContext,
    RoutingError,
)

__all__ = [
    "ROUTER_CLASSES",
    "Aggregation",
    "Assignment",
    "ExpertOutput",
    "ExpertRuntime",
    "FinalAnswer",
    "FitData",
    "FitOutcome",
    "Plan",
    "Query",
    "QueryOutcome",
    "Router",
    "RouterContext",
    "RoutingError",
    "build_router",
    "router_class",
    "router_names",
]
