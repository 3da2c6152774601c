"""The OpenAI-compatible REST gateway, assembled.

    app = create_app(config, GatewaySettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes are in `routes/` (one module per resource), what they depend on in `deps.py`, API keys
and rate limits in `auth.py`, the long-lived objects in `lifespan.py`, and the mapping of
exceptions to OpenAI-shaped errors in `errors.py`.
"""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from experts.spec import OrchestratorConfig
from orchestrator.gateway import errors as E
from orchestrator.gateway.lifespan import lifespan
from orchestrator.gateway.middleware import BodySizeLimit, RequestMetrics
from orchestrator.gateway.routes import include_routes
from orchestrator.gateway.ui import install as install_dashboard
from orchestrator.settings import GatewaySettings


def create_app(config: OrchestratorConfig, settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app = FastAPI(title="llm-orchestrator", version="0.1.0", lifespan=partial(lifespan, config=config, settings=settings))
    E.install_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, streamed={"/v1/files": settings.max_file_bytes})
    app.add_middleware(RequestMetrics)
    include_routes(app)
    install_dashboard(app)  # /ui
    return app


__all__ = ["GatewaySettings", "create_app"]
