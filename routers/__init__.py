"""Routers: one module or folder per method, all on the `Router` base."""

from routers.base import (
    Aggregation,
    Assignment,
    FitData,
    FitOutcome,
    Plan,
    Query,
    Router,
    RouterContext,
    RoutingError,
)
from routers.registry import ROUTER_CLASSES, build_router, router_class, router_names

__all__ = [
    "ROUTER_CLASSES",
    "Aggregation",
    "Assignment",
    "FitData",
    "FitOutcome",
    "Plan",
    "Query",
    "Router",
    "RouterContext",
    "RoutingError",
    "build_router",
    "router_class",
    "router_names",
]
