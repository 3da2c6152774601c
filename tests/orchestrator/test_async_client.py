"""The async client against a real gateway on 127.0.0.1: every endpoint, typed errors, retries."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import httpx
import pytest

from conftest import POOL3, RECORDED, closed_port_url, mmlu_questions
from gateway_fixtures import make_keys, recorded_config, running_gateway
from orchestrator.client import (
    APIConnectionError,
    AsyncOrchestratorClient,
    AuthenticationError,
    BatchTimeout,
    ChatCompletion,
    ClientError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    UnprocessableEntityError,
    UpstreamError,
)
from orchestrator.settings import GatewaySettings


def recorded_response(model: str, question_id: str) -> str:
    with gzip.open(RECORDED / "responses" / f"{model}.jsonl.gz", "rt") as f:
        return next(d["response"] for d in map(json.loads, f) if str(d["question_id"]) == question_id)


def test_client_covers_every_endpoint(tmp_path: Path) -> None:
    q = mmlu_questions(1)[0]
    meta = {"question_id": q.question_id, "choices": list(q.choices or ())}
    expected = recorded_response(POOL3[0], q.question_id)

    async def go(url: str) -> None:
        async with AsyncOrchestratorClient(url) as c:
            assert await c.health() is True
            ready = await c.ready()
            assert ready.ready and ready.experts == {m: True for m in POOL3}

            models = await c.models()
            assert {"all-vote", "symbolic-moe", *POOL3} <= {m.id for m in models}
            assert (await c.model(POOL3[1])).kind == "expert"
            with pytest.raises(NotFoundError) as e:
                await c.model("gpt-17")
            assert e.value.param == "model" and e.value.code == "model_not_found"

            reply = await c.chat(POOL3[0], q.text, metadata=meta, max_tokens=64)
            assert isinstance(reply, ChatCompletion) and reply.text == expected
            assert reply.experts == [POOL3[0]] and reply.router == "single" and reply.usage.total_tokens > 0
            voted = await c.chat("all-vote", [{"role": "user", "content": q.text}], metadata=meta)
            assert sorted(voted.experts) == sorted(POOL3)

            chunks = [ch async for ch in c.chat_stream(POOL3[0], q.text, metadata=meta)]
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected
            assert chunks[-1].choices == [] and chunks[-1].usage is not None
            with pytest.raises(StreamError, match="question_id"):  # fails after the first chunk: in-band
                async for _ in c.chat_stream(POOL3[0], "hello"):
                    pass
            with pytest.raises(UpstreamError, match="question_id"):
                await c.chat(POOL3[0], "hello")

            trace = await c.trace(reply.trace_id)
            assert trace.router == "single" and [x.expert for x in trace.calls] == [POOL3[0]] and trace.answer_text == expected
            with pytest.raises(NotFoundError):
                await c.trace("no-such-trace")

            experts = await c.experts()
            assert [e.name for e in experts] == POOL3 and all(e.healthy for e in experts)
            spec = await c.create_expert({"name": "gpt4o-recorded", "backend": "recorded", "path": str(RECORDED), "model": "GPT-4o-2024-05-13"})
            assert spec.name == "gpt4o-recorded"
            down = await c.create_expert({"name": "down", "backend": "openai", "base_url": closed_port_url(), "model": "m", "timeout_s": 2})
            health = await c.expert_health()
            assert health["gpt4o-recorded"] is True and health["down"] is False
            assert (await c.chat("gpt4o-recorded", q.text, metadata=meta)).text == recorded_response("GPT-4o-2024-05-13", q.question_id)
            assert (await c.delete_expert(down.name)).deleted
            with pytest.raises(NotFoundError):
                await c.delete_expert("down")

            qs = mmlu_questions(5, offset=1)
            batch = await c.submit_batch(
                [{"custom_id": x.question_id, "body": {"model": "all-vote", "messages": [{"role": "user", "content": x.text}],
                                                      "metadata": {"question_id": x.question_id, "choices": list(x.choices or ())}}}
                 for x in qs],
                metadata={"run": "client-test"},
            )
            assert batch.status == "in_progress" and batch.request_counts.total == 5
            done = await c.wait_batch(batch.id, poll_s=0.05, timeout_s=60)
            assert done.status == "completed" and done.request_counts.completed == 5 and done.metadata == {"run": "client-test"}
            results = await c.batch_results(batch.id, page_size=2)  # three pages
            assert [r.custom_id for r in results] == [x.question_id for x in qs]
            assert all(r.response.status_code == 200 and r.response.request_id for r in results)
            assert [b.id for b in await c.batches()] == [batch.id]
            assert (await c.cancel_batch(batch.id)).status == "completed"  # finished jobs stay finished
            with pytest.raises(UnprocessableEntityError) as e:
                await c.batch_results(batch.id, page_size=0)
            assert e.value.param == "limit"
            with pytest.raises(NotFoundError):
                await c.batch("batch_nope")

            assert f'orchestrator_expert_calls_total{{expert="{POOL3[0]}",status="ok"}}' in await c.metrics()
        with pytest.raises(ClientError, match="closed"):
            await c.models()

    with running_gateway(recorded_config(tmp_path)) as url:
        asyncio.run(go(url))


def test_client_auth_limits_and_timeouts(tmp_path: Path) -> None:
    cfg = recorded_config(tmp_path)
    alice_key, bob_key = make_keys(cfg.store, ["alice", "bob"])
    q = mmlu_questions(1)[0]

    async def go(url: str) -> None:
        async with AsyncOrchestratorClient(url) as anon, AsyncOrchestratorClient(url, api_key=alice_key) as alice, \
                AsyncOrchestratorClient(url, api_key=bob_key) as bob:
            with pytest.raises(AuthenticationError):
                await anon.models()
            reply = await alice.chat(POOL3[2], q.text, metadata={"question_id": q.question_id})
            assert (await alice.trace(reply.trace_id)).owner is not None
            with pytest.raises(NotFoundError):
                await bob.trace(reply.trace_id)
            batch = await alice.submit_batch([{"body": {"model": POOL3[2], "messages": [{"role": "user", "content": q.text}],
                                                        "metadata": {"question_id": q.question_id}}}])
            with pytest.raises(NotFoundError):
                await bob.batch(batch.id)
            with pytest.raises(NotFoundError):
                await bob.batch_results(batch.id)
            assert await bob.batches() == []
            # the job is paused between chunks for 2 s: a short wait times out, the job goes on
            with pytest.raises(BatchTimeout):
                await alice.wait_batch(batch.id, poll_s=0.05, timeout_s=0.2)
            with pytest.raises(PayloadTooLargeError):
                await alice.chat("all-vote", "x" * 5000)

    with running_gateway(cfg, GatewaySettings(max_body_bytes=4000, batch_pause_s=2.0)) as url:
        asyncio.run(go(url))


def test_client_retries_429_honouring_retry_after(tmp_path: Path) -> None:
    async def go(url: str) -> None:
        async with AsyncOrchestratorClient(url, max_retries=0) as once, AsyncOrchestratorClient(url, max_retries=3, backoff_s=0.01) as patient:
            await once.models()  # the one token of the bucket
            with pytest.raises(RateLimitError) as e:
                await once.models()
            assert e.value.retry_after is not None and e.value.retry_after >= 1 and e.value.type == "rate_limit_error"
            t0 = time.monotonic()
            assert await patient.models()  # waits out Retry-After, then succeeds
            assert time.monotonic() - t0 >= 0.9

    # 60 per minute with a burst of 1: one request a second
    with running_gateway(recorded_config(tmp_path), GatewaySettings(rate_limit_rpm=60, rate_limit_burst=1)) as url:
        asyncio.run(go(url))


def test_client_retries_503_then_raises_typed_errors() -> None:
    # A scripted transport (no real server can be made to answer 503 on cue): 503, 503, then 200.
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) < 3:
            return httpx.Response(503, headers={"Retry-After": "0"},
                                  json={"error": {"message": "store down", "type": "service_unavailable", "param": None, "code": None}})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "object": "model", "created": 0, "owned_by": "x"}]})

    async def go() -> None:
        async with AsyncOrchestratorClient("http://gw.invalid", transport=httpx.MockTransport(handler), backoff_s=0.01) as c:
            assert [m.id for m in await c.models()] == ["m"] and len(seen) == 3
        seen.clear()
        async with AsyncOrchestratorClient("http://gw.invalid", transport=httpx.MockTransport(handler), max_retries=1, backoff_s=0.01) as c:
            with pytest.raises(ServiceUnavailableError, match="store down"):
                await c.models()
        async with AsyncOrchestratorClient(closed_port_url(), max_retries=1, backoff_s=0.01) as c:
            with pytest.raises(APIConnectionError, match="cannot reach"):
                await c.health()

    asyncio.run(go())
