"""`orchestrator serve`: the OpenAI-compatible gateway under uvicorn.

    orchestrator serve --config experts.yaml --port 8000
    orchestrator serve --host 0.0.0.0      # reachable from the network: API keys required by default
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated

import typer

from orchestrator.cli._common import ConfigOpt, console, fail, load_config, prepare_models
from orchestrator.hosts import is_loopback_host


# uvloop and httptools named, not left to "auto" (both are dependencies): a missing one fails at start
# instead of silently serving on asyncio + h11; no access log line per request (the traces and
# /metrics record every request).
FAST_SERVER = MappingProxyType({"loop": "uvloop", "http": "httptools", "access_log": False})


def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind (not loopback: API keys are required unless ORCHESTRATOR_REQUIRE_API_KEY=false)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Gateway processes on this port (rate limits shared across them)")] = 1,
) -> None:
    """Run the OpenAI-compatible gateway."""
    import logging

    import uvicorn

    from orchestrator.gateway.app import GatewaySettings, create_app

    from store.urls import mask_url

    cfg = load_config(config)
    prepare_models(cfg)  # before serving: no request waits for a conversion
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = GatewaySettings().for_bind(host)
    except ValueError as e:  # a malformed ORCHESTRATOR_* value (pydantic names it)
        fail(str(e))
    err = console(stderr=True)
    if not settings.require_api_key and not is_loopback_host(host):
        err.print(f"[yellow]warning:[/yellow] ORCHESTRATOR_REQUIRE_API_KEY=false on {host}: the gateway is open to the network "
                  "until a key exists (`orchestrator keys create NAME --admin`)")
    keys = "every request needs an API key" if settings.require_api_key else "API keys needed once one exists"
    if workers > 1:
        import shutil

        from orchestrator.gateway.workers import WORKER_APP, prepare_workers

        shared = prepare_workers(cfg, settings)
        err.print(f"serving on http://{host}:{port}/v1 with {workers} workers ({keys}; store {mask_url(cfg.store)})")
        try:
            uvicorn.run(WORKER_APP, factory=True, workers=workers, host=host, port=port, log_level=log_level, **FAST_SERVER)
        finally:
            shutil.rmtree(shared, ignore_errors=True)
        return
    app = create_app(cfg, settings)
    err.print(f"serving on http://{host}:{port}/v1 ({keys}; store {mask_url(cfg.store)})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, **FAST_SERVER)
