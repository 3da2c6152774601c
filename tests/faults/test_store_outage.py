"""Store unavailable: with its Postgres stopped, the gateway fails requests fast with 503, stays
up, keeps every answered trace, and recovers by itself when Postgres returns.

Runs against a PRIVATE Postgres cluster started and stopped by this test with .ci/postgres.sh,
on ORCH_FAULTS_PG_PORT and ORCH_FAULTS_PG_DATA_DIR (scripts/test.sh sets both; unset: a free port
and a data directory of its own), so the store tests' server is never touched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import REPO, _fresh_pg_schema
from experts import parse_config
from faulty_upstream import FaultyUpstream
from gateway_fixtures import running_gateway

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_ENV = {
    "PG_PORT": os.environ.get("ORCH_FAULTS_PG_PORT") or str(_free_port()),
    "PG_DATA_DIR": os.environ.get("ORCH_FAULTS_PG_DATA_DIR") or f"/var/lib/postgresql/llm-orchestrator-faults-{os.getpid()}",
}


def _pg(action: str) -> str:
    out = subprocess.run(["bash", str(REPO / ".ci" / "postgres.sh"), action], env={**os.environ, **PG_ENV},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1000:]
    return out.stdout


@pytest.fixture(scope="module")
def private_pg() -> Iterator[str]:
    if os.environ.get("ORCH_SKIP_PRIVATE_POSTGRES") == "1":
        pytest.skip("ORCH_SKIP_PRIVATE_POSTGRES=1 set explicitly")
    url = next(ln.split("=", 1)[1] for ln in _pg("start").splitlines() if ln.startswith("POSTGRES_URL="))
    assert f":{PG_ENV['PG_PORT']}/" in url
    assert url != os.environ.get("POSTGRES_URL")  # never the store tests' server

    _fresh_pg_schema(url, "private")
    try:
        yield url
    finally:
        _pg("stop")
        if not os.environ.get("ORCH_FAULTS_PG_DATA_DIR"):  # a directory of its own: remove it
            subprocess.run(["rm", "-rf", PG_ENV["PG_DATA_DIR"]], check=False)


def _chat(url: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      json={"model": "good", "messages": [{"role": "user", "content": "What is 2+2?"}]})


def test_store_outage_fails_fast_with_503_and_recovers(private_pg: str, tmp_path: Path) -> None:
    answered: list[str] = []
    with FaultyUpstream("ok") as up:
        cfg = parse_config({"store": private_pg, "experts": [
            {"name": "good", "backend": "openai", "base_url": up.base_url, "model": "faulty", "max_wait_ms": 0}]})
        with running_gateway(cfg) as url:
            r = _chat(url)
            assert r.status_code == 200
            answered.append(r.json()["trace_id"])

            _pg("stop")
            statuses = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                r = _chat(url)
                statuses.append(r.status_code)
                if r.status_code == 200:  # answered before the writer noticed; its trace is held
                    answered.append(r.json()["trace_id"])
                    time.sleep(0.2)
                    continue
                assert r.status_code == 503, r.text
                assert time.monotonic() - t0 < 1.0  # fast, not after a connection timeout
                body = r.json()
                assert set(body["error"]) == {"message", "type", "param", "code"} and "store" in body["error"]["message"]
                assert int(r.headers["retry-after"]) >= 1
                break
            assert statuses and statuses[-1] == 503, statuses
            assert len(statuses) <= 10  # the outage is noticed within a few requests
            assert httpx.get(f"{url}/health").status_code == 200  # the process itself is fine
            for _ in range(3):
                t0 = time.monotonic()
                assert _chat(url).status_code == 503 and time.monotonic() - t0 < 1.0

            _pg("start")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = _chat(url)
                if r.status_code == 200:
                    answered.append(r.json()["trace_id"])
                    break
                assert r.status_code == 503
                time.sleep(0.5)
            else:
                pytest.fail("the gateway did not recover within 30 s of Postgres returning")
            # every answered request's trace is in the store, those held during the outage too
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                missing = [t for t in answered if httpx.get(f"{url}/v1/traces/{t}").status_code != 200]
                if not missing:
                    break
                time.sleep(0.5)
            assert not missing

    async def stored() -> int:
        from store import Store

        async with await Store.open(private_pg) as store:
            return sum([await store.get_trace(t) is not None for t in answered])

    assert asyncio.run(stored()) == len(answered)
