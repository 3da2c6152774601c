"""Answered queries as OTel spans (orchestrator/telemetry.py), on real recorded experts, collected
by the SDK's own in-memory exporter: the GenAI attributes, the tree, the times, what stays out."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import POOL3, RECORDED, mmlu_questions
from experts import parse_config
from orchestrator.pipeline import Runtime
from orchestrator.telemetry import NS, Telemetry, _call_times, capture_content, tracing_configured
from routers.types import Query
from store.records import ExpertCallRecord


def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'o.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m, "price_per_mtok": {"input": 1, "output": 2}}
                    for m in POOL3],
    })


async def answered(tmp_path: Path, query: Query, router: str, *, content: bool = False) -> tuple[list[ReadableSpan], object]:
    exporter = InMemorySpanExporter()
    async with await Runtime.create(config(tmp_path)) as rt:
        rt.telemetry = Telemetry.with_exporter(exporter, content=content, batch=False)
        result = await rt.answer(query, router)
        trace = await rt.store.get_trace(result.trace_id)
        rt.telemetry.shutdown()
    return list(exporter.get_finished_spans()), trace


def by_op(spans: list[ReadableSpan], op: str) -> list[ReadableSpan]:
    return [s for s in spans if s.attributes["gen_ai.operation.name"] == op]


async def test_a_vote_becomes_a_workflow_a_plan_and_one_chat_span_per_expert(tmp_path: Path) -> None:
    q = mmlu_questions(1, offset=3)[0]
    spans, trace = await answered(tmp_path, q, "all-vote")
    (root,) = by_op(spans, "invoke_workflow")
    (plan,) = by_op(spans, "plan")
    chats = by_op(spans, "chat")
    assert len(spans) == 1 + 1 + len(POOL3)

    # the id the gateway returns is the OTel trace id, and is on the root span as said
    assert root.context.trace_id == uuid.UUID(trace.id).int
    assert root.attributes["orchestrator.trace_id"] == trace.id
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert root.parent is None and all(s.parent.span_id == root.context.span_id for s in [plan, *chats])
    assert root.name == "invoke_workflow all-vote" and plan.name == "plan all-vote"

    assert root.attributes["gen_ai.workflow.name"] == "all-vote"
    assert root.attributes["orchestrator.router"] == "all-vote"
    assert list(root.attributes["orchestrator.experts"]) == POOL3
    assert root.attributes["orchestrator.cost_usd"] == pytest.approx(trace.cost_usd) and trace.cost_usd > 0
    assert root.attributes["gen_ai.usage.input_tokens"] == trace.prompt_tokens > 0
    assert root.attributes["gen_ai.usage.output_tokens"] == trace.completion_tokens > 0
    assert root.attributes["orchestrator.aggregation"] == "vote"
    assert root.status.status_code is StatusCode.UNSET

    assert list(plan.attributes["orchestrator.route.experts"]) == POOL3
    assert list(plan.attributes["orchestrator.route.reasons"]) == ["all experts"] * 3
    assert plan.attributes["gen_ai.agent.name"] == "all-vote"

    by_expert = {c.attributes["orchestrator.expert"]: c for c in chats}
    assert sorted(by_expert) == sorted(POOL3)
    for call in trace.calls:
        span = by_expert[call.expert]
        assert span.name == f"chat {call.expert}"
        assert span.kind is SpanKind.INTERNAL  # a replayed model: no server call
        assert span.attributes["gen_ai.provider.name"] == "orchestrator.recorded"
        assert span.attributes["gen_ai.request.model"] == span.attributes["gen_ai.response.model"] == call.expert
        assert span.attributes["gen_ai.usage.input_tokens"] == call.prompt_tokens
        assert span.attributes["gen_ai.usage.output_tokens"] == call.completion_tokens
        assert span.attributes["orchestrator.cost_usd"] == pytest.approx(call.cost_usd)
        assert list(span.attributes["gen_ai.response.finish_reasons"]) == [call.finish_reason]
        assert root.start_time <= plan.end_time <= span.start_time <= span.end_time <= root.end_time
    assert root.end_time - root.start_time == pytest.approx(trace.latency_s * NS, abs=1)


async def test_no_prompt_or_answer_in_spans_unless_content_capture_is_opted_in(tmp_path: Path) -> None:
    q = mmlu_questions(1, offset=5)[0]
    spans, trace = await answered(tmp_path / "off", q, "all-vote")
    words = [q.text[:40], trace.answer_text[:40], *(c.output[:40] for c in trace.calls if c.output)]
    text = repr([dict(s.attributes) for s in spans])
    assert all(w and w not in text for w in words)
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output")) for s in spans for k in s.attributes)

    spans, trace = await answered(tmp_path / "on", q, "all-vote", content=True)
    (root,) = by_op(spans, "invoke_workflow")
    assert q.text in root.attributes["gen_ai.input.messages"]
    assert '"role": "assistant"' in root.attributes["gen_ai.output.messages"]
    outputs = {s.attributes["orchestrator.expert"]: s.attributes["gen_ai.output.messages"] for s in by_op(spans, "chat")}
    assert all(c.output[:40] in outputs[c.expert] for c in trace.calls)


async def test_a_failed_call_is_an_error_span_with_its_kind_and_not_its_message(tmp_path: Path) -> None:
    spans, trace = await answered(tmp_path, Query(text="a question nobody recorded"), "single")
    assert trace.status == "error" and trace.calls[0].error_message
    (root,) = by_op(spans, "invoke_workflow")
    (chat,) = by_op(spans, "chat")
    assert root.status.status_code is chat.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == chat.attributes["error.type"] == "unknown_question"
    assert "gen_ai.response.model" not in chat.attributes
    assert trace.calls[0].error_message not in repr([dict(s.attributes) for s in spans])


def rec(expert: str, latency_s: float, role: str = "expert", fallback_for: str | None = None) -> ExpertCallRecord:
    return ExpertCallRecord(expert=expert, role=role, latency_s=latency_s, fallback_for=fallback_for)


def test_call_times_follow_how_each_kind_of_call_runs() -> None:
    s, routed, end = 0, 1 * NS, 100 * NS
    # a plan: keyword tagging while routing, two experts together, one fallback, then the aggregator
    calls = [rec("tagger", 0.5, role="keyword"), rec("a", 2.0), rec("b", 5.0), rec("c", 1.0, fallback_for="a"),
             rec("agg", 3.0, role="aggregator")]
    times = _call_times(calls, s, routed, end)
    assert times[0] == (0, NS // 2)  # inside the route decision
    assert times[1] == (routed, routed + 2 * NS) and times[2] == (routed, routed + 5 * NS)
    assert times[3] == (routed + 2 * NS, routed + 3 * NS)  # after the call it replaced
    assert times[4] == (routed + 5 * NS, routed + 8 * NS)  # after every call it combines
    # a multi-round policy: each call after the previous one; nothing past the root's end
    times = _call_times([rec("policy", 2.0, role="policy"), rec("x", 3.0, role="callee"), rec("policy", 200.0, role="policy")],
                        s, routed, end)
    assert times == [(routed, 3 * NS), (3 * NS, 6 * NS), (6 * NS, end)]


def test_tracing_is_on_only_when_the_sdk_variables_ask_for_it() -> None:
    assert not tracing_configured({})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"})
    assert Telemetry.from_env({}) is None
    assert not capture_content({}) and not capture_content({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false"})
    assert capture_content({"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "True"})


async def test_off_the_runtime_has_no_telemetry_and_answers_as_before(tmp_path: Path) -> None:
    q = mmlu_questions(1)[0]
    async with await Runtime.create(config(tmp_path)) as rt:
        assert rt.telemetry is None
        result = await rt.answer(q, "all-vote")
        assert await rt.store.get_trace(result.trace_id) is not None


class Received:
    """A streaming caller's end: what `Runtime.answer(..., sink=...)` sends it."""

    def __init__(self) -> None:
        self.pieces: list[str] = []

    @property
    def started(self) -> bool:
        return bool(self.pieces)

    def send(self, text: str, tool_calls: object = None, *, expert: str | None = None) -> None:
        self.pieces.append(text)


