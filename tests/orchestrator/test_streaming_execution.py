"""The streaming execution path (`Executor.streaming`): the answering call streams into a sink,
votes arrive once decided, a fallback replaces a failed answer only before its first token,
routes that cannot honour tools refuse them, and a cancelled stream still leaves its trace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from conftest import POOL3, RECORDED, closed_port_url, mmlu_questions, require_vllm_url
from experts import parse_config
from experts.types import GenerationRequest
from orchestrator.pipeline import Runtime
from routers import registry as router_registry
from routers.aggregation import vote
from routers.base import Router
from routers.router_r1.parsing import answer_so_far
from routers.types import Aggregation, Assignment, ExpertOutput, Plan, Query, RoutingError, UnsupportedRequest


class ListSink:
    """An `AnswerSink` that keeps what it was sent."""

    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.tool_calls: list[Any] = []
        self.experts: list[str | None] = []
        self.first_sent: asyncio.Event = asyncio.Event()

    @property
    def started(self) -> bool:
        return bool(self.pieces)

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def send(self, text: str, tool_calls: list[dict[str, Any]] | None = None, *, expert: str | None = None) -> None:
        self.pieces.append(text)
        self.tool_calls.append(tool_calls)
        self.experts.append(expert)
        self.first_sent.set()


class FallbackRouter(Router):
    """One expert that cannot be reached, with a recorded fallback."""

    name = "test-fallback"

    async def route(self, query: Query) -> Plan:
        return Plan.single(self.name, "unreachable", query.expert_request(), fallback=POOL3[1])


class SynthesisRouter(Router):
    """The recorded pool answers; the vLLM expert synthesises (an aggregator's answer to stream)."""

    name = "test-synthesis"

    async def route(self, query: Query) -> Plan:
        return Plan(router=self.name, assignments=[Assignment(expert=e, request=query.expert_request()) for e in POOL3],
                    aggregation=Aggregation(kind="llm", expert="vllm-smol"))


class OwnCallsRouter(Router):
    """Makes its own calls (as Router-R1 and MoT do), so the runtime cannot check its plans."""

    name = "test-own-calls"

    async def route(self, query: Query) -> Plan:
        raise RoutingError("no plans")

    async def run(self, queries, runtime):  # type: ignore[no-untyped-def]
        raise AssertionError("never reached: tools are refused first")


@pytest.fixture
def test_routers(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (FallbackRouter, SynthesisRouter, OwnCallsRouter):
        monkeypatch.setitem(router_registry.ROUTER_CLASSES, cls.name, f"{__name__}:{cls.__name__}")


def _config(tmp_path: Path, extra: list[dict] | None = None, routers: dict | None = None):  # type: ignore[no-untyped-def]
    return parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]
        + [{"name": "unreachable", "backend": "openai", "base_url": closed_port_url(), "model": "m", "max_retries": 0, "timeout_s": 2}]
        + (extra or []),
        "routers": routers or {},
    })


def _vllm() -> dict:
    return {"name": "vllm-smol", "backend": "openai", "base_url": require_vllm_url(), "model": "smollm2-135m-instruct", "timeout_s": 120}


async def test_single_expert_answers_stream_and_votes_arrive_once_decided(tmp_path: Path, test_routers: None) -> None:
    q = mmlu_questions(1)[0].model_copy(update={"gold": None})
    async with await Runtime.create(_config(tmp_path)) as rt:
        sink = ListSink()
        one = await rt.answer(q, "single", options={"expert": POOL3[0]}, sink=sink)
        assert sink.text == one.final.text and one.final.text and sink.experts == [POOL3[0]]
        assert (await rt.store.get_trace(one.trace_id)).status == "ok"  # type: ignore[union-attr]

        sink = ListSink()
        voted = await rt.answer(q, "all-vote", options={"pool": POOL3}, sink=sink)
        # a vote over complete outputs: the whole answer once, after every expert answered
        assert sink.pieces == [voted.final.text] and len(voted.calls) == 3
        assert sink.experts == [",".join(voted.experts_used)]
        plain = await rt.answer(q, "all-vote", options={"pool": POOL3}, record=False)
        assert plain.final.text == voted.final.text and plain.finish_reason == voted.finish_reason

        # the primary fails before its first token: its fallback answers, streamed
        sink = ListSink()
        fell = await rt.answer(q, "test-fallback", sink=sink)
        assert [c.expert for c in fell.calls] == ["unreachable", POOL3[1]] and fell.calls[0].error_kind == "unavailable"
        assert sink.text == fell.final.text and sink.experts == [POOL3[1]]


