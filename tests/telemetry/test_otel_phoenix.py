"""Issue 22's OpenTelemetry acceptance: a real `orchestrator serve` with OTEL_EXPORTER_OTLP_ENDPOINT
pointed at a real Arize Phoenix (as the README's "Tracing with OpenTelemetry" runs it), a chat
through it, and the spans read back from Phoenix's REST API: the returned trace id, the GenAI
attributes on the workflow, the route decision and every expert call (replayed ones and a real
vLLM server's)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from conftest import POOL3, mmlu_questions, require_vllm_url
from phoenix_receiver import Phoenix, require_phoenix_bin
from security.served import Served, recorded_experts

pytestmark = pytest.mark.vllm


def test_a_chat_through_serve_arrives_in_phoenix_as_genai_spans(tmp_path) -> None:  # type: ignore[no-untyped-def]
    phoenix_bin, vllm = require_phoenix_bin(), require_vllm_url()
    q = mmlu_questions(1, offset=4)[0]
    smol = {"name": "smol", "backend": "openai", "base_url": vllm, "model": "smollm2-135m-instruct", "max_retries": 0}
    with Phoenix(tmp_path, phoenix_bin) as phoenix:
        served = Served(tmp_path / "gw", env={"OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url, "OTEL_BSP_SCHEDULE_DELAY": "200"},
                        config={"experts": recorded_experts() + [smol]})
        with served:
            r = httpx.post(f"{served.url}/v1/chat/completions", timeout=120, json={
                "model": "all-vote", "max_tokens": 8, "messages": [{"role": "user", "content": q.text}],
                "metadata": {"question_id": q.question_id}})
            assert r.status_code == 200, r.text
            trace_id = r.json()["trace_id"]
            assert r.headers["x-orchestrator-trace-id"] == trace_id
        # the gateway has stopped: its shutdown flushed the spans (no waiting on the batch delay)
        spans = phoenix.wait_for_spans(uuid.UUID(trace_id).hex, count=1 + 1 + 4)

    assert len(spans) == 6, [s["name"] for s in spans]
    (root,) = [s for s in spans if s["parent_id"] is None]
    (plan,) = [s for s in spans if s["name"] == "plan all-vote"]
    chats = {s["attributes"]["orchestrator.expert"]: s for s in spans if s["name"].startswith("chat ")}
    assert root["name"] == "invoke_workflow all-vote"
    a = root["attributes"]
    assert a["orchestrator.trace_id"] == trace_id and root["context"]["trace_id"] == uuid.UUID(trace_id).hex
    assert a["gen_ai.operation.name"] == "invoke_workflow" and a["gen_ai.workflow.name"] == "all-vote"
    assert a["orchestrator.router"] == "all-vote" and sorted(a["orchestrator.experts"]) == sorted([*POOL3, "smol"])
    assert a["gen_ai.usage.input_tokens"] == r.json()["usage"]["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == r.json()["usage"]["completion_tokens"]
    assert a["gen_ai.request.max_tokens"] == 8
    assert plan["attributes"]["gen_ai.operation.name"] == "plan"
    assert sorted(plan["attributes"]["orchestrator.route.experts"]) == sorted([*POOL3, "smol"])
    assert plan["parent_id"] == root["context"]["span_id"]

    assert sorted(chats) == sorted([*POOL3, "smol"])
    for name, span in chats.items():
        c = span["attributes"]
        assert span["parent_id"] == root["context"]["span_id"]
        assert c["gen_ai.operation.name"] == "chat"
        assert c["gen_ai.usage.input_tokens"] > 0 and c["gen_ai.usage.output_tokens"] > 0
        assert c["gen_ai.request.model"] == c["gen_ai.response.model"] == (name if name != "smol" else "smollm2-135m-instruct")
        assert c["gen_ai.provider.name"] == ("openai" if name == "smol" else "orchestrator.recorded")
        assert "orchestrator.cost_usd" in c
    vllm_call = chats["smol"]["attributes"]
    assert vllm_call["server.address"] == "127.0.0.1" and vllm_call["gen_ai.usage.output_tokens"] <= 8
    assert q.text[:40] not in repr(spans)  # content capture is off by default
