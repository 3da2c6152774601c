"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright) against a
running `orchestrator serve`: log in with a key, open every page, send a chat from the
playground, follow it to its trace and find the recruited experts and the answer there; a user
key gets no admin page. No request may leave the machine (no CDN).

Each page's screenshot is written to `ORCH_UI_SCREENSHOT_DIR` when set (the README's PNGs:
`ORCH_UI_SCREENSHOT_DIR=docs/screenshots pytest tests/ui/test_dashboard_browser.py`), else
under pytest's temporary directory, as the run's artefacts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import POOL3, mmlu_questions
from dashboard_served import dashboard_gateway

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with dashboard_gateway(tmp_path_factory.mktemp("browser"), bench_runs=True) as g:
        yield g


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("ORCH_UI_SCREENSHOT_DIR")
    out = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser(gw) -> Iterator[object]:  # type: ignore[no-untyped-def]  # after gw: its set-up runs asyncio, which Playwright's loop would forbid
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`bash .ci/apt.sh chromium`; scripts/test.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def new_page(browser, gw, left_machine: list[str]):  # type: ignore[no-untyped-def]
    """A fresh browser context (its own cookies) whose every request off this machine is refused
    and recorded in `left_machine`, as are the page's console errors."""
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=gw.url)

    def guard(route) -> None:  # type: ignore[no-untyped-def]
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            left_machine.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    # what the browser refused or failed at (a CSP violation, a script error) is recorded too
    page.on("console", lambda m: left_machine.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: left_machine.append(f"page error: {e}"))
    return page


def log_in(page, key: str, next_path: str = "/ui") -> None:  # type: ignore[no-untyped-def]
    page.goto(next_path)
    assert "/ui/login" in page.url  # no key yet: the form
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def traffic(gw) -> None:  # type: ignore[no-untyped-def]
    """Some answers for the overview to show: routers, a direct expert, one failed request."""
    for i, model in enumerate(["all-vote", "random", POOL3[0], POOL3[1], "all-vote", "random"]):
        q = mmlu_questions(1, offset=20 + i)[0]
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gw.admin}"}, timeout=60,
                       json={"model": model, "messages": [{"role": "user", "content": q.text}], "metadata": {"question_id": q.question_id}})
        assert r.status_code == 200, r.text
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gw.admin}"}, timeout=60,
                   json={"model": POOL3[2], "messages": [{"role": "user", "content": "not a recorded question"}]})
    assert r.status_code >= 400  # a recorded expert cannot answer it: a failed trace


def test_an_admin_opens_every_page_and_follows_a_playground_chat_to_its_trace(browser, gw, shots: Path) -> None:  # type: ignore[no-untyped-def]
    left: list[str] = []
    page = new_page(browser, gw, left)
    traffic(gw)
    log_in(page, gw.admin)
    assert urlsplit(page.url).path == "/ui"

    # Playground: a chat through a router, then its trace
    page.goto("/ui/playground")
    q = mmlu_questions(1, offset=5)[0]
    page.select_option("select[name=model]", "all-vote")
    page.fill("textarea[name=message]", q.text)
    page.fill("input[name=question_id]", q.question_id)
    page.click("#chat button[type=submit]")
    page.wait_for_selector("#reply")
    answer = page.text_content("#reply h2 .badge")
    assert answer and re.fullmatch(r"[A-J]", answer.strip()), answer
    page.screenshot(path=str(shots / "playground.png"), full_page=True)
    page.click("#trace-link")
    page.wait_for_selector("#plan")
    assert re.search(r"/ui/traces/[0-9a-f-]{36}$", page.url)
    recruited = page.eval_on_selector_all("[data-recruited]", "els => els.map(e => e.dataset.recruited)")
    assert sorted(recruited) == sorted(POOL3)  # all-vote recruits the whole pool
    called = page.eval_on_selector_all(".wf-row[data-call]", "els => els.map(e => e.dataset.call)")
    assert sorted(called) == sorted(POOL3)
    assert page.text_content("#answer h2 .badge").strip() == answer.strip()
    page.screenshot(path=str(shots / "trace.png"), full_page=True)

    # Traces: the chat is listed, and the search by expert finds it
    page.goto(f"/ui/traces?expert={POOL3[0]}")
    page.wait_for_selector("table.traces")
    assert page.locator("table.traces tbody tr").count() >= 2
    page.goto("/ui/traces")
    page.screenshot(path=str(shots / "traces.png"), full_page=True)

    # Overview: live-refreshed by its script from /ui/api/overview
    page.goto("/ui")
    page.wait_for_function("() => Number(document.querySelector('[data-poll]').dataset.updates || 0) >= 1", timeout=15_000)
    assert int(page.text_content("[data-k='total.requests']")) >= 8
    assert page.locator("tbody[data-rows=router] tr").count() >= 3
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # Experts: every expert with its circuit
    page.goto("/ui/experts")
    assert sorted(page.eval_on_selector_all("tr[data-expert]", "els => els.map(e => e.dataset.expert)")) == sorted(POOL3)
    page.screenshot(path=str(shots / "experts.png"), full_page=True)

    # Benchmarks: two stored runs side by side, each with its table and its server-drawn plot
    page.goto(f"/ui/benchmarks?a={gw.runs[0]}&b={gw.runs[1]}")
    assert page.locator("section.run").count() == 2
    assert page.locator("section.run .plot svg").count() == 2
    assert page.locator("section.run", has_text="best-single").count() == 1  # the first run's routers only
    page.screenshot(path=str(shots / "benchmarks.png"), full_page=True)

    assert left == []  # nothing left the machine, and no page logged an error (none broke under its CSP)
    page.context.close()


def test_a_user_key_gets_no_admin_page_in_the_browser(browser, gw, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    left: list[str] = []
    page = new_page(browser, gw, left)
    log_in(page, gw.alice)
    assert urlsplit(page.url).path == "/ui/traces"  # sent where a user key may go
    assert page.locator("nav a", has_text="Experts").count() == 0
    for path in ("/ui", "/ui/experts"):
        response = page.goto(path)
        assert response is not None and response.status == 403
        assert "admin" in page.text_content("main")
    page.screenshot(path=str(tmp_path / "user-forbidden.png"))  # an artefact only: the README shows the pages
    assert [x for x in left if "403" not in x] == []  # the refused pages' own 403s only
    page.context.close()
