"""Prometheus metrics, in a registry owned by the app (no process-global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from store.records import ExpertCallRecord


CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("orchestrator_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("orchestrator_request_latency_seconds", "request latency", ["route"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.routing = Histogram("orchestrator_routing_latency_seconds", "time to route one query", ["router"], registry=r,
                                 buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1))
        self.expert_calls = Counter("orchestrator_expert_calls", "expert calls", ["expert", "status"], registry=r)
        self.tokens = Counter("orchestrator_tokens", "tokens", ["expert", "kind"], registry=r)
        self.cost = Counter("orchestrator_cost_usd", "cost in USD", ["expert"], registry=r)
        self.queue_depth = Gauge("orchestrator_queue_depth", "requests waiting per expert", ["expert"], registry=r)
        self.circuit_state = Gauge("orchestrator_circuit_state", "circuit breaker per expert: 0 closed, 1 half-open, 2 open", ["expert"], registry=r)
        self.circuit_opens = Gauge("orchestrator_circuit_opens", "times the expert's circuit has opened", ["expert"], registry=r)
        self.trace_backlog = Gauge("orchestrator_trace_backlog", "traces answered but not yet committed to the store", registry=r)
        self.batch_size = Histogram("orchestrator_batch_size", "requests per backend call", ["expert"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        # Per router (a direct expert call is router "single"; /v1/completions and /v1/embeddings "passthrough").
        answer_buckets = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
        self.router_requests = Counter("orchestrator_router_requests", "answers per router and status", ["router", "status"], registry=r)
        self.router_latency = Histogram("orchestrator_router_latency_seconds", "time to the whole answer", ["router"], registry=r,
                                        buckets=answer_buckets)
        self.router_cost = Counter("orchestrator_router_cost_usd", "cost of the answers in USD", ["router"], registry=r)
        self.ttft = Histogram("orchestrator_time_to_first_token_seconds", "streamed answers: time to the first token", ["router"],
                              registry=r, buckets=answer_buckets)
        self.cache = Counter("orchestrator_response_cache", "response cache lookups (opt-in caches)", ["kind", "result"], registry=r)

        # Exploration (issue 23): the share of queries a router may spend on shadow calls, and what it spent.
        self.explore_budget = Gauge("orchestrator_exploration_budget_ratio", "share of queries that get a shadow call", ["router"], registry=r)
        self.explore_calls = Counter("orchestrator_exploration_calls", "shadow calls to experts a plan did not pick", ["router"], registry=r)
        self.explore_cost = Counter("orchestrator_exploration_cost_usd", "cost of the shadow calls in USD", ["router"], registry=r)
        self.explore_queries = Counter("orchestrator_exploration_eligible_queries", "answered queries of routers that explore", ["router"], registry=r)

        # Label children by label values: `.labels()` costs a few microseconds (validation, a
        # lock) and the hot path touches up to eight metrics per request.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def on_batch(self, expert: str, size: int, depth: int) -> None:
        self.child(self.batch_size, expert).observe(size)
        self.child(self.queue_depth, expert).set(depth)

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.child(self.requests, route, str(status)).inc()
        self.child(self.latency, route).observe(seconds)

    def record_calls(self, calls: list[ExpertCallRecord]) -> None:
        for c in calls:
            self.child(self.expert_calls, c.expert, c.error_kind or "ok").inc()
            if c.error_kind is None:
                self.child(self.tokens, c.expert, "prompt").inc(c.prompt_tokens)
                self.child(self.tokens, c.expert, "completion").inc(c.completion_tokens)
                cost = self.child(self.cost, c.expert)  # the series exists at 0 for an unpriced expert
                if c.cost_usd:  # adding 0 would only take the child's lock
                    cost.inc(c.cost_usd)

    def record_answer(self, router: str, status: int | str, seconds: float | None = None, cost_usd: float = 0.0) -> None:
        """One answered (or refused) request of `router`: status, latency and cost."""
        self.child(self.router_requests, router, str(status)).inc()
        if seconds is not None:
            self.child(self.router_latency, router).observe(seconds)
        if cost_usd:
            self.child(self.router_cost, router).inc(cost_usd)

    def record_exploration(self, router: str, budget: float, calls: list[ExpertCallRecord]) -> None:
        """One answer of a router that explores (`budget` > 0): its budget and its shadow calls."""
        self.child(self.explore_budget, router).set(budget)
        self.child(self.explore_queries, router).inc()
        shadow = [c for c in calls if c.role == "shadow"]
        if shadow:
            self.child(self.explore_calls, router).inc(len(shadow))
            self.child(self.explore_cost, router).inc(sum(c.cost_usd for c in shadow))

    def record_first_token(self, router: str, seconds: float) -> None:
        self.child(self.ttft, router).observe(seconds)

    def record_cache(self, kind: str, outcome: str) -> None:
        """One response-cache lookup: kind "exact" | "semantic", outcome "hit" | "miss"."""
        self.child(self.cache, kind, outcome).inc()
