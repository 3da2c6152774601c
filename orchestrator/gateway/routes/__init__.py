"""The gateway's routes, one `APIRouter` per resource, mounted in matching order by `include_routes`.

    chat.py         POST /v1/chat/completions
    completions.py  POST /v1/completions, /v1/embeddings (passed through to an expert)
    experts.py      /v1/models, /v1/experts
    traces.py       GET /v1/traces/{trace_id}
    ops.py          /health, /ready, /metrics
    batches.py      /v1/batches
    files.py        /v1/files (batch input files and batch results)
    keys.py         /v1/keys (admin keys)
    feedback.py     POST /v1/feedback (ratings of answered requests)

Any other /v1 path is an OpenAI-shaped 404, or 405 when another method serves it (the catch-all
below, mounted last so it shadows nothing).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute

from orchestrator.gateway import errors as E
from orchestrator.gateway.routes import batches, chat, completions, experts, feedback, files, keys, ops, traces

unknown = APIRouter()


@unknown.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
async def unknown_v1(rest: str, request: Request) -> None:
    # A path another route serves with other methods is a 405 naming them (GET /v1/chat/completions).
    path = request.url.path
    allowed = sorted({m for r in request.app.router.routes if isinstance(r, APIRoute) and r.endpoint is not unknown_v1
                      and r.path_regex.match(path) for m in r.methods or ()})
    if allowed:
        err = E.MethodNotAllowed(f"{request.method} is not allowed on {path[:100]}; use {', '.join(allowed)}")
        err.headers["Allow"] = ", ".join(allowed)
        raise err
    raise E.NotFound(f"no route /v1/{rest[:100]}; see GET /v1/models")


def include_routes(app: FastAPI) -> None:
    # Chat's routes join the app's own instead of being included: FastAPI (0.165) matches a request
    # through an included router twice, ~25 us per level of inclusion, and chat is the hot path.
    # They need nothing included routers add (chat resolves its dependencies by hand).
    app.router.routes.extend(chat.router.routes)
    for resource in (completions, experts, traces, ops, batches, files, keys, feedback):
        app.include_router(resource.router)
    app.include_router(unknown)