async def test_a_cancelled_stream_is_exported_with_its_cancelled_call(tmp_path: Path) -> None:
    import asyncio

    from faulty_upstream import FaultyUpstream

    exporter = InMemorySpanExporter()
    with FaultyUpstream("slow") as up:
        up.delay_s = 30.0
        cfg = parse_config({"store": f"sqlite+aiosqlite:///{tmp_path / 'o.db'}", "experts": [
            {"name": "slow", "backend": "openai", "base_url": up.base_url, "model": "slow-model", "max_retries": 0}]})
        async with await Runtime.create(cfg) as rt:
            rt.telemetry = Telemetry.with_exporter(exporter, batch=False)
            task = asyncio.create_task(rt.answer(Query(text="What is 2+2?"), "single", sink=Received()))
            while not up.requests:  # the call reached the upstream
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    (root,) = by_op(exporter.get_finished_spans(), "invoke_workflow")
    (chat,) = by_op(exporter.get_finished_spans(), "chat")
    assert root.attributes["orchestrator.status"] == root.attributes["error.type"] == "cancelled"
    assert root.status.status_code is StatusCode.ERROR
    assert chat.attributes["error.type"] == "cancelled" and chat.attributes["gen_ai.request.model"] == "slow-model"
    assert chat.kind is SpanKind.CLIENT and chat.attributes["server.port"] == up.port


