"""Batch jobs on a real Postgres that refuses results on purpose: a transient store error never fails
the job (its chunk is retried until the store takes it), a permanent one fails only its item."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import _fresh_pg_schema, postgres_url
from gateway_fixtures import recorded_config, running_gateway
from replica_fixtures import StoreFaults
from orchestrator.settings import GatewaySettings
from test_batches import batch_requests

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    url = postgres_url()
    if not url:
        pytest.fail("POSTGRES_URL is not set: start Postgres with `bash .ci/postgres.sh start`")
    return _fresh_pg_schema(url, request.node.name)


def test_transient_store_errors_are_retried_and_a_refused_result_fails_only_its_item(
        pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = recorded_config(tmp_path).model_copy(update={"store": pg_url})
    faults = StoreFaults(pg_url)
    reqs = batch_requests(6)
    reqs[3]["custom_id"] = "poison"
    with running_gateway(cfg, GatewaySettings(batch_chunk_size=2)) as url:
        faults.install()
        faults.install_on_batch_items()
        faults.transient(True, all_rows=True)  # every result refused for now: the store "is down"
        b = httpx.post(f"{url}/v1/batches", json={"requests": reqs}).json()

        def retries() -> float:
            m = httpx.get(f"{url}/metrics").text
            return float(next(ln.split()[-1] for ln in m.splitlines() if ln.startswith("orchestrator_batch_retries_total ")))

        deadline = time.monotonic() + 30
        while retries() < 2:  # the chunk was refused and retried (after 0.2 s, 0.4 s, ...)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        during = httpx.get(f"{url}/v1/batches/{b['id']}").json()
        assert during["status"] == "in_progress" and during["request_counts"]["completed"] == 0  # not failed

        faults.transient(False)  # the store is back
        deadline = time.monotonic() + 30
        while (done := httpx.get(f"{url}/v1/batches/{b['id']}").json())["status"] == "in_progress":
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        assert done["status"] == "completed" and done["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
        res = httpx.get(f"{url}/v1/batches/{b['id']}/results").json()["data"]
        assert [d["index"] for d in res] == list(range(6))
        bad = res[3]
        assert bad["custom_id"] == "poison" and bad["error"]["code"] == "result_not_stored"
        # the caller learns that it broke; what the store said (SQL, values) goes to the log only
        assert "breaks a constraint" not in bad["error"]["message"] and "INSERT" not in bad["error"]["message"]
        assert any("refused item 3" in r.getMessage() and "breaks a constraint" in r.getMessage() for r in caplog.records)
