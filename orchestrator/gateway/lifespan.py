"""The app's lifespan: builds its long-lived objects, tunes the garbage collector, closes them on exit.

    app = FastAPI(lifespan=functools.partial(lifespan, config=config, settings=settings))

Start-up, in order: open the store; write the traces stopped replicas left in the shared journal
directory; start the supervised trace writer (journaling under this replica's id); write the
config's experts to the shared registry and load it (API-registered experts included); take over
batch jobs nobody holds; then start the background loops (orchestrator/gateway/replica.py).
With `OTEL_EXPORTER_OTLP_ENDPOINT` set, traces are also exported as OTel spans
(orchestrator/telemetry.py), flushed on exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI

from experts.spec import OrchestratorConfig
from orchestrator.gateway.batch_runner import BatchRunner
from orchestrator.gateway.deps import GatewayState
from orchestrator.gateway.metrics import GatewayMetrics
from orchestrator.gateway.replica import Replica, default_replica_id
from orchestrator.pipeline import Runtime
from orchestrator.response_cache import ResponseCaches
from orchestrator.settings import GatewaySettings
from orchestrator.telemetry import Telemetry
from routers.registry import router_names
from store.trace_journal import TraceJournal
from store.trace_writer import TraceWriter

logger = logging.getLogger("orchestrator.gateway")

YOUNG_GC_THRESHOLD = 10_000


@contextmanager
def gc_tuned(enabled: bool) -> Iterator[None]:
    """Cheaper garbage collection while serving; undone on exit.

    The cyclic collector costs ~0.1 ms per chat request with defaults (benchmarks/gateway_cpu.py
    with gc callbacks): full collections walk every object left from start-up (models, routers,
    modules), and young collections run every 700 allocations. Freezing the start-up heap and
    raising the young threshold to 10,000 cuts that to a few hundredths of a millisecond."""
    before = gc.get_threshold()
    if not enabled or before[0] >= YOUNG_GC_THRESHOLD:  # off, or already tuned (another app in this process)
        yield
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@asynccontextmanager
async def lifespan(app: FastAPI, *, config: OrchestratorConfig, settings: GatewaySettings) -> AsyncIterator[None]:
    """Puts the app's `GatewayState` on `app.state.gateway` (and its `Replica` on
    `app.state.replica`) while it serves."""
    metrics = GatewayMetrics()
    runtime = await Runtime.create(config, on_batch=metrics.on_batch, store_command_timeout_s=settings.store_command_timeout_s)
    runtime.fit_poll_s = settings.fit_poll_s
    replica = Replica(settings.replica_id or default_replica_id(), runtime, settings)
    batches: BatchRunner | None = None
    telemetry: Telemetry | None = None
    engine = None
    try:
        # OTel spans only when OTEL_EXPORTER_OTLP_ENDPOINT asks for them (the SDK's own variables)
        runtime.telemetry = telemetry = Telemetry.from_env(os.environ)
        caches = ResponseCaches(config.cache, services=runtime.services, observe=metrics.record_cache)
        runtime.response_cache = caches if caches.enabled else None  # opt-in (config `cache:`)
        try:
            await replica.replay_journals()
        except Exception as e:  # noqa: BLE001 - the store is away: the replay loop tries again
            logger.warning("could not replay trace journals at start (%s: %s)", type(e).__name__, e)
        runtime.trace_writer = TraceWriter(runtime.store, journal=TraceJournal.open(replica.journal_dir, replica.id))
        await runtime.trace_writer.start()
        await replica.follower.seed(config.experts)
        await replica.follower.sync()
        if settings.batch_engine == "ray":  # batch jobs' expert groups as Ray tasks (orchestrator/ray_engine.py)
            from orchestrator.ray_engine import RayEngine

            engine = RayEngine.connect(settings.ray_address or None)
        batches = BatchRunner(runtime, replica_id=replica.id, chunk_size=settings.batch_chunk_size, pause_s=settings.batch_pause_s,
                              default_max_tokens=settings.default_max_tokens, lease_s=settings.batch_lease_s,
                              max_jobs=settings.batch_max_jobs, on_calls=metrics.record_calls, registry=metrics.registry,
                              engine=engine)
        state = GatewayState(config, settings, runtime, metrics, batches)
        replica.follower.on_change = state.forget_health
        app.state.gateway, app.state.replica = state, replica
        await batches.sweep()
        replica.start(batches)
        logger.info(
            "gateway ready: replica %s; routers %s; experts %s; store %s",
            replica.id, ", ".join(router_names()), ", ".join(runtime.registry.names), runtime.store.url,
        )
        with gc_tuned(settings.gc_tuning):
            yield
    finally:
        await replica.aclose()
        if batches is not None:
            await batches.aclose()
        if engine is not None:
            engine.close()
        await runtime.aclose()
        if telemetry is not None:  # flush the queued spans; the exporter's HTTP calls block, so off the loop
            await asyncio.to_thread(telemetry.shutdown)
