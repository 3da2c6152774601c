"""Grouped work on a Ray cluster: each expert group of a grouped run is one Ray task.

    async with RayEngine.connect(address="auto") as engine:          # or None: a local Ray instance
        run = await GroupedScheduler(registry, engine=engine).run(router, queries)
    engine.ledger_events()   # which group started and finished on which node

The plan is made once, in the driver (the process that calls the router); only the "run one
expert's whole group" step (`GroupEngine.run_groups`, orchestrator/execution.py) moves: every
group of a phase is submitted at once as a task that builds the expert's backend from its
serialisable `ExpertSpec` (loaded once per task: Symbolic-MoE's "each model once per job"),
answers the group through a one-expert `Dispatcher` (the same batching, retries and breaker as
in-process), and returns the results. Aggregation happens back in the driver. Each task asks for
the resources its backend needs (`resources_for`): a GPU per in-process model where the cluster
has GPUs, a CPU share for recorded and HTTP experts.

A node that dies mid-group loses that task; Ray runs it again elsewhere (`max_retries`: Ray's
retry of tasks whose worker or node died). Expert errors never raise in the task (they come back
in the results, as in-process), so `retry_exceptions` stays off: a group is re-run for a lost
node only. The driver gets exactly one result list per group, whatever ran twice, and stores
each item once (batch jobs: keyed by batch id and index).

The worker processes import this project, so every node needs it installed (the same image as
the gateway) and, for recorded experts, the recorded directory at the same path.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from experts.backends.base import ExpertBackend
from experts.errors import ExpertUnavailable
from experts.registry import ExpertRegistry, build_backend
from experts.spec import BackendKind, ExpertSpec, resolve_api_key
from experts.types import GenerationRequest, GenerationResult
from orchestrator.dispatcher import Dispatcher
from orchestrator.execution import Executor

BackendFactory = Callable[[ExpertSpec, "str | None"], ExpertBackend]  # (spec, its upstream API key)

# CPU share of one group task by backend kind: recorded replays and HTTP clients mostly wait.
CPUS = {BackendKind.LOCAL: 1.0, BackendKind.RECORDED: 0.5, BackendKind.OPENAI: 0.25}


def default_backend(spec: ExpertSpec, api_key: str | None) -> ExpertBackend:
    """The backend `build_backend` makes, with the API key the driver resolved (a worker node
    does not have the driver's environment)."""
    if spec.backend is BackendKind.OPENAI:
        from experts.backends.openai import OpenAIBackend

        return OpenAIBackend(spec, api_key=api_key)
    return build_backend(spec)


def resources_for(spec: ExpertSpec, *, cluster_gpus: float) -> dict[str, float]:
    """Ray task resources of one expert group: an in-process model takes a whole GPU when the
    cluster has any (its weights live there for the task), else a CPU; others a CPU share."""
    gpus = 1.0 if spec.backend is BackendKind.LOCAL and cluster_gpus > 0 else 0.0
    return {"num_cpus": CPUS[spec.backend], "num_gpus": gpus}


@dataclass
class GroupTask:
    """What one Ray task needs: the expert as a spec (never a live backend), its requests."""

    group_id: str
    phase: str
    spec: ExpertSpec
    requests: list[GenerationRequest]
    # the upstream API key, resolved in the driver; it travels inside the cluster only (Ray's
    # object transfer), and never into a record
    api_key: str | None = field(default=None, repr=False)


@dataclass
class GroupRun:
    """One finished group: its results in request order, and what the task did."""

    group_id: str
    results: list[GenerationResult]
    node_id: str
    backend_calls: int
    busy_s: float


class GroupLedger:
    """Every group task's start and finish, with the node it ran on (a Ray actor pinned to the
    driver's node, so it outlives worker nodes): a retried group shows two starts, one finish."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def all(self) -> list[dict[str, Any]]:
        return list(self.events)


def run_group_task(task: GroupTask, ledger: Any, factory: BackendFactory) -> GroupRun:
    """The body of one Ray task (in a worker process on some node)."""
    node = ray.get_runtime_context().get_node_id()
    base = {"group_id": task.group_id, "phase": task.phase, "expert": task.spec.name, "node_id": node, "pid": os.getpid()}
    ray.get(ledger.record.remote({**base, "event": "started", "n": len(task.requests), "t": time.time()}))
    run = asyncio.run(_answer_group(task, factory, node))
    ray.get(ledger.record.remote({**base, "event": "finished", "n": len(run.results), "t": time.time()}))
    return run


async def _answer_group(task: GroupTask, factory: BackendFactory, node: str) -> GroupRun:
    spec = task.spec
    registry = ExpertRegistry()
    registry.add(spec, factory(spec, task.api_key))
    t0 = time.perf_counter()
    try:
        async with Dispatcher(registry) as dispatcher:
            await registry.backend(spec.name).load()  # once for the whole group
            results = await dispatcher.submit_many(spec.name, task.requests)
            stats = dispatcher.stats.get(spec.name)
            calls = stats.backend_calls if stats else 0
    finally:
        await registry.aclose()
    return GroupRun(task.group_id, results, node, calls, time.perf_counter() - t0)


class RayEngine:
    """A `GroupEngine` that runs each expert group as one Ray task (see the module docstring)."""

    def __init__(self, *, max_retries: int = 3, backend_factory: BackendFactory = default_backend) -> None:
        self.max_retries = max_retries
        self.backend_factory = backend_factory
        self._ledger: Any = None
        self._task = ray.remote(run_group_task)
        self._owns_ray = False
        self.runs: list[GroupRun] = []  # every group this engine ran, in completion order

    @classmethod
    def connect(cls, address: str | None = None, **kw: Any) -> "RayEngine":
        """Join the cluster at `address` ("auto": the one `ray start` made on this machine;
        None: a Ray instance of this process's own, stopped at close)."""
        engine = cls(**kw)
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            engine._owns_ray = True
        return engine

    def ledger(self) -> Any:
        if self._ledger is None:
            here = ray.get_runtime_context().get_node_id()
            self._ledger = ray.remote(GroupLedger).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            ).remote()
        return self._ledger

    def ledger_events(self) -> list[dict[str, Any]]:
        return ray.get(self.ledger().all.remote()) if self._ledger is not None else []

    def close(self) -> None:
        if self._ledger is not None:
            ray.kill(self._ledger)
            self._ledger = None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> "RayEngine":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def run_groups(self, executor: Executor, groups: list[tuple[str, list[GenerationRequest]]],
                         phase: str) -> list[list[GenerationResult]]:
        registry = executor.registry
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        ledger = self.ledger()
        progress = executor.progress

        async def one(expert: str, requests: list[GenerationRequest]) -> list[GenerationResult]:
            spec = registry.spec(expert)
            key = resolve_api_key(spec, registry.secrets) if spec.backend is BackendKind.OPENAI else None
            task = GroupTask(f"{phase}:{expert}:{uuid.uuid4().hex[:8]}", phase, spec, requests, key)
            ref = self._task.options(max_retries=self.max_retries, retry_exceptions=False,
                                     **resources_for(spec, cluster_gpus=gpus)).remote(task, ledger, self.backend_factory)
            if progress:
                progress(f"{phase}:{expert}", 0, len(requests))
            try:
                run: GroupRun = await asyncio.wrap_future(ref.future())
            except ray.exceptions.RayError as e:  # retries used up (or the task could not run): the group failed
                err = ExpertUnavailable(f"expert {expert!r}: its Ray task failed ({type(e).__name__}: {str(e)[:300]})", expert=expert)
                return [GenerationResult.failed(err) for _ in requests]
            self.runs.append(run)
            executor.record_group(expert, run.busy_s, run.backend_calls)
            if progress:
                progress(f"{phase}:{expert}", len(run.results), len(requests))
            return run.results

        return list(await asyncio.gather(*(one(e, reqs) for e, reqs in groups)))
