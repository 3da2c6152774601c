"""`POST /v1/feedback` against a real `orchestrator serve`: a key rates its own traces only (an
admin any), bad input is a 400 naming the field, the store keeps each rating, the client sends
them, and the trace page shows them."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from conftest import POOL3, mmlu_questions
from dashboard_served import dashboard_gateway
from orchestrator.client import AsyncOrchestratorClient, BadRequestError, NotFoundError
from store import Store


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with dashboard_gateway(tmp_path_factory.mktemp("feedback")) as g:
        yield g


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def answered(gw, key: str, i: int) -> str:  # type: ignore[no-untyped-def]
    q = mmlu_questions(1, offset=i)[0]
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=auth(key), timeout=60,
                   json={"model": POOL3[0], "messages": [{"role": "user", "content": q.text}], "metadata": {"question_id": q.question_id}})
    assert r.status_code == 200, r.text
    return r.json()["trace_id"]


def error_param(r: httpx.Response, status: int) -> str | None:
    assert r.status_code == status, r.text
    return r.json()["error"]["param"]


def stored(gw, trace_id: str) -> list:  # type: ignore[no-untyped-def]
    async def go() -> list:
        async with await Store.open(gw.served.store) as store:
            return await store.feedback_for(trace_id)
    return asyncio.run(go())


def test_a_key_rates_its_own_trace_and_the_store_keeps_it(gw) -> None:  # type: ignore[no-untyped-def]
    tid = answered(gw, gw.alice, 0)  # rated at once: the gateway may not have committed the trace yet
    r = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.alice), json={"trace_id": tid, "score": 1, "comment": "right answer"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["object"] == "feedback" and body["trace_id"] == tid and body["score"] == 1.0 and body["id"] > 0
    rows = stored(gw, tid)
    assert [(f.score, f.comment, f.owner) for f in rows] == [(1.0, "right answer", gw.alice_id)]


def test_another_keys_trace_is_missing_for_a_user_and_rateable_by_an_admin(gw) -> None:  # type: ignore[no-untyped-def]
    tid = answered(gw, gw.alice, 1)
    r = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.bob), json={"trace_id": tid, "score": -1})
    assert error_param(r, 404) == "trace_id"
    r = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.admin), json={"trace_id": tid, "score": -0.5})
    assert r.status_code == 201, r.text
    assert [(f.score, f.owner) for f in stored(gw, tid)] == [(-0.5, gw.admin_id)]
    assert httpx.post(f"{gw.url}/v1/feedback", json={"trace_id": tid, "score": 1}).status_code == 401


def test_bad_input_is_a_400_naming_the_field(gw) -> None:  # type: ignore[no-untyped-def]
    tid = answered(gw, gw.alice, 2)
    url = f"{gw.url}/v1/feedback"
    for body, field in [({"score": 1}, "trace_id"), ({"trace_id": tid}, "score"), ({"trace_id": tid, "score": 2}, "score"),
                        ({"trace_id": tid, "score": "great"}, "score"), ({"trace_id": tid, "score": 1, "comment": "x" * 4001}, "comment"),
                        ({"trace_id": tid, "score": 1, "stars": 5}, "stars"), ({"trace_id": "", "score": 1}, "trace_id")]:
        assert error_param(httpx.post(url, headers=auth(gw.alice), json=body), 400) == field, body
    assert error_param(httpx.post(url, headers=auth(gw.alice), json={"trace_id": "no-such-trace", "score": 1}), 404) == "trace_id"
    assert stored(gw, tid) == []


def test_a_trace_the_store_has_not_committed_yet_is_a_503_to_retry_not_a_404(gw) -> None:  # type: ignore[no-untyped-def]
    """Another process holds the SQLite write lock: the answer is served, its trace waits in the
    writer, and a rating of it is a 503 with Retry-After (the trace exists), then lands once the
    store takes writes again."""
    db = gw.served.store.split(":///", 1)[1]
    lock = sqlite3.connect(db, timeout=1, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the write lock; WAL readers go on
    try:
        tid = answered(gw, gw.alice, 5)
        t0 = time.monotonic()
        r = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.alice), json={"trace_id": tid, "score": 1}, timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "trace_pending" and r.json()["error"]["param"] == "trace_id"
        assert int(r.headers["Retry-After"]) >= 1 and time.monotonic() - t0 >= 4.5  # it waited for the flush first
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    deadline = time.monotonic() + 30
    while True:
        r = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.alice), json={"trace_id": tid, "score": 1}, timeout=30)
        if r.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(float(r.headers.get("Retry-After", 1)))
    assert r.status_code == 201, r.text
    assert [f.score for f in stored(gw, tid)] == [1.0]


async def test_the_client_sends_feedback_and_the_trace_page_shows_it(gw) -> None:  # type: ignore[no-untyped-def]
    tid = await asyncio.to_thread(answered, gw, gw.bob, 3)
    async with AsyncOrchestratorClient(gw.url, api_key=gw.bob) as client:
        fb = await client.feedback(tid, -1, comment="wrong option picked")
        assert fb.trace_id == tid and fb.score == -1.0 and fb.comment == "wrong option picked"
        with pytest.raises(BadRequestError):
            await client.feedback(tid, 3)  # refused before it is sent: -1..1
        with pytest.raises(NotFoundError):
            await client.feedback("00000000-0000-0000-0000-000000000000", 1)
    page = httpx.Client(base_url=gw.url, timeout=60)
    assert page.post("/ui/login", data={"key": gw.bob, "next": f"/ui/traces/{tid}"}).status_code == 303
    deadline = time.monotonic() + 10
    while "wrong option picked" not in (html := page.get(f"/ui/traces/{tid}").text):
        assert time.monotonic() < deadline, html[-2000:]
        await asyncio.sleep(0.1)
    assert "-1.0" in html


def test_one_expert_call_can_be_rated_and_a_missing_call_is_a_400_naming_it(gw) -> None:  # type: ignore[no-untyped-def]
    tid = answered(gw, gw.alice, 7)
    r = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.alice), json={"trace_id": tid, "score": -1, "call_seq": 0})
    assert r.status_code == 201 and r.json()["call_seq"] == 0, r.text
    assert [(f.score, f.call_seq) for f in stored(gw, tid)] == [(-1.0, 0)]
    bad = httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.alice), json={"trace_id": tid, "score": 1, "call_seq": 5})
    assert error_param(bad, 400) == "call_seq" and "no expert call 5" in bad.json()["error"]["message"]
    assert error_param(httpx.post(f"{gw.url}/v1/feedback", headers=auth(gw.alice), json={"trace_id": tid, "score": 1, "call_seq": -1}),
                       400) == "call_seq"
    assert len(stored(gw, tid)) == 1
