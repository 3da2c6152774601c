"""Grouped work on a Ray cluster: each expert a Ray actor for the job, each expert group one call.

    async with RayEngine.connect(address="auto") as engine:          # or None: a local Ray instance
        with engine.job() as job:                                     # actors live for this job
            run = await GroupedScheduler(registry, engine=job).run(router, queries)
    engine.ledger_events()   # which model loaded, which group started and finished, on which node

The plan is made once, in the driver (the process that calls the router); only the "run one
expert's whole group" step (`GroupEngine.run_groups`, orchestrator/execution.py) moves. Each
expert gets one long-lived actor (`ExpertActor`) at its first group of a job: it builds the
backend from the expert's serialisable `ExpertSpec`, loads the model at that first group and
keeps it resident for every later group of the job (every chunk of a batch job, every phase and
router of a bench run): Symbolic-MoE's "each model loaded once per job". A group is answered
through a one-expert `Dispatcher` (the same batching, retries and breaker as in-process).
Aggregation happens back in the driver. The actors of a job are killed when it ends (`job()`,
or `close`), which releases their models and resources. Each actor asks for the resources its
backend needs (`resources_for`) and holds them while resident: a GPU per in-process model where
the cluster has GPUs, a CPU share for recorded and HTTP experts; actors are spread over nodes.
Because a resident actor keeps its GPU until the job ends, a job needs a GPU per in-process model
it uses (more models than GPUs: the extra actors wait for a GPU that is freed only at the job's
end); aggregator calls (kind "llm") still run in the driver, through its own dispatcher.

A node that dies takes its actors with it; Ray makes each again on another node
(`max_restarts`: the constructor runs again, so that model loads a second time, there) and sends
the group a lost actor was running to the new one (`max_task_retries`, unbounded: see `_actor`). Expert errors never
raise in the actor (they come back in the results, as in-process), so a group is re-run for a
lost node only. The driver gets exactly one result list per group, whatever ran twice, and
stores each item once (batch jobs: keyed by batch id and index).

The worker processes import this project, so every node needs it installed (the same image as
the gateway) and, for recorded experts, the recorded directory at the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from experts.backends.base import ExpertBackend
from experts.errors import ConfigError, ExpertUnavailable
from experts.registry import ExpertRegistry, build_backend
from experts.spec import BackendKind, ExpertSpec, resolve_api_key
from experts.types import GenerationRequest, GenerationResult
from orchestrator.dispatcher import Dispatcher
from orchestrator.execution import Executor

BackendFactory = Callable[[ExpertSpec, "str | None"], ExpertBackend]  # (spec, its upstream API key)

# CPU share of one expert actor by backend kind. Actors hold it while resident (the whole job),
# so recorded replays and HTTP clients, which mostly wait, take a sliver: 16 of them fit a 1-CPU node.
CPUS = {BackendKind.LOCAL: 1.0, BackendKind.RECORDED: 0.05, BackendKind.OPENAI: 0.05}


def default_backend(spec: ExpertSpec, api_key: str | None) -> ExpertBackend:
    """The backend `build_backend` makes, with the API key the driver resolved (a worker node
    does not have the driver's environment)."""
    if spec.backend is BackendKind.OPENAI:
        from experts.backends.openai import OpenAIBackend

        return OpenAIBackend(spec, api_key=api_key)
    return build_backend(spec)


def resources_for(spec: ExpertSpec, *, cluster_gpus: float) -> dict[str, float]:
    """Ray resources of one expert's actor: an in-process model takes a whole GPU when the
    cluster has any (its weights live there for the job), else a CPU; others a CPU share."""
    gpus = 1.0 if spec.backend is BackendKind.LOCAL and cluster_gpus > 0 else 0.0
    return {"num_cpus": CPUS[spec.backend], "num_gpus": gpus}


@dataclass
class GroupRun:
    """One finished group: its results in request order, and what the actor did for it."""

    group_id: str
    results: list[GenerationResult]
    node_id: str
    backend_calls: int
    busy_s: float


class GroupLedger:
    """Every expert actor's model loads and every group's start and finish, with the node each
    happened on (a Ray actor pinned to the driver's node, so it outlives worker nodes): a group
    re-run after its node died shows two starts and one finish, its restarted actor a second load."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def all(self) -> list[dict[str, Any]]:
        return list(self.events)


class ExpertActor:
    """One expert, resident on one node for a whole job (a Ray actor): its backend is built from
    the spec, loaded at its first group, and kept for every later group of every chunk and phase.
    A restart (its node died) runs this constructor again elsewhere: a fresh backend, loaded anew."""

    def __init__(self, spec: ExpertSpec, api_key: str | None, factory: BackendFactory, ledger: Any) -> None:
        self.spec = spec
        self.ledger = ledger
        self.registry = ExpertRegistry()
        self.registry.add(spec, factory(spec, api_key))
        self.loads = 0
        self._load_lock: asyncio.Lock | None = None  # made in the actor's event loop, at first use

    def _event(self, **kw: Any) -> dict[str, Any]:
        return {"expert": self.spec.name, "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "t": time.time(), **kw}

    async def _ensure_loaded(self) -> None:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        async with self._load_lock:  # groups of two jobs' chunks may arrive together
            if self.loads == 0:
                await self.registry.backend(self.spec.name).load()
                self.loads += 1
                await self.ledger.record.remote(self._event(event="loaded", loads=self.loads))

    async def run_group(self, group_id: str, phase: str, requests: list[GenerationRequest]) -> GroupRun:
        base = {"group_id": group_id, "phase": phase}
        await self.ledger.record.remote(self._event(**base, event="started", n=len(requests)))
        t0 = time.perf_counter()
        await self._ensure_loaded()
        # a Dispatcher per group (the same batching, retries and breaker as in-process; exact
        # per-group stats); the backend it calls stays loaded across groups
        async with Dispatcher(self.registry) as dispatcher:
            results = await dispatcher.submit_many(self.spec.name, requests)
            stats = dispatcher.stats.get(self.spec.name)
            calls = stats.backend_calls if stats else 0
        run = GroupRun(group_id, results, ray.get_runtime_context().get_node_id(), calls, time.perf_counter() - t0)
        await self.ledger.record.remote(self._event(**base, event="finished", n=len(results)))
        return run


class RayEngine:
    """A `GroupEngine` that runs each expert group on that expert's Ray actor (see the module
    docstring). `job()` scopes actors to one job; groups run on the engine itself keep theirs
    until `close`."""

    def __init__(self, *, max_restarts: int = 3, max_task_retries: int = -1,
                 backend_factory: BackendFactory = default_backend) -> None:
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.backend_factory = backend_factory
        self._ledger: Any = None
        self._owns_ledger = True
        self._actor_cls = ray.remote(ExpertActor)
        self._actors: dict[str, tuple[str, Any, dict[str, float]]] = {}  # expert -> (built from, actor, its resources)
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

    @contextlib.contextmanager
    def job(self) -> Iterator["RayEngine"]:
        """An engine for one job (a batch job, a bench run): its own expert actors, each model
        loaded once for the job and released (the actors killed) when it ends; the same ledger."""
        sub = RayEngine(max_restarts=self.max_restarts, max_task_retries=self.max_task_retries,
                        backend_factory=self.backend_factory)
        sub._ledger, sub._owns_ledger = self.ledger(), False
        try:
            yield sub
        finally:
            sub.close()
            self.runs.extend(sub.runs)

    def ledger(self) -> Any:
        if self._ledger is None:
            here = ray.get_runtime_context().get_node_id()
            self._ledger = ray.remote(GroupLedger).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            ).remote()
        return self._ledger

    def ledger_events(self) -> list[dict[str, Any]]:
        return ray.get(self.ledger().all.remote()) if self._ledger is not None else []

    def _actor(self, spec: ExpertSpec, api_key: str | None, cluster: dict[str, float]) -> Any:
        """The expert's actor, made at its first group; remade if the expert's spec changed."""
        built_from = spec.model_dump_json() + (api_key or "")
        known = self._actors.get(spec.name)
        if known is not None and known[0] == built_from:
            return known[1]
        if known is not None:
            ray.kill(known[1])
            del self._actors[spec.name]
        gpus = float(cluster.get("GPU", 0.0))
        self._check_capacity(spec, cluster)
        # max_restarts: a lost node's actor is made again elsewhere; max_task_retries: the group
        # it was running is sent to the new one (expert errors never raise: they are results).
        # Unbounded (-1) because until the cluster declares the node dead (seconds) each retry
        # fails at once as "temporarily unavailable": a count of 3 is gone before the restart.
        # `max_restarts` still bounds it: an actor dead for good fails its calls (RayActorError).
        actor = self._actor_cls.options(
            max_restarts=self.max_restarts, max_task_retries=self.max_task_retries, scheduling_strategy="SPREAD",
            **resources_for(spec, cluster_gpus=gpus),
        ).remote(spec, api_key, self.backend_factory, self.ledger())
        self._actors[spec.name] = (built_from, actor, resources_for(spec, cluster_gpus=gpus))
        return actor

    def _check_capacity(self, spec: ExpertSpec, total: dict[str, float]) -> None:
        """Refuse a job whose resident actors can never all fit the cluster: Ray would queue the
        last ones for good (each holds its resources until the job ends), and the job would hang."""
        need = resources_for(spec, cluster_gpus=float(total.get("GPU", 0.0)))
        for key, ray_key in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            held = sum(r[key] for _, _, r in self._actors.values())
            have = float(total.get(ray_key, 0.0))
            if need[key] and held + need[key] > have + 1e-9:
                raise ConfigError(
                    f"--engine ray: expert {spec.name!r} needs {need[key]:g} {ray_key} for the whole job, and this "
                    f"job's other experts already hold {held:g} of the cluster's {have:g}; add nodes, or use fewer "
                    "in-process experts per job")

    def close(self) -> None:
        for _, actor, _ in self._actors.values():  # the job is over: its models leave the cluster
            ray.kill(actor)
        self._actors.clear()
        if self._ledger is not None and self._owns_ledger:
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
        await asyncio.to_thread(self.close)  # ray.kill and ray.shutdown block: not on the event loop

    async def run_groups(self, executor: Executor, groups: list[tuple[str, list[GenerationRequest]]],
                         phase: str) -> list[list[GenerationResult]]:
        registry = executor.registry
        # Asked once per phase, off the event loop (a GCS round trip).
        cluster = await asyncio.to_thread(ray.cluster_resources)
        progress = executor.progress

        async def one(expert: str, requests: list[GenerationRequest]) -> list[GenerationResult]:
            spec = registry.spec(expert)
            key = resolve_api_key(spec, registry.secrets) if spec.backend is BackendKind.OPENAI else None
            actor = self._actor(spec, key, cluster)
            ref = actor.run_group.remote(f"{phase}:{expert}:{uuid.uuid4().hex[:8]}", phase, requests)
            if progress:
                progress(f"{phase}:{expert}", 0, len(requests))
            try:
                run: GroupRun = await asyncio.wrap_future(ref.future())
            except ray.exceptions.RayError as e:  # restarts or retries used up: the group failed
                err = ExpertUnavailable(f"expert {expert!r}: its Ray actor failed ({type(e).__name__}: {str(e)[:300]})", expert=expert)
                return [GenerationResult.failed(err) for _ in requests]
            self.runs.append(run)
            executor.record_group(expert, run.busy_s, run.backend_calls)
            if progress:
                progress(f"{phase}:{expert}", len(run.results), len(requests))
            return run.results

        return list(await asyncio.gather(*(one(e, reqs) for e, reqs in groups)))
