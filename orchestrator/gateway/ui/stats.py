"""The overview's numbers: per router and per expert over a window of stored traces (requests per
second, error rate and cost from exact counts; p50/p95 latency over the newest answers, a bounded
sample), and what the gateway's own metrics say since start."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel

from orchestrator.gateway.metrics import GatewayMetrics
from store.records import TrafficGroup, TrafficRecord


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


def _window(g: TrafficGroup, window_s: float) -> WindowStats:
    return WindowStats(name=g.name, requests=g.requests, per_s=g.requests / window_s if window_s > 0 else 0.0,
                       p50_s=percentile(g.latencies_s, 0.5), p95_s=percentile(g.latencies_s, 0.95),
                       error_rate=g.errors / g.requests if g.requests else 0.0, cost_usd=g.cost_usd, tokens=g.tokens)


def overview(traffic: TrafficRecord, window_s: float, metrics: GatewayMetrics | None = None, in_flight: int = 0) -> Overview:
    """The window's stats from the store's `traffic` (percentiles over its latency sample)."""
    total = TrafficGroup(name="all", requests=sum(g.requests for g in traffic.routers), errors=sum(g.errors for g in traffic.routers),
                         cost_usd=sum(g.cost_usd for g in traffic.routers), tokens=sum(g.tokens for g in traffic.routers),
                         latencies_s=[v for g in traffic.routers for v in g.latencies_s])
    return Overview(
        window_s=window_s, total=_window(total, window_s),
        routers=[_window(g, window_s) for g in traffic.routers], experts=[_window(g, window_s) for g in traffic.experts],
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
