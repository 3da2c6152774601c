"""Chat requests and batch jobs run one execution path: when a plan's aggregator model fails,
both use the plan's `fallback` aggregation, and both give the same answer and the same calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import POOL3, RECORDED, closed_port_url, mmlu_questions
from experts import parse_config
from orchestrator.protocol import BatchCreate
from orchestrator.gateway.batch_runner import BatchRunner
from orchestrator.pipeline import Runtime
from routers import registry as router_registry
from routers.base import Router
from routers.types import Aggregation, Assignment, Plan, Query

# The first expert alone outweighs the other two: a weighted vote picks its answer, a plain vote
# picks the answer the other two share. So the fallback kind shows in the final answer.
WEIGHTS = (10.0, 1.0, 1.0)


class DeadAggregatorRouter(Router):
    """Every pool expert answers; the aggregator model is unreachable; the fallback is a weighted vote."""

    name = "dead-aggregator"

    async def route(self, query: Query) -> Plan:
        return Plan(
            router=self.name,
            assignments=[Assignment(expert=e, request=query.expert_request(), weight=w) for e, w in zip(POOL3, WEIGHTS, strict=True)],
            aggregation=Aggregation(kind="llm", expert="dead-aggregator-model", fallback="weighted-vote"),
        )


@pytest.fixture
def dead_aggregator_router(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(router_registry.ROUTER_CLASSES, DeadAggregatorRouter.name, f"{__name__}:DeadAggregatorRouter")
    return DeadAggregatorRouter.name


def _config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]
        + [{"name": "dead-aggregator-model", "backend": "openai", "base_url": closed_port_url(), "model": "m",
            "max_retries": 0, "timeout_s": 5}],
    })


async def _split_question(rt: Runtime) -> Query:
    """A recorded question where the first expert disagrees with the other two, who agree."""
    for q in mmlu_questions(200):
        res = await rt.answer(q.model_copy(update={"gold": None}), "all-vote", options={"pool": POOL3}, record=False)
        a = [o.answer for o in res.outputs]
        if None not in a and a[0] != a[1] == a[2]:
            return q.model_copy(update={"gold": None})
    raise AssertionError("no recorded question splits the pool 1 against 2")


async def test_a_failed_aggregator_falls_back_the_same_way_in_chat_and_batch_jobs(tmp_path: Path, dead_aggregator_router: str) -> None:
    async with await Runtime.create(_config(tmp_path)) as rt:
        q = await _split_question(rt)
        chat = await rt.answer(q, dead_aggregator_router)

        runner = BatchRunner(rt, chunk_size=4)
        body = {"model": dead_aggregator_router, "messages": [{"role": "user", "content": q.text}],
                "metadata": {"question_id": q.question_id, "choices": list(q.choices or ())}}
        rec = await runner.submit(BatchCreate.model_validate({"requests": [{"custom_id": "x", "body": body}]}), owner=None)
        await runner.wait(rec.id)
        [item] = await rt.store.batch_items(rec.id)
        batch_trace = await rt.store.get_trace(item.trace_id)
        await runner.aclose()

    first_expert_answer = chat.outputs[0].answer
    # chat: the aggregator failed, the plan's weighted-vote fallback decided
    assert chat.final.method == "weighted-vote" and chat.final.answer == first_expert_answer
    assert "aggregator_failed" in chat.final.detail
    agg = [c for c in chat.calls if c.role == "aggregator"]
    assert len(agg) == 1 and agg[0].error_kind == "unavailable"

    # the batch job: the same fallback, the same answer, the same calls
    assert item.ok and item.body["choices"][0]["message"]["content"] == chat.final.text
    assert batch_trace is not None and batch_trace.answer == chat.final.answer
    assert [(c.expert, c.role, c.error_kind) for c in batch_trace.calls] == [(c.expert, c.role, c.error_kind) for c in chat.calls]
    step = next(s for s in batch_trace.steps if s.kind == "aggregate")
    assert step.detail["method"] == "weighted-vote" and "aggregator_failed" in step.detail
