"""The dashboard's pages (server-rendered Jinja2) and the JSON its live overview polls.

    GET  /ui                    overview (admin)      GET  /ui/api/overview   its numbers, polled (admin)
    GET  /ui/experts            experts (admin)       GET  /ui/traces         search (own traces; admin: all)
    GET  /ui/traces/{id}        one trace             POST /ui/traces/{id}/feedback
    GET  /ui/benchmarks         stored bench runs     GET/POST /ui/playground  a chat through any router
    GET/POST /ui/login, POST /ui/logout
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from orchestrator.gateway import errors as E
from orchestrator.gateway.deps import GatewayState, State
from orchestrator.gateway.routes.chat import run_chat
from orchestrator.gateway.routes.feedback import record_feedback
from orchestrator.gateway.ui import stats
from orchestrator.gateway.ui.plots import accuracy_cost_svg
from orchestrator.gateway.ui.session import (
    COOKIE,
    COOKIE_MAX_AGE_S,
    COOKIE_PATH,
    AdminSessionDep,
    Session,
    SessionDep,
    check_form,
    safe_next,
    same_origin,
)
from orchestrator.protocol import ChatCompletionRequest, FeedbackCreate
from routers.registry import router_names
from store.records import TraceRecord

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str, ensure_ascii=False)
router = APIRouter(prefix="/ui", include_in_schema=False)
WINDOW_S = 3600.0  # the overview's window: the last hour
TRACE_LIST_LIMIT = 200


# The browser enforces what the pages promise: scripts and everything else from this origin only
# (no CDN, and injected markup cannot run), no framing by another site, forms post back here.
# Inline styles stay allowed: the waterfall's bar offsets and the server-drawn SVG plot use them.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show traces and answers: not for shared caches or the back button
}


def page(request: Request, name: str, session: Session | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"session": session, "path": request.url.path, **context},
                                      status_code=status_code, headers=PAGE_HEADERS)


# ---------------------------------------------------------------- login
@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/ui") -> HTMLResponse:
    return page(request, "login.html", None, next=safe_next(next), error=None)


@router.post("/login")
async def login(request: Request, st: State, key: str = Form(""), next: str = Form("/ui")) -> Response:
    if not same_origin(request):
        return page(request, "login.html", None, status_code=403, next=safe_next(next), error="cross-site login refused")
    try:
        caller = await st.auth.caller(f"Bearer {key.strip()}", request.client.host if request.client else "unknown")
    except E.Unauthorized:
        # never echo the key: the form comes back empty
        return page(request, "login.html", None, status_code=401, next=safe_next(next), error="invalid API key")
    target = safe_next(next)
    if not caller.is_admin and target in ("/ui", "/ui/", "/ui/experts"):
        target = "/ui/traces"  # the overview and experts pages are for admins
    response = RedirectResponse(target, status_code=303)
    if await st.auth.required():
        response.set_cookie(COOKIE, key.strip(), max_age=COOKIE_MAX_AGE_S, path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, csrf: str = Form("")) -> Response:
    check_form(request, session, csrf)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


# ---------------------------------------------------------------- overview
async def _overview(st: GatewayState) -> stats.Overview:
    since = datetime.now(timezone.utc) - timedelta(seconds=WINDOW_S)
    with E.map_store_exceptions():
        traffic = await st.runtime.store.traffic_since(since)
    backlog = st.runtime.trace_writer.backlog if st.runtime.trace_writer else 0
    return stats.overview(traffic, WINDOW_S, st.metrics, backlog)


@router.get("", response_class=HTMLResponse)
async def overview_page(request: Request, st: State, session: AdminSessionDep) -> HTMLResponse:
    return page(request, "overview.html", session, data=await _overview(st))


@router.get("/api/overview")
async def overview_json(st: State, _: AdminSessionDep) -> JSONResponse:
    return JSONResponse((await _overview(st)).model_dump(mode="json"), headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- experts
@router.get("/experts", response_class=HTMLResponse)
async def experts_page(request: Request, st: State, session: AdminSessionDep) -> HTMLResponse:
    health = {h.name: h for h in await st.expert_health()}
    since = datetime.now(timezone.utc) - timedelta(seconds=WINDOW_S)
    with E.map_store_exceptions():
        traffic = await st.runtime.store.traffic_since(since)
    recent = {w.name: w for w in stats.overview(traffic, WINDOW_S).experts}
    rows = []
    for spec in st.runtime.registry.specs():
        h = health.get(spec.name)
        circuit = st.runtime.dispatcher.breaker(spec.name).snapshot()
        healthy = False if circuit["state"] == "open" else (h.healthy if h else None)
        rows.append({"spec": spec, "healthy": healthy, "detail": h.detail if h else "", "circuit": circuit,
                     "queue": st.runtime.dispatcher.queue_depth(spec.name), "recent": recent.get(spec.name),
                     "from_config": spec.name.lower() in st.config_names})
    return page(request, "experts.html", session, rows=rows, window_s=WINDOW_S)


# ---------------------------------------------------------------- traces
def _since(minutes: str) -> datetime | None:
    try:
        return datetime.now(timezone.utc) - timedelta(minutes=float(minutes)) if minutes else None
    except ValueError:
        return None


@router.get("/traces", response_class=HTMLResponse)
async def traces_page(request: Request, st: State, session: SessionDep, router: str = "", expert: str = "", status: str = "",
                      minutes: str = "", key: str = "") -> HTMLResponse:
    owner = (key or None) if session.is_admin else session.caller.key_id  # a user key sees its own traces only
    with E.map_store_exceptions():
        found = await st.runtime.store.list_traces(owner=owner, router=router[:64] or None, expert=expert[:128] or None,
                                                   status=status[:16] or None, since=_since(minutes), limit=TRACE_LIST_LIMIT)
    filters = {"router": router, "expert": expert, "status": status, "minutes": minutes, "key": key}
    return page(request, "traces.html", session, traces=found, filters=filters, routers=router_names(),
                experts=st.runtime.registry.names, limit=TRACE_LIST_LIMIT)


async def _trace_for(st: GatewayState, session: Session, trace_id: str) -> TraceRecord | None:
    """The trace if this session may see it (its own, or any for an admin); answered-not-yet-committed included."""
    if len(trace_id) > 64:
        return None
    owner = None if session.is_admin else session.caller.key_id
    pending = st.runtime.trace_writer.pending(trace_id) if st.runtime.trace_writer else None
    if pending is not None:
        return pending if owner is None or pending.owner == owner else None
    with E.map_store_exceptions():
        return await st.runtime.store.get_trace(trace_id, owner=owner)


def waterfall(trace: TraceRecord) -> list[dict[str, Any]]:
    """Each expert call as a bar: calls of one stage (experts, then aggregator, or each Router-R1
    turn) start together, a stage starts when the previous one's slowest call ended. Calls carry
    no start time, so offsets are this reconstruction; widths are the measured latencies."""
    bars, stage_start, stage_end, last_role = [], 0.0, 0.0, None
    for c in trace.calls:
        sequential = c.role in ("aggregator", "callee", "policy") or c.fallback_for is not None
        if last_role is not None and (c.role != last_role or sequential):
            stage_start = stage_end
        start = stage_start
        stage_end = max(stage_end, start + c.latency_s)
        last_role = c.role
        bars.append({"call": c, "start": start})
    total = max([trace.latency_s] + [b["start"] + b["call"].latency_s for b in bars]) or 1.0
    for b in bars:
        b["left_pct"] = 100 * b["start"] / total
        b["width_pct"] = max(0.5, 100 * b["call"].latency_s / total)
    return bars


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
async def trace_page(request: Request, st: State, session: SessionDep, trace_id: str, rated: str = "") -> HTMLResponse:
    trace = await _trace_for(st, session, trace_id)
    if trace is None:
        return page(request, "error.html", session, status_code=404, message=f"no trace {trace_id[:64]!r}"
                    + ("" if session.is_admin else " for this API key"))
    with E.map_store_exceptions():
        feedback = await st.runtime.store.feedback_for(trace.id)
    return page(request, "trace.html", session, trace=trace, bars=waterfall(trace), feedback=feedback, rated=rated)


@router.post("/traces/{trace_id}/feedback")
async def trace_feedback(request: Request, st: State, session: SessionDep, trace_id: str, score: str = Form(""),
                         comment: str = Form(""), csrf: str = Form("")) -> Response:
    check_form(request, session, csrf)
    try:
        body = FeedbackCreate(trace_id=trace_id, score=score, comment=comment or None)  # type: ignore[arg-type]
    except ValidationError as e:
        raise E.validation_error(e) from None
    await record_feedback(st, session.caller, body)
    return RedirectResponse(f"/ui/traces/{trace_id}?rated=1", status_code=303)


# ---------------------------------------------------------------- benchmarks
@router.get("/benchmarks", response_class=HTMLResponse)
async def benchmarks_page(request: Request, st: State, session: SessionDep, a: str = "", b: str = "") -> HTMLResponse:
    with E.map_store_exceptions():
        runs = await st.runtime.store.list_bench_runs()
    done = [r for r in runs if r["results"] and r["results"].get("routers")]
    chosen = [r for name in (a, b) if name for r in done if r["id"] == name] or done[:1]
    shown = []
    for r in chosen[:2]:
        svg = await asyncio.to_thread(accuracy_cost_svg, r["results"])
        routers = r["results"]["routers"]
        categories = sorted({c for m in routers.values() for c in m.get("per_category", {})})
        shown.append({"run": r, "svg": svg, "routers": sorted(routers.items(), key=lambda kv: -kv[1]["accuracy"]),
                      "categories": categories})
    return page(request, "benchmarks.html", session, runs=runs, shown=shown, a=a or (shown[0]["run"]["id"] if shown else ""), b=b)


# ---------------------------------------------------------------- playground
def _models(st: GatewayState) -> list[str]:
    return router_names() + st.runtime.registry.names


@router.get("/playground", response_class=HTMLResponse)
async def playground_page(request: Request, st: State, session: SessionDep) -> HTMLResponse:
    return page(request, "playground.html", session, models=_models(st), result=None, form={})


@router.post("/playground", response_class=HTMLResponse)
async def playground_send(request: Request, st: State, session: SessionDep, model: str = Form(""), message: str = Form(""),
                          question_id: str = Form(""), max_tokens: str = Form(""), csrf: str = Form("")) -> HTMLResponse:
    check_form(request, session, csrf)
    form = {"model": model, "message": message, "question_id": question_id, "max_tokens": max_tokens}
    try:
        req = ChatCompletionRequest.model_validate({
            "model": model, "messages": [{"role": "user", "content": message}],
            **({"metadata": {"question_id": question_id}} if question_id else {}),
            **({"max_tokens": int(max_tokens)} if max_tokens.strip().isdigit() else {}),
        })
    except ValidationError as e:
        err = E.validation_error(e)
        return page(request, "playground.html", session, status_code=400, models=_models(st), result=None, form=form,
                    error=err.message)
    try:
        result = await run_chat(st, req, session.caller)
    except E.APIError as e:  # shown on the page; a failed answer still names its trace
        return page(request, "playground.html", session, status_code=e.status_code, models=_models(st), result=None, form=form,
                    error=e.message, trace_id=e.headers.get("x-orchestrator-trace-id"))
    return page(request, "playground.html", session, models=_models(st), result=result, form=form)
