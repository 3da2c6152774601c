"""The web dashboard at `/ui`, served by the gateway itself (no CDN: its one script and style
sheet are in `static/`). Pages in `routes.py`, who may see them in `session.py`, the overview's
numbers in `stats.py`, the benchmark plot in `plots.py`.

    install(app)   # create_app calls it
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from orchestrator.gateway.ui.routes import page, router
from orchestrator.gateway.ui.session import LoginRequired, PageForbidden, SessionSigner, login_location


def install(app: FastAPI) -> None:
    app.state.ui_signer = SessionSigner()

    @app.exception_handler(LoginRequired)
    async def _login(_: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_location(exc.next_path), status_code=303)

    @app.exception_handler(PageForbidden)
    async def _forbidden(request: Request, exc: PageForbidden) -> HTMLResponse:
        return page(request, "error.html", None, status_code=403, message=str(exc))

    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="ui-static")
