"""The app's lifespan: builds its long-lived objects, tunes the garbage collector, closes them on exit.

    app = FastAPI(lifespan=functools.partial(lifespan, config=config, settings=settings))
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI

from experts.spec import OrchestratorConfig
from orchestrator.gateway.batch_runner import BatchRunner
from orchestrator.gateway.deps import GatewayState
from orchestrator.gateway.metrics import GatewayMetrics
from orchestrator.pipeline import Runtime
from orchestrator.settings import GatewaySettings
from routers.registry import router_names
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
    """Puts the app's `GatewayState` on `app.state.gateway` while it serves."""
    metrics = GatewayMetrics()
    runtime = await Runtime.create(config, on_batch=metrics.on_batch)
    runtime.trace_writer = TraceWriter(runtime.store)
    await runtime.trace_writer.start()
    batches = BatchRunner(runtime, chunk_size=settings.batch_chunk_size, pause_s=settings.batch_pause_s,
                          default_max_tokens=settings.default_max_tokens, on_calls=metrics.record_calls,
                          registry=metrics.registry)
    app.state.gateway = GatewayState(config, settings, runtime, metrics, batches)
    await batches.resume()
    logger.info(
        "gateway ready: routers %s; experts %s; store %s",
        ", ".join(router_names()), ", ".join(runtime.registry.names), runtime.store.url,
    )
    try:
        with gc_tuned(settings.gc_tuning):
            yield
    finally:
        await batches.aclose()
        await runtime.aclose()
