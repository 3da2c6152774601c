"""`serve --workers N`: N gateway processes on one listening socket, sharing what must be shared.

    directory = prepare_workers(config, settings)        # the parent, before uvicorn starts the workers
    uvicorn.run(WORKER_APP, factory=True, workers=N, ...)  # each worker builds its app with worker_app()

Each worker is a replica on the same store (README "Many replicas on one store": leased batch
jobs, the shared registry, its own trace journal), so what the store shares stays correct. What
a replica would keep to itself is shared here through files in one directory the parent makes:

* rate limits (per key, and the per-address budget of failed authentications): one token bucket
  per caller across the workers (`shared_limits.SharedRateLimiter`), whichever worker the
  kernel hands a connection to;
* API keys: read from the store; a key revoked through one worker fails there at once and on the
  others within `ORCHESTRATOR_KEY_CACHE_S`, as on replicas;
* circuit breakers stay per worker: each opens on its own consecutive failures, so an unwell
  expert gets at most N x `breaker_failures` calls before every worker stops sending.

The parent passes the resolved configuration and the bind-dependent settings on to the workers
through the environment (uvicorn starts them with `spawn`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import FastAPI

from experts.spec import OrchestratorConfig
from orchestrator.gateway.shared_limits import AUTH_FAILURES_FILE, RATE_LIMIT_FILE, SharedRateLimiter
from orchestrator.settings import GatewaySettings

WORKER_APP = "orchestrator.gateway.workers:worker_app"
CONFIG_ENV = "ORCHESTRATOR_WORKER_CONFIG"  # the resolved configuration (JSON file) the workers serve


def prepare_workers(config: OrchestratorConfig, settings: GatewaySettings) -> Path:
    """Make the shared directory (tables, config) and point the environment the workers inherit at it."""
    directory = Path(tempfile.mkdtemp(prefix="orchestrator-workers-"))
    SharedRateLimiter.create(directory / RATE_LIMIT_FILE)
    SharedRateLimiter.create(directory / AUTH_FAILURES_FILE)
    cfg = directory / "config.json"
    cfg.write_text(config.model_dump_json())
    os.environ[CONFIG_ENV] = str(cfg)
    os.environ["ORCHESTRATOR_SHARED_STATE_DIR"] = str(directory)
    # decided once for the bind address (a worker cannot tell which interface the parent bound)
    os.environ["ORCHESTRATOR_REQUIRE_API_KEY"] = "true" if settings.require_api_key else "false"
    return directory


def worker_app() -> FastAPI:
    """One worker's app (uvicorn's factory), from what `prepare_workers` left in the environment."""
    from orchestrator.gateway.app import create_app

    config = OrchestratorConfig.model_validate_json(Path(os.environ[CONFIG_ENV]).read_text())
    return create_app(config, GatewaySettings())
