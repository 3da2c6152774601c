"""Who may see which dashboard page, and the attacks its forms must refuse, against a real
`orchestrator serve` (no browser: each rule's request is made exactly as an attacker would)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from conftest import mmlu_questions
from dashboard_served import dashboard_gateway
from served import Served

@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with dashboard_gateway(tmp_path_factory.mktemp("dashboard")) as gw:
        yield gw


PAGES = ["/ui", "/ui/experts", "/ui/traces", "/ui/benchmarks", "/ui/playground"]
ADMIN_PAGES = ["/ui", "/ui/experts", "/ui/api/overview"]


def logged_in(url: str, key: str) -> httpx.Client:
    c = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    r = c.post("/ui/login", data={"key": key, "next": "/ui/traces"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/traces", r.text
    return c


def csrf_of(c: httpx.Client) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', c.get("/ui/playground").text)
    assert m, "the playground form carries no CSRF token"
    return m.group(1)


def play(c: httpx.Client, csrf: str | None, i: int = 0, **headers: str) -> httpx.Response:
    q = mmlu_questions(1, offset=i)[0]
    data = {"model": "all-vote", "message": q.text, "question_id": q.question_id}
    if csrf is not None:
        data["csrf"] = csrf
    return c.post("/ui/playground", data=data, headers=headers)


def trace_ids(html: str) -> list[str]:
    return re.findall(r'href="/ui/traces/([0-9a-f-]{36})"', html)


def listed(c: httpx.Client, tid: str, timeout_s: float = 10.0) -> None:
    """Wait until the trace is committed (the gateway writes traces in the background) and listed."""
    deadline = time.monotonic() + timeout_s
    while tid not in c.get("/ui/traces").text:
        assert time.monotonic() < deadline, f"trace {tid} never listed"
        time.sleep(0.1)


def test_no_key_is_sent_to_the_login_form(dashboard) -> None:  # type: ignore[no-untyped-def]
    c = httpx.Client(base_url=dashboard.url, follow_redirects=False)
    for path in [*PAGES, "/ui/traces/00000000-0000-0000-0000-000000000000", "/ui/api/overview"]:
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"] == f"/ui/login?next={path}", (path, r.status_code)
    # a wrong key is no key: back to the form, with the key it was given nowhere in the answer
    wrong = "sk-orch-" + "A" * 43
    r = c.post("/ui/login", data={"key": wrong, "next": "/ui"})
    assert r.status_code == 401 and wrong not in r.text and "invalid API key" in r.text
    c.cookies.set("orch_ui", wrong)
    assert c.get("/ui/traces").status_code == 303
    # the page to return to is a dashboard path, never another site
    r = c.post("/ui/login", data={"key": dashboard.admin, "next": "//evil.example/ui"})
    assert r.status_code == 303 and r.headers["location"] == "/ui"


def test_the_session_cookie_is_http_only_same_site_strict_and_scoped_to_ui(dashboard) -> None:  # type: ignore[no-untyped-def]
    r = httpx.post(f"{dashboard.url}/ui/login", data={"key": dashboard.alice, "next": "/ui/traces"})
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")}
    assert cookie.startswith("orch_ui=") and "httponly" in attrs and attrs["samesite"].lower() == "samesite=strict"
    assert attrs["path"] == "Path=/ui"
    # the API does not take the cookie as a credential
    api = httpx.Client(base_url=dashboard.url, cookies={"orch_ui": dashboard.alice})
    assert api.get("/v1/models").status_code == 401


def test_a_user_key_gets_no_admin_page(dashboard) -> None:  # type: ignore[no-untyped-def]
    c = logged_in(dashboard.url, dashboard.alice)
    for path in ADMIN_PAGES:
        r = c.get(path)
        assert r.status_code == 403 and "admin" in r.text, (path, r.status_code)
    for path in ["/ui/traces", "/ui/benchmarks", "/ui/playground"]:
        assert c.get(path).status_code == 200, path
    assert 'href="/ui/experts"' not in c.get("/ui/traces").text  # not even offered
    admin = logged_in(dashboard.url, dashboard.admin)
    for path in ADMIN_PAGES:
        assert admin.get(path).status_code == 200, path


def test_a_forged_cross_site_post_is_refused(dashboard) -> None:  # type: ignore[no-untyped-def]
    """An attacker's page can make the browser POST the playground (or rate a trace) with the
    victim's cookie if SameSite is ignored: without the session's token, or from another origin,
    nothing runs (no answer, no new trace)."""
    c = logged_in(dashboard.url, dashboard.bob)
    csrf = csrf_of(c)
    before = trace_ids(c.get("/ui/traces").text)
    forged = [
        play(c, None),  # no token (the attacker cannot read it)
        play(c, "0" * 64),  # a guessed token
        play(c, logged_in(dashboard.url, dashboard.alice) and csrf_of(logged_in(dashboard.url, dashboard.alice))),  # another session's
        play(c, csrf, origin="https://evil.example"),  # the right token, sent from another site
        play(c, csrf, **{"sec-fetch-site": "cross-site"}),
    ]
    for r in forged:
        assert r.status_code == 403 and "cross-site or missing CSRF token" in r.text, r.status_code
    assert trace_ids(c.get("/ui/traces").text) == before  # nothing was answered
    ok = play(c, csrf, origin=dashboard.url, **{"sec-fetch-site": "same-origin"})
    assert ok.status_code == 200 and len(trace_ids(ok.text)) == 1
    tid = trace_ids(ok.text)[0]
    r = c.post(f"/ui/traces/{tid}/feedback", data={"score": "-1", "comment": "forged"})
    assert r.status_code == 403
    r = c.post("/ui/logout", data={"csrf": "x"})
    assert r.status_code == 403  # logging a victim out is a state change too
    assert "forged" not in c.get(f"/ui/traces/{tid}").text


def test_another_keys_trace_is_refused_to_a_user_and_shown_to_an_admin(dashboard) -> None:  # type: ignore[no-untyped-def]
    alice = logged_in(dashboard.url, dashboard.alice)
    r = play(alice, csrf_of(alice), 1)
    assert r.status_code == 200
    tid = trace_ids(r.text)[0]
    assert alice.get(f"/ui/traces/{tid}").status_code == 200
    listed(alice, tid)  # committed: the refusals below are not a trace still in flight
    bob = logged_in(dashboard.url, dashboard.bob)
    r = bob.get(f"/ui/traces/{tid}")
    assert r.status_code == 404 and "Phi-3" not in r.text  # reported missing: not even its existence leaks
    assert tid not in bob.get("/ui/traces").text
    assert bob.post(f"/ui/traces/{tid}/feedback", data={"csrf": csrf_of(bob), "score": "1"}).status_code == 404
    admin = logged_in(dashboard.url, dashboard.admin)
    assert admin.get(f"/ui/traces/{tid}").status_code == 200
    assert tid in admin.get("/ui/traces", params={"key": dashboard.alice_id}).text
    assert tid not in admin.get("/ui/traces", params={"key": dashboard.bob_id}).text


def test_keys_are_never_echoed_in_pages_or_logs(dashboard) -> None:  # type: ignore[no-untyped-def]
    seen = []
    for key in (dashboard.admin, dashboard.alice):
        c = logged_in(dashboard.url, key)
        r = play(c, csrf_of(c), 2)
        tid = trace_ids(r.text)[0]
        seen += [r.text, c.get(f"/ui/traces/{tid}").text, c.get("/ui/api/overview").text]
        seen += [c.get(p).text for p in PAGES]
    for key in (dashboard.admin, dashboard.alice):
        assert not any(key in page for page in seen)
        assert key[len("sk-orch-"):][:12] not in dashboard.served.output()


def test_trace_search_filters_by_router_expert_status_and_time(dashboard) -> None:  # type: ignore[no-untyped-def]
    c = logged_in(dashboard.url, dashboard.admin)
    q = mmlu_questions(1, offset=3)[0]
    r = c.post("/ui/playground", data={"csrf": csrf_of(c), "model": "Yi-34B", "message": q.text, "question_id": q.question_id})
    tid = trace_ids(r.text)[0]
    listed(c, tid)
    assert tid in c.get("/ui/traces", params={"router": "single"}).text
    assert tid not in c.get("/ui/traces", params={"router": "all-vote"}).text
    assert tid in c.get("/ui/traces", params={"expert": "Yi-34B", "status": "ok", "minutes": "10"}).text
    assert tid not in c.get("/ui/traces", params={"expert": "Phi-3-mini-4k-instruct"}).text
    assert tid not in c.get("/ui/traces", params={"status": "error"}).text


def test_the_live_overview_counts_what_was_answered(dashboard) -> None:  # type: ignore[no-untyped-def]
    c = logged_in(dashboard.url, dashboard.admin)
    before = c.get("/ui/api/overview").json()
    r = play(c, csrf_of(c), 4)
    assert r.status_code == 200
    listed(c, trace_ids(r.text)[0])  # the overview reads committed traces
    after = c.get("/ui/api/overview").json()
    votes = {w["name"]: w for w in after["routers"]}["all-vote"]
    assert after["total"]["requests"] == before["total"]["requests"] + 1
    assert votes["p50_s"] is not None and votes["p95_s"] >= votes["p50_s"] and votes["per_s"] > 0
    assert after["total"]["cost_usd"] > before["total"]["cost_usd"]  # the experts have prices (dashboard_served.PRICES)
    assert {"Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B"} <= {w["name"] for w in after["experts"]}
    assert after["since_start"]["all-vote"]["200"] >= 1


def test_an_open_gateway_needs_no_key_for_its_pages(tmp_path: Path) -> None:
    with Served(tmp_path) as gw:
        c = httpx.Client(base_url=gw.url, follow_redirects=False, timeout=60)
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 200, (path, r.status_code)
        r = play(c, csrf_of(c))
        assert r.status_code == 200 and len(trace_ids(r.text)) == 1
        assert play(c, None).status_code == 403  # a cross-site POST still needs the token


def test_markup_in_a_chat_is_shown_as_text_and_pages_forbid_foreign_scripts(dashboard) -> None:  # type: ignore[no-untyped-def]
    """A message (or an expert's output) carrying markup must not run in the admin's dashboard."""
    c = logged_in(dashboard.url, dashboard.alice)
    q = mmlu_questions(1, offset=6)[0]
    evil = '<script>window.pwned=1</script><img src=x onerror="alert(1)">'
    r = c.post("/ui/playground", data={"csrf": csrf_of(c), "model": "all-vote", "message": evil + q.text, "question_id": q.question_id})
    assert r.status_code == 200 and evil not in r.text and "&lt;script&gt;window.pwned=1&lt;/script&gt;" in r.text
    tid = trace_ids(r.text)[0]
    admin = logged_in(dashboard.url, dashboard.admin)
    listed(admin, tid)
    for html in (admin.get(f"/ui/traces/{tid}").text, admin.get("/ui/traces").text):
        assert "<script>window.pwned" not in html and "onerror=\"alert" not in html
    csp = admin.get("/ui/traces").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
