"""`orchestrator serve`: the OpenAI-compatible gateway under uvicorn.

    orchestrator serve --config experts.yaml --port 8000
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli._common import ConfigOpt, console, load_config


def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the OpenAI-compatible gateway."""
    import logging

    import uvicorn

    from orchestrator.gateway.app import GatewaySettings, create_app

    cfg = load_config(config)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    app = create_app(cfg, GatewaySettings())
    console(stderr=True).print(f"serving on http://{host}:{port}/v1 (store {cfg.store})")
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
