"""What route handlers depend on: the app's long-lived state and the caller, as typed aliases.

    @router.get("/v1/models")
    async def list_models(st: State, _: CallerDep) -> ModelList: ...

`State` is the `GatewayState` the lifespan put on `app.state.gateway`; `CallerDep` authenticates
the request (and applies the rate limit) before the handler runs.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from experts.spec import OrchestratorConfig
from experts.types import HealthStatus
from orchestrator.gateway.auth import Authenticator, Caller
from orchestrator.gateway.batch_runner import BatchRunner
from orchestrator.gateway.metrics import GatewayMetrics
from orchestrator.pipeline import Runtime
from orchestrator.settings import GatewaySettings


class GatewayState:
    """Long-lived objects of one app, built in its lifespan."""

    def __init__(self, config: OrchestratorConfig, settings: GatewaySettings, runtime: Runtime, metrics: GatewayMetrics,
                 batches: BatchRunner) -> None:
        self.config, self.settings, self.runtime, self.metrics, self.batches = config, settings, runtime, metrics, batches
        self.auth = Authenticator(runtime.store, settings)
        self.started = time.time()
        self._health: tuple[float, list[HealthStatus]] = (0.0, [])

    async def expert_health(self) -> list[HealthStatus]:
        """Every expert's last health probe; probed again once `health_cache_s` old."""
        at, cached = self._health
        if not cached or time.monotonic() - at > self.settings.health_cache_s:
            cached = await self.runtime.registry.check(timeout_s=5.0)
            self._health = (time.monotonic(), cached)
        return cached

    def forget_health(self) -> None:
        """Probe on the next `expert_health` (an expert was added or removed)."""
        self._health = (0.0, [])


def state_of(request: Request) -> GatewayState:
    return request.app.state.gateway


State = Annotated[GatewayState, Depends(state_of)]


async def current_caller(request: Request, st: State) -> Caller:
    return await st.auth.caller(request.headers.get("authorization", ""))


CallerDep = Annotated[Caller, Depends(current_caller)]


def batch_runner(st: State) -> BatchRunner:
    return st.batches


Runner = Annotated[BatchRunner, Depends(batch_runner)]
