"""Exploration (`explore`): a share of queries also calls an expert the plan did not pick; the call
is recorded and costed in the trace, never part of the answer, and counted in /metrics."""

from pathlib import Path

import httpx

from conftest import POOL3, RECORDED, mmlu_questions
from experts.spec import OrchestratorConfig
from gateway_fixtures import running_gateway
from orchestrator.learning import trace_outcomes
from orchestrator.pipeline import Runtime


def config(tmp_path: Path, routers: dict | None = None) -> OrchestratorConfig:
    return OrchestratorConfig.model_validate({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'explore.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m, "price_per_mtok": {"input": 1, "output": 2}}
                    for m in POOL3],
        "routers": routers or {},
    })


async def test_shadow_calls_are_recorded_and_costed_but_never_answer(tmp_path: Path) -> None:
    qs = mmlu_questions(40, offset=5000)
    shadowed = 0
    async with await Runtime.create(config(tmp_path)) as rt:
        for q in qs:
            res = await rt.answer(q, "coe", options={"explore": 0.5})
            trace = await rt.store.get_trace(res.trace_id)
            shadow = [c for c in trace.calls if c.role == "shadow"]
            picked = [c for c in trace.calls if c.role == "expert"]
            assert len(picked) == 1 and len(shadow) <= 1
            assert res.experts_used == [picked[0].expert]  # the caller is told of the answering expert only
            assert trace.answer == picked[0].answer
            if shadow:
                shadowed += 1
                assert shadow[0].expert in POOL3 and shadow[0].expert != picked[0].expert and shadow[0].cost_usd > 0
                assert trace.cost_usd == sum(c.cost_usd for c in trace.calls) > res.cost_usd - shadow[0].cost_usd
                assert trace.plan.detail["explore"] == 0.5
                # what learning from traffic reads: an outcome for the unpicked expert too
                assert shadow[0].expert in trace_outcomes(trace.model_copy(update={"query_meta": {**trace.query_meta, "metadata": {"answer": q.gold}}}), [])
        assert 8 <= shadowed <= 32  # about half, drawn per query
        none = await rt.answer(qs[0], "coe")
        assert [c.role for c in (await rt.store.get_trace(none.trace_id)).calls] == ["expert"]  # explore defaults to 0


def test_exploration_budget_and_spend_are_in_metrics(tmp_path: Path) -> None:
    qs = mmlu_questions(12, offset=5100)
    with running_gateway(config(tmp_path, {"symbolic-moe": {"explore": 0.25, "k": 2}})) as url:
        shadow_calls, shadow_cost = 0, 0.0
        for q in qs:
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
                "model": "symbolic-moe", "messages": [{"role": "user", "content": q.text}],
                "metadata": {"question_id": q.question_id, "choices": list(q.choices)}})
            assert r.status_code == 200, r.text
            trace = httpx.get(f"{url}/v1/traces/{r.json()['trace_id']}").json()
            calls = [c for c in trace["calls"] if c["role"] == "shadow"]
            shadow_calls += len(calls)
            shadow_cost += sum(c["cost_usd"] for c in calls)
            assert not {c["expert"] for c in calls} & set(r.json()["experts"])
            # usage counts the answer's calls only: a shadow call is the operator's spend
            answer = [c for c in trace["calls"] if c["role"] != "shadow"]
            usage = r.json()["usage"]
            assert usage["prompt_tokens"] == sum(c["prompt_tokens"] for c in answer)
            assert usage["completion_tokens"] == sum(c["completion_tokens"] for c in answer)
        metrics = httpx.get(f"{url}/metrics").text
    assert 'orchestrator_exploration_budget_ratio{router="symbolic-moe"} 0.25' in metrics
    assert f'orchestrator_exploration_eligible_queries_total{{router="symbolic-moe"}} {float(len(qs))}' in metrics
    assert shadow_calls > 0  # the draws are seeded per question: these 12 get some (k=2 of 3 leaves one unpicked)
    assert f'orchestrator_exploration_calls_total{{router="symbolic-moe"}} {float(shadow_calls)}' in metrics
    line = next(ln for ln in metrics.splitlines() if ln.startswith('orchestrator_exploration_cost_usd_total{router="symbolic-moe"}'))
    assert abs(float(line.split()[-1]) - shadow_cost) < 1e-9
