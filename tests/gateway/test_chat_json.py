"""The hot path's hand-built chat.completion body is the response model's, field for field."""

from __future__ import annotations

import json

import pytest

from orchestrator.gateway.queries import chat_completion, chat_completion_json
from orchestrator.pipeline import QueryResult
from routers.types import FinalAnswer
from store.records import ExpertCallRecord

TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"ü\"}"}}


def _result(text: str, *, tool_calls: list | None = None, calls: list[ExpertCallRecord] | None = None,
            finish: str | None = None, reused: list[str] | None = None) -> QueryResult:
    return QueryResult(trace_id="t-1", router="coe", final=FinalAnswer(text, "B", "single", tool_calls=tool_calls, finish_reason=finish),
                       plan=None, outputs=[], calls=calls or [], steps=[], latency_s=0.01, reused_experts=reused)


CASES = [
    _result("The answer is (B). 😀", calls=[ExpertCallRecord(expert="a", prompt_tokens=7, completion_tokens=3),
                                           ExpertCallRecord(expert="b", error_kind="timeout")]),
    _result("", tool_calls=[TOOL_CALL], calls=[ExpertCallRecord(expert="a", finish_reason="tool_calls")], finish="tool_calls"),
    _result("cut", calls=[ExpertCallRecord(expert="a", finish_reason="abort")]),  # a server's own reason becomes "stop"
    _result("cached", reused=["x", "y"]),
]


@pytest.mark.parametrize("result", CASES)
def test_hand_built_body_equals_the_response_model(result: QueryResult) -> None:
    fast = json.loads(chat_completion_json(result, "coe"))
    model = json.loads(chat_completion(result, "coe").model_dump_json())
    assert fast["id"].startswith("chatcmpl-") and abs(fast["created"] - model["created"]) <= 1
    for d in (fast, model):
        d.pop("id"), d.pop("created")
    assert fast == model
    assert list(fast) == list(model)  # the same key order too
