"""What route handlers depend on: the app's long-lived state and the caller, as typed aliases.

    @router.get("/v1/models")
    async def list_models(st: State, _: CallerDep) -> ModelList: ...

`State` is the `GatewayState` the lifespan put on `app.state.gateway`; `CallerDep` authenticates
the request (and applies the rate limit) before the handler runs; `AdminDep` also requires the
admin role (403 otherwise), `AdminKeyDep` an admin key, and `IsAdmin` says whether the caller is
an admin without requiring a key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import Depends, Request

from experts.spec import OrchestratorConfig
from experts.types import HealthStatus
from orchestrator.gateway import errors as E
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
        # names and aliases of the config file's experts: an API caller may neither delete nor shadow them
        self.config_names = frozenset(n.lower() for spec in config.experts for n in spec.all_names())
        self.started = time.time()
        self.tasks: set[asyncio.Task[Any]] = set()  # streamed answers in flight (held until done)
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


def client_address(request: Request) -> str:
    """The peer's address (uvicorn puts a trusted proxy's X-Forwarded-For here; see --forwarded-allow-ips)."""
    return request.client.host if request.client else "unknown"


async def current_caller(request: Request, st: State) -> Caller:
    return await st.auth.caller(request.headers.get("authorization", ""), client_address(request))


CallerDep = Annotated[Caller, Depends(current_caller)]


async def admin_caller(caller: CallerDep) -> Caller:
    """The caller, who must hold an admin key (or be the operator of an open gateway)."""
    if not caller.is_admin:
        raise E.Forbidden("this needs an admin API key (`orchestrator keys create NAME --admin`)", code="admin_required")
    return caller


AdminDep = Annotated[Caller, Depends(admin_caller)]


async def admin_key_caller(caller: AdminDep) -> Caller:
    """An admin *key*: managing keys over HTTP needs one even on an open gateway (the first key
    comes from the CLI), so nobody can close or take over an open gateway from the network."""
    if caller.key_id is None:
        raise E.Unauthorized("managing API keys over HTTP needs an admin API key; create the first with `orchestrator keys create NAME --admin`")
    return caller


AdminKeyDep = Annotated[Caller, Depends(admin_key_caller)]


async def optional_admin(request: Request, st: State) -> bool:
    """Whether the request comes from an admin; a request without a key is simply not one, nor is
    any while the store cannot say (for routes that answer everyone, and say more to admins)."""
    try:
        if await st.auth.required() and not request.headers.get("authorization"):
            return False
        return (await current_caller(request, st)).is_admin
    except E.ServiceUnavailable:
        return False


IsAdmin = Annotated[bool, Depends(optional_admin)]


def batch_runner(st: State) -> BatchRunner:
    return st.batches


Runner = Annotated[BatchRunner, Depends(batch_runner)]
