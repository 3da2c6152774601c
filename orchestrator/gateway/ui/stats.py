"""The overview's numbers: per router and per expert over a window of stored traces (requests per
second, p50/p95 latency, error rate, cost), and what the gateway's own metrics say since start."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.gateway.metrics import GatewayMetrics


class WindowStats(BaseModel):
    """One router's (or expert's) traffic over the window."""

    name: str
    requests: int
    per_s: float
    p50_s: float | None
    p95_s: float | None
    error_rate: float
    cost_usd: float
    tokens: int = 0


class Overview(BaseModel):
    window_s: float
    total: WindowStats
    routers: list[WindowStats]
    experts: list[WindowStats]
    since_start: dict[str, dict[str, int]]  # router -> status -> answers (the gateway's metrics)
    in_flight_traces: int = 0  # answered, not yet committed to the store


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))  # the smallest value with at least q of them at or below it
    return ordered[min(rank, len(ordered)) - 1]


def _window(name: str, rows: list[tuple[bool, float, float, int]], window_s: float) -> WindowStats:
    latencies = [lat for _, lat, _, _ in rows]
    errors = sum(1 for failed, _, _, _ in rows if failed)
    return WindowStats(name=name, requests=len(rows), per_s=len(rows) / window_s if window_s > 0 else 0.0,
                       p50_s=percentile(latencies, 0.5), p95_s=percentile(latencies, 0.95),
                       error_rate=errors / len(rows) if rows else 0.0, cost_usd=sum(c for _, _, c, _ in rows),
                       tokens=sum(t for _, _, _, t in rows))


def overview(requests: Iterable[tuple[Any, ...]], calls: Iterable[tuple[Any, ...]], window_s: float,
             metrics: GatewayMetrics | None = None, in_flight: int = 0) -> Overview:
    """`requests`: (router, status, latency_s, cost_usd, ...); `calls`: (expert, error_kind, latency_s, cost_usd, tokens)."""
    by_router: dict[str, list[tuple[bool, float, float, int]]] = defaultdict(list)
    for router, status, latency, cost, *_ in requests:
        by_router[router].append((status != "ok", float(latency or 0), float(cost or 0), 0))
    by_expert: dict[str, list[tuple[bool, float, float, int]]] = defaultdict(list)
    for expert, error_kind, latency, cost, tokens in calls:
        by_expert[expert].append((error_kind is not None, float(latency or 0), float(cost or 0), int(tokens or 0)))
    every = [r for rows in by_router.values() for r in rows]
    return Overview(
        window_s=window_s, total=_window("all", every, window_s),
        routers=[_window(n, by_router[n], window_s) for n in sorted(by_router)],
        experts=[_window(n, by_expert[n], window_s) for n in sorted(by_expert)],
        since_start=since_start(metrics) if metrics is not None else {}, in_flight_traces=in_flight,
    )


def since_start(metrics: GatewayMetrics) -> dict[str, dict[str, int]]:
    """Answers per router and status counted by this process (`orchestrator_router_requests`)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for family in metrics.router_requests.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels["router"]][sample.labels["status"]] = int(sample.value)
    return dict(out)
