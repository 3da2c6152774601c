"""The trace path on a real Postgres that misbehaves on purpose: the writer survives a permanent then
a transient error (and /ready says what is going on), and the traces a SIGKILLed gateway had not
committed are written exactly once by the next replicas to start."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import _fresh_pg_schema, postgres_url
from experts import parse_config
from faulty_upstream import FaultyUpstream
from gateway_fixtures import running_gateway
from replica_fixtures import ReplicaSet, StoreFaults
from store import Store

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    url = postgres_url()
    if not url:
        pytest.fail("POSTGRES_URL is not set: start Postgres with `bash .ci/postgres.sh start`")
    return _fresh_pg_schema(url, request.node.name)


def _config(store: str, base_url: str) -> dict:
    return {"store": store, "experts": [{"name": "good", "backend": "openai", "base_url": base_url, "model": "faulty", "max_wait_ms": 0}]}


def _chat(url: str, content: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, json={"model": "good", "messages": [{"role": "user", "content": content}]})


def _stored(url: str, ids: list[str]) -> list[str]:
    async def go() -> list[str]:
        async with await Store.open(url) as store:
            return [t for t in ids if await store.get_trace(t) is not None]

    return asyncio.run(go())


def _wait_ready(url: str, ready: bool, timeout_s: float = 15) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/ready", timeout=10)
        if (r.status_code == 200) == ready:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"/ready never became {'ready' if ready else 'not ready'}: {r.status_code} {r.text}")


def test_the_writer_survives_a_permanent_then_a_transient_error_and_loses_nothing(pg_url: str) -> None:
    faults = StoreFaults(pg_url)
    with FaultyUpstream("ok") as up, running_gateway(parse_config(_config(pg_url, up.base_url))) as url:
        warm = _chat(url, "warm-up")
        assert warm.status_code == 200
        faults.install()
        faults.transient(True)  # rows about "flaky" are refused with a retryable error for now

        # Hold the trace table: the writer blocks on its next commit ("blocker"), so the next three
        # traces queue up behind it and are committed together, in order, once it is released.
        lock = faults.lock_traces().acquire()
        answered = [_chat(url, q) for q in ("blocker", "a poison question", "a flaky question", "a plain question")]
        assert [r.status_code for r in answered] == [200] * 4  # answered meanwhile: journaled, not yet committed
        blocker, poison, flaky, plain = (r.json()["trace_id"] for r in answered)
        lock.release()
        # [poison, flaky, plain]: refused for good (poison) -> one by one -> flaky fails transiently
        # mid-isolation: the writer task ends, its supervisor marks it unhealthy and restarts it.
        body = _wait_ready(url, ready=False)
        assert any(p.startswith("trace writer:") for p in body["problems"]), body
        assert body["trace_writer"]["healthy"] is False and body["trace_writer"]["rejected"] == 1
        assert _chat(url, "while unhealthy").status_code == 503  # fails fast, nothing unrecorded

        faults.transient(False)  # the store recovers
        body = _wait_ready(url, ready=True)
        assert body["trace_writer"]["healthy"] is True and body["trace_writer"]["restarts"] >= 1, body
        assert body["trace_writer"]["backlog"] == 0 and body["trace_writer"]["rejected"] == 1
        assert _chat(url, "after recovery").status_code == 200

    ids = [warm.json()["trace_id"], blocker, flaky, plain]
    assert _stored(pg_url, ids + [poison]) == ids  # nothing lost; the poison row is set aside...
    journal = Path(os.environ["ORCHESTRATOR_TRACE_JOURNAL_DIR"])
    (spill,) = journal.glob("unsaved-traces-*.jsonl")
    assert [json.loads(line)["id"] for line in spill.read_text().splitlines()] == [poison]  # ...for a human


def test_traces_a_killed_gateway_held_are_written_once_by_the_replicas_that_start_next(pg_url: str, tmp_path: Path) -> None:
    faults = StoreFaults(pg_url)
    journal = Path(os.environ["ORCHESTRATOR_TRACE_JOURNAL_DIR"])
    with FaultyUpstream("ok") as up:
        config = tmp_path / "gw.yaml"
        config.write_text(yaml.safe_dump(_config(pg_url, up.base_url)))
        with ReplicaSet(config, tmp_path) as replicas:
            a = replicas.start()
            assert _chat(a.url, "warm-up").status_code == 200
            faults.install()
            lock = faults.lock_traces().acquire()  # a slow store: every trace waits in the writer
            answered = [_chat(a.url, f"question {i}") for i in range(20)]
            assert [r.status_code for r in answered] == [200] * 20
            ids = [r.json()["trace_id"] for r in answered]
            a.kill()  # SIGKILL with 20 answered requests whose traces were never committed
            lock.release()
            assert _stored(pg_url, ids) == []
            assert any(journal.glob("*.jsonl"))

            # two replicas start at once; between them they write every held trace, once
            b, c = replicas.start(wait=False), replicas.start(wait=False)
            replicas.wait_up(b)
            replicas.wait_up(c)
            assert sorted(_stored(pg_url, ids)) == sorted(ids)
            replayed = [r.get("/ready").json()["replica"]["journal_replayed"] for r in (b, c)]
            assert sum(replayed) == 20, replayed

            d = replicas.start()  # a later start finds nothing left to replay
            assert d.get("/ready").json()["replica"]["journal_replayed"] == 0

    async def count() -> int:
        async with await Store.open(pg_url) as store:
            return await store.count_traces()

    assert asyncio.run(count()) == 21  # warm-up + 20: none twice
    assert not list(journal.glob("*.jsonl"))  # replayed files are gone; the stopped replicas cleaned up
