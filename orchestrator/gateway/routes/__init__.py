"""The gateway's routes, one `APIRouter` per resource, mounted in matching order by `include_routes`.

    chat.py      POST /v1/chat/completions
    experts.py   /v1/models, /v1/experts
    traces.py    GET /v1/traces/{trace_id}
    ops.py       /health, /ready, /metrics
    batches.py   /v1/batches

Any other /v1 path is an OpenAI-shaped 404 (the catch-all below, mounted last so it shadows nothing).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from orchestrator.gateway import errors as E
from orchestrator.gateway.routes import batches, chat, experts, ops, traces

unknown = APIRouter()


@unknown.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown_v1(rest: str) -> None:
    raise E.NotFound(f"no route /v1/{rest[:100]}; see GET /v1/models")


def include_routes(app: FastAPI) -> None:
    # Chat's routes join the app's own instead of being included: FastAPI (0.165) matches a request
    # through an included router twice, ~25 us per level of inclusion, and chat is the hot path.
    # They need nothing included routers add (chat resolves its dependencies by hand).
    app.router.routes.extend(chat.router.routes)
    for resource in (experts, traces, ops, batches):
        app.include_router(resource.router)
    app.include_router(unknown)