async def test_the_sdk_sampler_from_the_environment_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = mmlu_questions(1)[0]
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    spans, trace = await answered(tmp_path / "off", q, "single")
    assert trace is not None and spans == []
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    spans, _ = await answered(tmp_path / "on", q, "single")
    assert len(spans) == 3  # workflow, plan, chat


def plan_attributes(detail: dict, *, content: bool = False) -> dict:
    from store.records import TraceStepRecord

    return Telemetry.with_exporter(InMemorySpanExporter(), batch=False, content=content)._plan_attributes(
        "r", TraceStepRecord(kind="route", detail=detail))


def test_plan_spans_say_why_with_the_routers_labels_and_not_the_query_words() -> None:
    # the step details as the routers write them (Plan.summary(), Router-R1's route node, the cascade)
    coe = plan_attributes({"experts": [{"expert": "bio", "weight": 0.83, "reason": "category biology (p=0.83) → bio", "fallback": None}],
                           "aggregation": {"kind": "single"},
                           "detail": {"predicted_category": "biology", "confidence": 0.83, "fallback_used": False}})
    assert coe["orchestrator.route.experts"] == ["bio"] and coe["orchestrator.route.weights"] == [0.83]
    assert coe["orchestrator.route.predicted_category"] == "biology" and coe["orchestrator.route.confidence"] == 0.83
    assert coe["orchestrator.route.reasons"] == ["category biology (p=0.83) → bio"] and coe["orchestrator.aggregation"] == "single"

    smoe = plan_attributes({"experts": [{"expert": "a", "weight": 0.6, "reason": "skills genetics", "fallback": None}],
                            "aggregation": {"kind": "weighted-vote"},
                            "detail": {"keywords": ["helicase unwinds"], "mapped": ["genetics"], "tagger": "embedding"}})
    assert smoe["orchestrator.route.mapped"] == ["genetics"] and smoe["orchestrator.route.tagger"] == "embedding"
    assert "helicase" not in repr(smoe)  # the raw keywords are words of the query

    r1 = plan_attributes({"turn": 1, "outcome": "route", "name": "bio", "query": "what does helicase do?", "valid": True,
                          "reason": None, "expert": "bio"})
    assert r1["orchestrator.route.experts"] == ["bio"] and r1["orchestrator.route.outcome"] == "route"
    assert "helicase" not in repr(r1)  # the policy's sub-query to its expert is content

    cascade = plan_attributes({"router": "cascade", "order": ["b", "a"], "scores": {"b": 0.7, "a": 0.6}, "k_min": 1})
    assert cascade["orchestrator.route.experts"] == ["b", "a"]
    assert cascade["orchestrator.route.scored_experts"] == ["b", "a"] and cascade["orchestrator.route.scores"] == [0.7, 0.6]

    assert "helicase" in plan_attributes({"expert": "bio", "query": "what does helicase do?"}, content=True)["orchestrator.route.detail"]