async def test_tools_go_only_to_one_expert_that_supports_them(tmp_path: Path, test_routers: None) -> None:
    tools = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}
    q = Query(text="What is the weather in Paris?", passthrough=tools)
    async with await Runtime.create(_config(tmp_path)) as rt:
        with pytest.raises(UnsupportedRequest, match="combines several answers"):
            await rt.answer(q, "all-vote", options={"pool": POOL3})
        with pytest.raises(UnsupportedRequest, match="does not support tools"):
            await rt.answer(q, "single", options={"expert": POOL3[0]})
        with pytest.raises(UnsupportedRequest, match="makes its own expert calls"):
            await rt.answer(q, "test-own-calls")
        assert await rt.store.count_traces() == 0  # refused before any expert was asked
    plan = Plan.single("r", "x", GenerationRequest.chat("hi", passthrough=tools))
    assert "does not support" in (plan.passthrough_problem(rt.registry) or "")
    assert Plan.single("r", POOL3[0], GenerationRequest.chat("hi")).passthrough_problem(rt.registry) is None


def test_a_vote_reports_its_winners_finish_reason() -> None:
    outputs = [ExpertOutput(0, "a", "The answer is (B).", "B", finish_reason="stop"),
               ExpertOutput(1, "b", "The answer is (B), because", "B", finish_reason="length"),
               ExpertOutput(2, "c", "The answer is (C) and so on and", "C", finish_reason="length")]
    final = vote(outputs)
    assert final.answer == "B" and final.detail["representative"] == "a" and final.finish_reason == "stop"


def test_answer_so_far_only_grows_and_matches_the_final_answer() -> None:
    turn = "<think>easy</think> <answer> Paris, of course</answer>"
    seen = [answer_so_far(turn[:k]) for k in range(len(turn) + 1)]
    assert all(b.startswith(a) for a, b in zip(seen, seen[1:], strict=False))
    assert seen[-1] == "Paris, of course"
    assert answer_so_far("<search>Qwen: who?</search><answer>x</answer>") == ""  # a search turn answers nothing


@pytest.mark.vllm
async def test_an_aggregators_answer_streams_token_by_token(tmp_path: Path, test_routers: None) -> None:
    q = mmlu_questions(1)[0].model_copy(update={"gold": None, "max_tokens": 48})
    async with await Runtime.create(_config(tmp_path, [_vllm()])) as rt:
        sink = ListSink()
        result = await rt.answer(q, "test-synthesis", sink=sink)
        agg = [c for c in result.calls if c.role == "aggregator"]
        assert len(agg) == 1 and agg[0].error_kind is None and agg[0].expert == "vllm-smol"
        assert len(sink.pieces) > 5 and sink.text == result.final.text and set(sink.experts) == {"vllm-smol"}


@pytest.mark.vllm
async def test_the_policy_turn_that_answers_streams_its_answer(tmp_path: Path) -> None:
    """Router-R1's path: a policy turn streams only the part inside <answer> (here the turn is
    prefilled with "<answer>", so the real SmolLM2 policy answers in its first turn)."""
    routers = {"router-r1": {"policy": "vllm-smol", "prefill": "<answer>", "max_turns": 1, "max_tokens": 48}}
    async with await Runtime.create(_config(tmp_path, [_vllm()], routers)) as rt:
        sink = ListSink()
        result = await rt.answer(Query(text="Describe the water cycle in two sentences."), "router-r1", options={"pool": ["vllm-smol", POOL3[0]]},
                                 sink=sink)
        think = next(s for s in result.steps if s.kind == "think")
        assert sink.pieces and sink.text == answer_so_far("<answer>" + think.detail["text"])
        assert len(sink.pieces) > 3  # piece by piece as the policy wrote them
        assert result.final.text in ("", sink.text)  # the answer (when the tag closed) is what was streamed


@pytest.mark.vllm
async def test_a_cancelled_stream_leaves_a_cancelled_trace(tmp_path: Path) -> None:
    async with await Runtime.create(_config(tmp_path, [_vllm()])) as rt:
        sink = ListSink()
        trace_id = "11111111-2222-3333-4444-555555555555"
        task = asyncio.create_task(rt.answer(Query(text="Write a very long story about the sea.", max_tokens=1000), "single",
                                             options={"expert": "vllm-smol"}, sink=sink, trace_id=trace_id))
        await asyncio.wait_for(sink.first_sent.wait(), 60)
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled trace is written by a task of its own (the cancelled request cannot await it):
        # poll for it with a deadline rather than reading once.
        trace = await rt.store.get_trace(trace_id)
        for _ in range(100):
            if trace is not None:
                break
            await asyncio.sleep(0.1)
            trace = await rt.store.get_trace(trace_id)
        assert trace is not None and trace.status == "cancelled" and "cancelled" in (trace.error or "")
        (call,) = trace.calls
        assert call.expert == "vllm-smol" and call.error_kind == "cancelled"
        assert trace.answer_text and trace.answer_text == sink.text  # what the client had been sent
        assert trace.plan is not None and trace.plan.experts == ["vllm-smol"]
