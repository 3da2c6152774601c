"""Retry then fallback, and LLM-synthesis aggregation, through the whole pipeline."""

from pathlib import Path

import pytest

from conftest import POOL3, RECORDED, closed_port_url, mmlu_questions
from experts import parse_config
from orchestrator.pipeline import Runtime
from routers.base import Router
from routers.types import Aggregation, Assignment, Plan, Query


class FixedPlanRouter(Router):
    """A test router that returns a given plan (the pipeline under test is real)."""

    name = "fixed-plan"

    def __init__(self, ctx, plan_fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ctx)
        self.plan_fn = plan_fn

    async def route(self, query: Query) -> Plan:
        return self.plan_fn(query)


async def test_dead_expert_is_retried_then_the_fallback_answers(tmp_path: Path) -> None:
    cfg = parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
        "experts": [
            {"name": "dead-vllm", "backend": "openai", "base_url": closed_port_url(), "model": "m", "max_retries": 2, "timeout_s": 5},
            {"name": POOL3[0], "backend": "recorded", "path": str(RECORDED), "model": POOL3[0]},
        ],
    })
    q = mmlu_questions(1, offset=3)[0]
    async with await Runtime.create(cfg) as rt:
        router = FixedPlanRouter(rt.router_context(), lambda query: Plan(
            router="fixed-plan", assignments=[Assignment(expert="dead-vllm", request=query.expert_request(), fallback=POOL3[0])]))
        rt._routers["fixed-plan"] = router
        result = await rt.answer(q, "fixed-plan")
        trace = await rt.store.get_trace(result.trace_id)
    dead, fb = trace.calls
    assert dead.expert == "dead-vllm" and dead.error_kind == "unavailable" and dead.attempts == 3  # 1 try + 2 retries
    assert fb.expert == POOL3[0] and fb.fallback_for == "dead-vllm" and fb.error_kind is None
    assert trace.status == "ok" and trace.answer == fb.answer
    gen = next(s for s in trace.steps if s.kind == "generate")
    assert gen.detail["fallback_used"] is True


@pytest.mark.slow
async def test_llm_synthesis_aggregator_runs_on_a_real_model(tmp_path: Path) -> None:
    cfg = parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]
        + [{"name": "smol", "backend": "local", "model": "smollm2-135m-instruct", "max_new_tokens": 16}],
    })
    q = mmlu_questions(1, offset=11)[0]
    q = q.model_copy(update={"max_tokens": 16})
    async with await Runtime.create(cfg) as rt:
        router = FixedPlanRouter(rt.router_context(POOL3), lambda query: Plan(
            router="fixed-plan", assignments=[Assignment(expert=m, request=query.expert_request()) for m in POOL3],
            aggregation=Aggregation(kind="llm", expert="smol")))
        rt._routers["fixed-plan"] = router
        result = await rt.answer(q, "fixed-plan")
        trace = await rt.store.get_trace(result.trace_id)
    roles = [c.role for c in trace.calls]
    assert roles == ["expert", "expert", "expert", "aggregator"]
    agg = trace.calls[-1]
    assert agg.expert == "smol" and agg.error_kind is None and agg.completion_tokens > 0
    assert result.final.method == "llm" and result.final.text == agg.output
