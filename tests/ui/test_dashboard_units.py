"""The dashboard's pure parts: percentiles and window stats, the waterfall's stages, the login
redirect's target, the same-origin rule, and the server-drawn plot."""

from __future__ import annotations

import re

from starlette.requests import Request

from orchestrator.gateway.ui.plots import accuracy_cost_svg
from orchestrator.gateway.ui.routes import waterfall
from orchestrator.gateway.ui.session import SessionSigner, safe_next, same_origin
from orchestrator.gateway.ui.stats import overview, percentile
from store.records import ExpertCallRecord, TraceRecord, TrafficGroup, TrafficRecord


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.95) == 95.0
    assert percentile([3.0], 0.95) == 3.0 and percentile([], 0.5) is None
    assert percentile([5.0, 1.0, 3.0], 0.5) == 3.0  # order of arrival does not matter


def test_window_stats_per_router_and_expert() -> None:
    traffic = TrafficRecord(
        routers=[TrafficGroup(name="all-vote", requests=2, errors=1, cost_usd=0.002, latencies_s=[0.1, 0.3]),
                 TrafficGroup(name="coe", requests=3, errors=0, cost_usd=0.001, latencies_s=[0.2])],  # a sample of its latencies
        experts=[TrafficGroup(name="a", requests=2, errors=1, tokens=30, latencies_s=[0.05, 1.0])])
    o = overview(traffic, window_s=100.0)
    votes = {w.name: w for w in o.routers}["all-vote"]
    assert votes.requests == 2 and votes.error_rate == 0.5 and votes.per_s == 0.02 and votes.p50_s == 0.1 and votes.p95_s == 0.3
    assert o.total.requests == 5 and o.total.error_rate == 0.2 and abs(o.total.cost_usd - 0.003) < 1e-12 and o.total.p95_s == 0.3
    a = o.experts[0]
    assert a.requests == 2 and a.error_rate == 0.5 and a.tokens == 30 and a.p95_s == 1.0


async def test_the_store_sums_the_window_and_samples_the_newest_latencies(store_url: str) -> None:
    from datetime import datetime, timedelta, timezone

    from store import Store

    now = datetime.now(timezone.utc)
    async with await Store.open(store_url) as store:
        old = TraceRecord(id="old", router="coe", query_text="q", created_at=now - timedelta(hours=2), latency_s=9.0,
                          calls=[ExpertCallRecord(expert="a", latency_s=9.0)])
        recent = [TraceRecord(id=f"r{i}", router="coe" if i % 2 else "all-vote", query_text="q", created_at=now - timedelta(seconds=i),
                              status="error" if i == 3 else "ok", latency_s=0.1 * i, cost_usd=0.01, prompt_tokens=5, completion_tokens=5,
                              calls=[ExpertCallRecord(expert="a", latency_s=0.01 * i, error_kind="timeout" if i == 3 else None, cost_usd=0.01,
                                                      prompt_tokens=5, completion_tokens=5)]) for i in range(1, 7)]
        await store.save_traces([old, *recent])
        t = await store.traffic_since(now - timedelta(hours=1), latency_sample=4)
    coe = {g.name: g for g in t.routers}["coe"]
    assert (coe.requests, coe.errors, round(coe.cost_usd, 6), coe.tokens) == (3, 1, 0.03, 30)  # the 2-hour-old trace is out
    assert sum(len(g.latencies_s) for g in t.routers) == 4  # the newest four: r1..r4
    assert sorted(round(v, 6) for g in t.routers for v in g.latencies_s) == [0.1, 0.2, 0.3, 0.4]
    (a,) = t.experts
    assert (a.requests, a.errors, a.tokens) == (6, 1, 60) and len(a.latencies_s) == 4


def test_waterfall_starts_a_stage_when_the_previous_ends() -> None:
    calls = [ExpertCallRecord(seq=0, expert="a", latency_s=0.2), ExpertCallRecord(seq=1, expert="b", latency_s=0.4),
             ExpertCallRecord(seq=2, expert="agg", role="aggregator", latency_s=0.1),
             ExpertCallRecord(seq=3, expert="c", role="callee", latency_s=0.3), ExpertCallRecord(seq=4, expert="d", role="callee", latency_s=0.1)]
    bars = waterfall(TraceRecord(id="t", router="r", query_text="q", latency_s=0.9, calls=calls))
    assert [round(b["start"], 6) for b in bars] == [0.0, 0.0, 0.4, 0.5, 0.8]  # experts together; aggregator, then each callee in turn
    assert abs(bars[1]["width_pct"] - 100 * 0.4 / 0.9) < 1e-9


def test_login_returns_only_to_a_dashboard_path() -> None:
    for bad in ("https://evil.example/ui", "//evil.example/ui", "/\\evil.example", "/v1/keys", "", None):
        assert safe_next(bad) == "/ui", bad
    assert safe_next("/ui/traces/abc") == "/ui/traces/abc"


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8000", **headers}.items()]
    return Request({"type": "http", "method": "POST", "path": "/ui/playground", "headers": raw})


