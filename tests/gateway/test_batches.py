"""Batch jobs over real HTTP: lifecycle, validation, ownership, cancel, and resuming after SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import POOL3, REPO, RECORDED, mmlu_questions
from gateway_fixtures import free_port, make_keys, recorded_config, running_gateway
from orchestrator.settings import GatewaySettings


def batch_requests(n: int, *, offset: int = 0) -> list[dict]:
    """Real MMLU-Pro questions the recorded experts have answers for; models alternate."""
    out = []
    for i, q in enumerate(mmlu_questions(n, offset=offset)):
        out.append({"custom_id": f"q-{q.question_id}", "body": {
            "model": "all-vote" if i % 2 else POOL3[i % 3],
            "messages": [{"role": "user", "content": q.text}],
            "metadata": {"question_id": q.question_id, "choices": list(q.choices or ())},
        }})
    return out


def wait_status(url: str, batch_id: str, headers: dict | None = None, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = httpx.get(f"{url}/v1/batches/{batch_id}", headers=headers).json()
        if b["status"] not in ("in_progress", "cancelling"):
            return b
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still running after {timeout} s: {b}")


def test_batch_answers_every_request_with_the_recorded_outputs(tmp_path: Path) -> None:
    reqs = batch_requests(9)
    with running_gateway(recorded_config(tmp_path), GatewaySettings(batch_chunk_size=4)) as url:
        r = httpx.post(f"{url}/v1/batches", json={"requests": reqs, "metadata": {"purpose": "test"}})
        assert r.status_code == 200, r.text
        b = r.json()
        assert b["object"] == "batch" and b["request_counts"]["total"] == 9 and b["created_at"] > 0
        done = wait_status(url, b["id"])
        assert done["status"] == "completed" and done["request_counts"] == {"total": 9, "completed": 9, "failed": 0}
        assert done["metadata"] == {"purpose": "test"} and done["completed_at"] >= done["created_at"]

        res = httpx.get(f"{url}/v1/batches/{b['id']}/results").json()["data"]
        assert [d["index"] for d in res] == list(range(9))
        assert [d["custom_id"] for d in res] == [q["custom_id"] for q in reqs]
        import gzip
        import json

        with gzip.open(RECORDED / "responses" / f"{POOL3[0]}.jsonl.gz", "rt") as f:
            recorded = {str(d["question_id"]): d["response"] for d in map(json.loads, f)}
        direct = res[0]  # model POOL3[0], a direct expert call: its recorded response verbatim
        assert direct["response"]["body"]["choices"][0]["message"]["content"] == recorded[reqs[0]["body"]["metadata"]["question_id"]]
        voted = res[1]["response"]["body"]
        assert voted["router"] == "all-vote" and sorted(voted["experts"]) == sorted(POOL3)

        # each item left a trace with its calls
        trace = httpx.get(f"{url}/v1/traces/{res[1]['response']['request_id']}").json()
        assert {c["expert"] for c in trace["calls"]} == set(POOL3) and trace["router"] == "all-vote"

        # paging
        page = httpx.get(f"{url}/v1/batches/{b['id']}/results", params={"after": 3, "limit": 2}).json()
        assert [d["index"] for d in page["data"]] == [4, 5] and page["has_more"] is True
        assert httpx.get(f"{url}/v1/batches").json()["data"][0]["id"] == b["id"]
        metrics = httpx.get(f"{url}/metrics").text
        assert f'orchestrator_expert_calls_total{{expert="{POOL3[2]}",status="ok"}}' in metrics
        assert 'orchestrator_batch_items_total{status="ok"} 9.0' in metrics and "orchestrator_batch_jobs_running 0.0" in metrics


def test_batch_items_that_fail_get_error_bodies(tmp_path: Path) -> None:
    # A recorded expert asked a question it has no recording for: a per-item 502, not a failed job.
    reqs = batch_requests(2) + [{"custom_id": "free-text", "body": {"model": POOL3[1], "messages": [{"role": "user", "content": "hello"}]}}]
    with running_gateway(recorded_config(tmp_path)) as url:
        b = httpx.post(f"{url}/v1/batches", json={"requests": reqs}).json()
        done = wait_status(url, b["id"])
        assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
        bad = httpx.get(f"{url}/v1/batches/{b['id']}/results").json()["data"][2]
        assert bad["custom_id"] == "free-text" and bad["response"]["status_code"] == 502
        assert bad["error"]["code"] == "upstream_failed" and "question_id" in bad["response"]["body"]["error"]["message"]


def test_batch_validation_errors_name_the_field(tmp_path: Path) -> None:
    """An invalid batch body is a 400 naming the field (OpenAI's status for invalid parameters);
    a request that cannot be answered (unknown model, router not fitted, no user message) fails
    alone, with the error the chat endpoint would give it, and the others are answered."""
    with running_gateway(recorded_config(tmp_path)) as url:
        def post(body: dict) -> dict:
            r = httpx.post(f"{url}/v1/batches", json=body)
            return {"status": r.status_code, **r.json()["error"]}

        user = [{"role": "user", "content": "x"}]
        e = post({"requests": [{"body": {"model": "all-vote", "messages": user, "max_tokens": 0}}]})
        assert e["status"] == 400 and e["param"] == "requests.0.body.max_tokens"
        e = post({"requests": []})
        assert e["status"] == 400 and e["param"] == "requests"
        e = post({"requests": [{"custom_id": "a", "body": {"model": "all-vote", "messages": user}}] * 2})
        assert e["status"] == 400 and "twice" in e["message"]
        e = post({"requests": [{"body": {"model": "all-vote", "messages": user, "stream": True}}]})
        assert e["status"] == 400 and "stream" in e["message"]
        e = post({"endpoint": "/v1/chat/completions"})
        assert e["status"] == 400 and "input_file_id" in e["message"]
        assert httpx.get(f"{url}/v1/batches/batch_missing").status_code == 404
        assert httpx.get(f"{url}/v1/batches").json()["data"] == []  # nothing invalid was stored

        good = batch_requests(1)[0]
        lines = [good, {"custom_id": "unknown", "body": {"model": "gpt-17", "messages": user}},
                 {"custom_id": "no-user", "body": {"model": "all-vote", "messages": [{"role": "system", "content": "x"}]}},
                 {"custom_id": "unfitted", "body": {"model": "best-single", "messages": user}}]
        r = httpx.post(f"{url}/v1/batches", json={"requests": lines})
        assert r.status_code == 200, r.text
        done = wait_status(url, r.json()["id"])
        assert done["status"] == "completed" and done["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
        res = {d["custom_id"]: d for d in httpx.get(f"{url}/v1/batches/{done['id']}/results").json()["data"]}
        assert res[good["custom_id"]]["response"]["status_code"] == 200
        unknown = res["unknown"]["response"]
        assert unknown["status_code"] == 404 and unknown["body"]["error"]["param"] == "body.model" and "all-vote" in unknown["body"]["error"]["message"]
        assert res["no-user"]["response"]["status_code"] == 400 and res["no-user"]["response"]["body"]["error"]["param"] == "body.messages"
        unfitted = res["unfitted"]["response"]
        assert unfitted["status_code"] == 400 and "fitted" in unfitted["body"]["error"]["message"]
        assert res["unknown"]["error"]["code"] == "model_not_found"


def test_batches_are_scoped_to_their_key_and_can_be_cancelled(tmp_path: Path) -> None:
    cfg = recorded_config(tmp_path)
    alice, bob = ({"Authorization": f"Bearer {k}"} for k in make_keys(cfg.store, ["alice", "bob"]))
    # chunks of one with a pause: the job is still running when the cancel arrives
    with running_gateway(cfg, GatewaySettings(batch_chunk_size=1, batch_pause_s=0.3)) as url:
        assert httpx.post(f"{url}/v1/batches", json={"requests": batch_requests(1)}).status_code == 401
        b = httpx.post(f"{url}/v1/batches", json={"requests": batch_requests(20)}, headers=alice).json()
        for path in ("", "/results"):
            r = httpx.get(f"{url}/v1/batches/{b['id']}{path}", headers=bob)
            assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
        assert httpx.post(f"{url}/v1/batches/{b['id']}/cancel", headers=bob).status_code == 404
        assert httpx.get(f"{url}/v1/batches", headers=bob).json()["data"] == []
        assert [x["id"] for x in httpx.get(f"{url}/v1/batches", headers=alice).json()["data"]] == [b["id"]]

        c = httpx.post(f"{url}/v1/batches/{b['id']}/cancel", headers=alice).json()
        assert c["status"] in ("cancelling", "cancelled")
        final = wait_status(url, b["id"], alice)
        assert final["status"] == "cancelled" and final["cancelled_at"] is not None
        n = final["request_counts"]["completed"]
        assert 0 < n < 20
        time.sleep(0.8)  # nothing more is answered after the cancel
        assert len(httpx.get(f"{url}/v1/batches/{b['id']}/results", headers=alice).json()["data"]) == n


def _serve(config: Path, port: int, log: Path) -> subprocess.Popen:
    # a short lease: the restarted gateway (a new replica) takes the killed one's job over once it expires
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRATOR_BATCH_CHUNK_SIZE": "2", "ORCHESTRATOR_BATCH_PAUSE_S": "0.15",
           "ORCHESTRATOR_BATCH_LEASE_S": "2", "ORCHESTRATOR_BATCH_SWEEP_S": "0.25",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(config), "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=config.parent,
    )


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gateway exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("gateway did not start")


def test_batch_survives_a_gateway_killed_mid_run(tmp_path: Path) -> None:
    cfg = recorded_config(tmp_path)
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_defaults=True)))
    log = tmp_path / "gateway.log"
    n = 40
    reqs = batch_requests(n)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    proc = _serve(config, port, log)
    try:
        _wait_up(url, proc, log)
        b = httpx.post(f"{url}/v1/batches", json={"requests": reqs}).json()
        # 20 chunks of 2 with 0.15 s pauses: ~3 s of work. Kill once some, not all, are stored.
        deadline = time.monotonic() + 30
        done = 0
        while time.monotonic() < deadline:
            done = httpx.get(f"{url}/v1/batches/{b['id']}").json()["request_counts"]["completed"]
            if 4 <= done:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert 4 <= done < n, f"could not catch the job mid-run ({done}/{n})"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = _serve(config, port, log)
    try:
        _wait_up(url, proc, log)
        mid = httpx.get(f"{url}/v1/batches/{b['id']}").json()
        assert mid["status"] in ("in_progress", "completed") and mid["request_counts"]["completed"] >= done
        final = wait_status(url, b["id"], timeout=60)
        assert final["status"] == "completed" and final["request_counts"] == {"total": n, "completed": n, "failed": 0}
        data = httpx.get(f"{url}/v1/batches/{b['id']}/results").json()["data"]
        assert [d["index"] for d in data] == list(range(n))  # every item exactly once, in order
        assert [d["custom_id"] for d in data] == [r["custom_id"] for r in reqs]
        assert len({d["response"]["request_id"] for d in data}) == n
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # And in the store: one row per (batch, index), one trace per item.
    from sqlalchemy import func, select

    from store import Store
    from store.models import BatchItemRow, RequestRow

    async def counts() -> tuple[int, int, int]:
        async with await Store.open(cfg.store) as store, store._sessions() as s:
            rows = (await s.execute(select(func.count()).select_from(BatchItemRow))).scalar_one()
            distinct = (await s.execute(select(func.count(func.distinct(BatchItemRow.idx))))).scalar_one()
            traces = (await s.execute(select(func.count()).select_from(RequestRow))).scalar_one()
            return rows, distinct, traces

    assert asyncio.run(counts()) == (n, n, n)


def test_batch_from_an_uploaded_file_through_the_openai_sdk(tmp_path: Path) -> None:
    """The SDK's Files + Batch API: upload JSONL, `batches.create(input_file_id=...)`, read the
    output and error files. Bad lines and unanswerable requests fail alone, in the error file."""
    import json

    import openai

    reqs = batch_requests(4)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    lines = [json.dumps({**r, "method": "POST", "url": "/v1/chat/completions"}) for r in reqs]
    lines.insert(2, '{"custom_id": "broken", "body": ')
    lines.append(json.dumps({"custom_id": "wrong-url", "url": "/v1/embeddings", "body": reqs[0]["body"]}))
    lines.append(json.dumps({"custom_id": "tools-on-a-vote", "body": {**reqs[1]["body"], "tools": tools}}))
    lines.append(json.dumps({"custom_id": "unknown-field", "body": {**reqs[0]["body"], "frobnicate": 1}}))
    with running_gateway(recorded_config(tmp_path), GatewaySettings(max_file_bytes=200_000, max_body_bytes=4_000)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0)
        content = ("\n".join(lines) + "\n").encode()
        assert len(content) > 4_000  # over the chat body limit: files have their own
        f = client.files.create(file=("questions.jsonl", content), purpose="batch")
        assert f.object == "file" and f.bytes == len(content) and f.filename == "questions.jsonl" and f.purpose == "batch"
        assert client.files.retrieve(f.id).bytes == len(content) and client.files.content(f.id).content == content
        assert [x.id for x in client.files.list().data] == [f.id]

        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                      metadata={"run": "sdk"})
        assert batch.input_file_id == f.id and batch.completion_window == "24h" and batch.output_file_id is None
        done = wait_status(url, batch.id)
        assert done["request_counts"] == {"total": 8, "completed": 4, "failed": 4} and done["metadata"] == {"run": "sdk"}
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed" and batch.output_file_id and batch.error_file_id
        out = [json.loads(ln) for ln in client.files.content(batch.output_file_id).text.splitlines()]
        assert [o["custom_id"] for o in out] == [r["custom_id"] for r in reqs]
        assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"][0]["finish_reason"] == "stop" for o in out)
        assert client.files.retrieve(batch.output_file_id).bytes == len(client.files.content(batch.output_file_id).content)
        errors = {e["custom_id"]: e for e in map(json.loads, client.files.content(batch.error_file_id).text.splitlines())}
        assert set(errors) == {None, "wrong-url", "tools-on-a-vote", "unknown-field"}  # a line that is not JSON has no custom_id
        assert errors[None]["error"]["code"] == "invalid_json" and errors[None]["response"]["status_code"] == 400
        assert errors[None]["id"] == f"{batch.id}_req_2" and "line 3" in errors[None]["error"]["message"]
        assert errors["wrong-url"]["error"]["code"] == "invalid_url"
        assert errors["tools-on-a-vote"]["error"]["code"] == "unsupported_for_route" and "cannot honour" in errors["tools-on-a-vote"]["error"]["message"]
        assert errors["unknown-field"]["error"]["code"] == "unsupported_parameter" and "frobnicate" in errors["unknown-field"]["error"]["message"]

        # refused uploads
        with pytest.raises(openai.BadRequestError, match="purpose"):
            client.files.create(file=("x.jsonl", b"{}\n"), purpose="assistants")
        with pytest.raises(openai.BadRequestError, match="UTF-8"):
            client.files.create(file=("x.jsonl", b"\xff\xfe{}\n"), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="no request"):
            client.files.create(file=("x.jsonl", b"\n\n"), purpose="batch")
        r = httpx.post(f"{url}/v1/files", files={"file": ("big.jsonl", b"{}\n" * 100_000)}, data={"purpose": "batch"})
        assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve("file-nope")
        assert client.files.delete(f.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
