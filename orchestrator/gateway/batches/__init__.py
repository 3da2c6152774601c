"""Batch jobs (`/v1/batches`): wire models, the runner, and the routes.

    app.include_router(batches.router)                      # routes
    app.state.batches = BatchRunner(runtime, chunk_size=32)  # in the lifespan, then `await .resume()`
"""

from orchestrator.gateway.batches.protocol import BatchCreate, BatchObject, BatchRequestItem, BatchResults
from orchestrator.gateway.batches.service import BatchNotFound, BatchRunner

__all__ = ["BatchCreate", "BatchNotFound", "BatchObject", "BatchRequestItem", "BatchResults", "BatchRunner"]
