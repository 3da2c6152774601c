"""The whole path on real recorded experts: route → dispatch → aggregate → trace in the store."""

from pathlib import Path

import pytest

from conftest import POOL3, RECORDED, mmlu_questions
from experts import parse_config
from orchestrator.pipeline import Runtime
from routers.types import RoutingError


def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "store": f"sqlite+aiosqlite:///{tmp_path / 'o.db'}",
            "experts": [
                {"name": m, "backend": "recorded", "path": str(RECORDED), "model": m, "price_per_mtok": {"input": 1, "output": 2}}
                for m in POOL3
            ],
        }
    )


async def test_all_vote_answer_is_traced(tmp_path: Path) -> None:
    q = mmlu_questions(1, offset=7)[0]
    async with await Runtime.create(config(tmp_path)) as rt:
        result = await rt.answer(q, "all-vote")
        trace = await rt.store.get_trace(result.trace_id)
    assert trace is not None
    assert trace.plan is not None and trace.plan.experts == POOL3
    assert [c.expert for c in trace.calls] == POOL3
    assert [s.kind for s in trace.steps] == ["route", "generate", "generate", "generate", "aggregate"]
    assert trace.answer == result.final.answer
    answers = [c.answer for c in trace.calls]
    assert result.final.answer in answers
    assert trace.cost_usd == pytest.approx(sum(c.cost_usd for c in trace.calls)) and trace.cost_usd > 0


async def test_unknown_router_and_unfitted_router_are_clear_errors(tmp_path: Path) -> None:
    q = mmlu_questions(1)[0]
    async with await Runtime.create(config(tmp_path)) as rt:
        with pytest.raises(RoutingError, match="available routers"):
            await rt.answer(q, "nope")
        with pytest.raises(RoutingError, match="must be fitted first"):
            await rt.answer(q, "best-single")


async def test_failed_expert_leaves_an_error_trace(tmp_path: Path) -> None:
    from routers.types import Query

    async with await Runtime.create(config(tmp_path)) as rt:
        result = await rt.answer(Query(text="not a recorded question"), "single")
        trace = await rt.store.get_trace(result.trace_id)
    assert trace.status == "error"
    assert trace.calls[0].error_kind == "unknown_question"
    assert "no recorded output" in trace.error or "only replay" in trace.error