def test_same_origin_refuses_what_the_browser_says_is_cross_site() -> None:
    assert same_origin(_request({}))  # a client that sends neither header is left to the CSRF token
    assert same_origin(_request({"origin": "http://127.0.0.1:8000", "sec-fetch-site": "same-origin"}))
    assert not same_origin(_request({"origin": "http://evil.example"}))
    assert not same_origin(_request({"origin": "null"}))
    assert not same_origin(_request({"sec-fetch-site": "cross-site"}))
    assert not same_origin(_request({"sec-fetch-site": "same-site"}))  # a sibling subdomain is another site's page


def test_csrf_tokens_differ_per_key_and_hold_on_every_replica() -> None:
    s = SessionSigner(b"k" * 32)
    assert len({s.csrf_token("sk-orch-a"), s.csrf_token("sk-orch-b"), s.csrf_token(None)}) == 3
    assert s.csrf_token("sk-orch-a") == SessionSigner(b"j" * 32).csrf_token("sk-orch-a")  # another replica's signer agrees
    assert s.csrf_token(None) != SessionSigner(b"j" * 32).csrf_token(None)  # an open gateway's: its own secret


def test_the_plot_is_inline_svg_that_scales() -> None:
    m = {"accuracy": 0.5, "ci95": [0.4, 0.6], "aggregator_calls_per_question": 0.0, "expert_calls_per_question": 1.0,
         "cost_units_per_question": 0.2}
    results = {"dataset": "mmlu-pro", "n_questions": 10, "pool": ["a", "b"], "cost_axis": "units",
               "routers": {"random": m, "all-vote": {**m, "accuracy": 0.6, "expert_calls_per_question": 2.0, "cost_units_per_question": 0.4}}}
    svg = accuracy_cost_svg(results)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and 'width="100%"' in svg.split(">", 1)[0]
    assert not re.search(r'(href|src)="(https?:)?//|url\((https?:)?//', svg)  # nothing to fetch (namespace URIs are names, not requests)


def _render_trace(trace: TraceRecord) -> str:
    from orchestrator.gateway.auth import Caller
    from orchestrator.gateway.ui.routes import templates
    from orchestrator.gateway.ui.session import Session

    return templates.get_template("trace.html").render(session=Session(Caller(role="admin"), "t" * 64), path="/ui/traces/x",
                                                        trace=trace, bars=waterfall(trace), feedback=[], rated="")


def test_the_trace_page_says_why_for_each_kind_of_router() -> None:
    from store.records import PlanRecord, TraceStepRecord

    coe = TraceRecord(id="c", router="coe", query_text="q", answer="B", answer_text="(B)", plan=PlanRecord(
        router="coe", experts=["math-expert"], aggregation={"kind": "single"},
        detail={"reasons": ["category math (confidence 0.91)"], "predicted_category": "math", "confidence": 0.91, "fallback_used": False}))
    html = _render_trace(coe)
    assert "CoE category" in html and "<b>math</b>" in html and "0.91" in html and 'data-recruited="math-expert"' in html

    smoe = TraceRecord(id="s", router="symbolic-moe", query_text="q", plan=PlanRecord(
        router="symbolic-moe", experts=["a", "b"], detail={"reasons": ["skills algebra", "skills algebra"], "keywords": ["quadratic"],
                                                          "mapped": ["algebra"], "tagger": "keybert"}))
    html = _render_trace(smoe)
    assert "Symbolic-MoE skills" in html and "quadratic" in html and "algebra" in html and "keybert" in html

    mot = TraceRecord(id="m", router="mot", query_text="q", plan=PlanRecord(router="mot", experts=["p"], detail={"primary": "p", "peers": ["x", "y"]}))
    assert "primary <b>p</b>, peers x, y" in _render_trace(mot)

    r1 = TraceRecord(id="r", router="router-r1", query_text="q", steps=[
        TraceStepRecord(seq=1, kind="think", detail={"turn": 0, "routing": "I should ask the chemist"}),
        TraceStepRecord(seq=2, kind="route", detail={"turn": 0, "expert": "chemist", "query": "what is a mole?"}),
        TraceStepRecord(seq=3, kind="information", detail={"turn": 0, "expert": "chemist", "observation": "6.022e23 particles"}),
        TraceStepRecord(seq=10_000, kind="answer", detail={"policy": "p"})],
        calls=[ExpertCallRecord(expert="chemist", role="callee", latency_s=0.3, attempts=2, fallback_for="physicist",
                                error_kind=None, answer="C")])
    html = _render_trace(r1)
    for text in ("I should ask the chemist", "→ <b>chemist</b>: what is a mole?", "6.022e23 particles", "step-answer",
                 "2 attempts", "fallback for physicist"):
        assert text in html, text
