"""Three `orchestrator serve` replicas on one real Postgres, in front of an upstream that counts calls:
a batch job survives the SIGKILL of the replica running it (taken over within its lease, every item
stored once, at most one chunk answered twice), and an expert registered through one replica is
served by another within the registry's poll bound, then deleted without breaking `all-vote`."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
import yaml

from conftest import _fresh_pg_schema, postgres_url
from faulty_upstream import FaultyUpstream
from replica_fixtures import Replica, ReplicaSet
from store import Store

pytestmark = pytest.mark.postgres

ITEMS, CHUNK = 60, 6
LEASE_S, SWEEP_S, POLL_S = 2.0, 0.25, 1.0
UPSTREAM_DELAY_S = 0.15  # each upstream call takes this long: a chunk of 6 (sent concurrently) ~0.2 s
SLACK_S = 2.0  # a busy 2-core CI machine


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    url = postgres_url()
    if not url:
        pytest.fail("POSTGRES_URL is not set: start Postgres with `bash .ci/postgres.sh start`")
    return _fresh_pg_schema(url, request.node.name)


def _expert(name: str, base_url: str) -> dict:
    return {"name": name, "backend": "openai", "base_url": base_url, "model": "faulty", "max_wait_ms": 0,
            "max_concurrency": CHUNK, "timeout_s": 10, "max_retries": 0}


def _chat(r: Replica, model: str) -> dict:
    resp = r.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}]})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _wait_for(cond, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.01)
    return time.monotonic() - t0


def _store_counts(url: str, batch_id: str) -> tuple[int, int, int]:
    from sqlalchemy import func, select

    from store.models import BatchItemRow, RequestRow

    async def go() -> tuple[int, int, int]:
        async with await Store.open(url) as store, store._sessions() as s:
            mine = BatchItemRow.batch_id == batch_id
            rows = (await s.execute(select(func.count()).select_from(BatchItemRow).where(mine))).scalar_one()
            distinct = (await s.execute(select(func.count(func.distinct(BatchItemRow.idx))).where(mine))).scalar_one()
            traces = (await s.execute(select(func.count()).select_from(RequestRow)
                                      .where(RequestRow.id.in_(select(BatchItemRow.trace_id).where(mine))))).scalar_one()
            return rows, distinct, traces

    return asyncio.run(go())


def _lease_owner(url: str, batch_id: str) -> str | None:
    async def go() -> str | None:
        async with await Store.open(url) as store:
            rec = await store.get_batch(batch_id)
            assert rec is not None
            return rec.lease_owner

    return asyncio.run(go())


def test_three_replicas_share_batch_jobs_and_the_registry(pg_url: str, tmp_path: Path) -> None:
    env = {"ORCHESTRATOR_BATCH_CHUNK_SIZE": str(CHUNK), "ORCHESTRATOR_BATCH_LEASE_S": str(LEASE_S),
           "ORCHESTRATOR_BATCH_SWEEP_S": str(SWEEP_S), "ORCHESTRATOR_REGISTRY_POLL_S": str(POLL_S),
           "ORCHESTRATOR_API_EXPERT_HOSTS": "127.0.0.1"}  # the upstream's host: API registration is off by default
    with FaultyUpstream("slow") as up:
        up.delay_s = UPSTREAM_DELAY_S
        config = tmp_path / "gw.yaml"
        config.write_text(yaml.safe_dump({"store": pg_url, "experts": [_expert("up", up.base_url), _expert("up-b", up.base_url)]}))
        with ReplicaSet(config, tmp_path, env=env) as replicas:
            # all three start at once on an empty database (one migrates, the others wait for it)
            r1, r2, r3 = (replicas.start(wait=False) for _ in range(3))
            for r in (r1, r2, r3):
                replicas.wait_up(r)
            r1_id = r1.get("/ready").json()["replica"]["id"]

            # ---- a 60-item batch through replica 1; SIGKILL replica 1 mid-job
            reqs = [{"custom_id": f"item-{i}", "body": {"model": "up", "messages": [{"role": "user", "content": f"question {i}"}]}}
                    for i in range(ITEMS)]
            t_submit = time.monotonic()
            batch = r1.post("/v1/batches", json={"requests": reqs}).json()
            bid = batch["id"]

            def completed(r: Replica) -> int:
                return r.get(f"/v1/batches/{bid}").json()["request_counts"]["completed"]

            _wait_for(lambda: completed(r1) >= 2 * CHUNK, 30, "two chunks")
            assert _lease_owner(pg_url, bid) == r1_id  # replica 1 holds it; 2 and 3 leave it alone...
            done_at_kill, calls_at_kill = completed(r1), up.requests
            assert calls_at_kill <= done_at_kill + CHUNK  # ...so nothing was answered twice so far
            t_kill = time.monotonic()
            r1.kill()
            chunk_s = (t_kill - t_submit) / (done_at_kill / CHUNK)  # measured pace of one chunk
            assert done_at_kill < ITEMS, "the job finished before the kill: make the upstream slower"

            stall_s = _wait_for(lambda: completed(r2) > done_at_kill, 60, "the job resumed")
            _wait_for(lambda: r2.get(f"/v1/batches/{bid}").json()["status"] == "completed", 60, "the job completed")
            took_s = time.monotonic() - t_kill
            remaining_chunks = math.ceil((ITEMS - done_at_kill) / CHUNK)
            print(f"\nbatch: killed at {done_at_kill}/{ITEMS} items ({chunk_s:.2f} s per chunk); first new result "
                  f"{stall_s:.2f} s after the kill, completed {took_s:.2f} s after it; upstream calls {up.requests}")
            # taken over within the lease (+ one sweep), then one chunk (the one lost in flight) more
            assert stall_s <= LEASE_S + SWEEP_S + 2 * chunk_s + SLACK_S
            assert took_s <= LEASE_S + SWEEP_S + (remaining_chunks + 1) * chunk_s + SLACK_S

            final = r3.get(f"/v1/batches/{bid}").json()
            assert final["request_counts"] == {"total": ITEMS, "completed": ITEMS, "failed": 0}
            data = r3.get(f"/v1/batches/{bid}/results").json()["data"]
            assert [d["index"] for d in data] == list(range(ITEMS))
            assert [d["custom_id"] for d in data] == [r["custom_id"] for r in reqs]
            assert _store_counts(pg_url, bid) == (ITEMS, ITEMS, ITEMS)  # every item (and its trace) stored once
            assert up.requests <= ITEMS + CHUNK  # at most the chunk in flight at the kill was asked again
            assert _lease_owner(pg_url, bid) is None

            # ---- the registry: add through replica 2, use through replica 3
            before_all_vote = _chat(r3, "all-vote")  # cached on replica 3 with the pool {up, up-b}
            assert sorted(before_all_vote["experts"]) == ["up", "up-b"]
            assert r2.post("/v1/experts", json=_expert("extra", up.base_url)).status_code == 201
            seen_s = _wait_for(lambda: "extra" in {m["id"] for m in r3.get("/v1/models").json()["data"]}, 10, "extra on replica 3")
            print(f"registry: replica 3 served the expert added through replica 2 after {seen_s * 1000:.0f} ms (bound {POLL_S:g} s)")
            assert seen_s <= POLL_S + 0.5
            assert _chat(r3, "extra")["experts"] == ["extra"]
            assert sorted(_chat(r3, "all-vote")["experts"]) == ["extra", "up", "up-b"]

            # ---- delete it: all-vote keeps working on the rest, on every replica
            resp = r2.delete("/v1/experts/extra")
            assert resp.status_code == 200 and resp.json()["deleted"] is True
            gone_s = _wait_for(lambda: "extra" not in {m["id"] for m in r3.get("/v1/models").json()["data"]}, 10, "extra gone")
            assert gone_s <= POLL_S + 0.5
            for r in (r3, r2):
                assert sorted(_chat(r, "all-vote")["experts"]) == ["up", "up-b"]
            assert r3.post("/v1/chat/completions", json={"model": "extra", "messages": [{"role": "user", "content": "x"}]}).status_code == 404
