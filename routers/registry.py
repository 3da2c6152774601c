"""One name → class map for routers; CLI choices, gateway model ids and config keys derive from it."""

from __future__ import annotations

import importlib
from typing import Any

from routers.base import Router
from routers.types import RouterContext, RoutingError

# name -> "module:Class"; imported lazily so that heavy methods (torch) load only when used.
ROUTER_CLASSES: dict[str, str] = {
    "single": "routers.baselines:SingleRouter",
    "random": "routers.baselines:RandomRouter",
    "all-vote": "routers.baselines:AllVoteRouter",
    "best-single": "routers.baselines:BestSingleRouter",
    "oracle": "routers.baselines:OracleRouter",
    "symbolic-moe": "routers.symbolic_moe:SymbolicMoERouter",
    "coe": "routers.coe:CoERouter",
    "cascade": "routers.cascade:CascadeRouter",
    "calibrated-vote": "routers.cascade:CalibratedVoteRouter",
    "knn": "routers.learned:KnnRouter",
    "mlp": "routers.learned:MlpRouter",
    "router-r1": "routers.router_r1:RouterR1Router",
    "mot": "routers.mot.router:MoTRouter",
}


def router_names() -> list[str]:
    return list(ROUTER_CLASSES)


def router_class(name: str) -> type[Router]:
    try:
        target = ROUTER_CLASSES[name]
    except KeyError:
        raise RoutingError(f"unknown router {name!r}; available routers: {', '.join(ROUTER_CLASSES)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_router(name: str, ctx: RouterContext, options: dict[str, Any] | None = None) -> Router:
    cls = router_class(name)
    try:
        return cls(ctx, **(options or {}))
    except TypeError as e:
        raise RoutingError(f"router {name!r}: bad options {options}: {e}") from None
