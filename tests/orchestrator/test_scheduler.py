"""Grouped batch scheduling: order, one load per expert, and the naive baseline's loads."""

from conftest import POOL3, mmlu_questions, recorded_specs
from experts import ExpertRegistry
from orchestrator.residency import ResidencyManager
from orchestrator.scheduler import GroupedScheduler, run_naive
from routers.types import RouterContext
from routers.baselines import AllVoteRouter, RandomRouter



async def test_grouped_runs_each_expert_once_with_capacity_one() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3, max_batch_size=8))
    order: list[tuple[str, int]] = []
    for name in reg.names:
        backend = reg.backend(name)
        original = backend.generate

        async def logged(reqs, _orig=original, _name=name):  # type: ignore[no-untyped-def]
            order.append((_name, len(reqs)))
            return await _orig(reqs)

        backend.generate = logged  # type: ignore[method-assign]
    qs = mmlu_questions(20)
    router = AllVoteRouter(RouterContext(pool=POOL3, registry=reg))
    residency = ResidencyManager(reg, capacity=1)
    run = await GroupedScheduler(reg, residency).run(router, qs)

    assert run.stats.model_loads == 3  # one load per expert
    assert run.stats.expert_calls == 60
    # expert by expert: all of one expert's batches before the next expert starts
    experts_in_order = [e for e, _ in order]
    assert experts_in_order == sorted(experts_in_order, key=experts_in_order.index)
    assert [n for _, n in order] == [8, 8, 4] * 3
    assert residency.resident == [order[-1][0]]  # capacity respected
    assert set(run.stats.busy_s_per_expert) == set(POOL3)

    naive_res = ResidencyManager(reg, capacity=1)
    naive = await run_naive(reg, naive_res, router, qs)
    assert naive.stats.model_loads == 60  # one load per call when experts alternate
    assert [o.final.answer for o in naive.outcomes] == [o.final.answer for o in run.outcomes]


async def test_grouped_results_match_per_query_votes() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    qs = mmlu_questions(30, offset=100)
    router = RandomRouter(RouterContext(pool=POOL3, registry=reg, seed=3), k=2)
    run = await GroupedScheduler(reg).run(router, qs)
    for out in run.outcomes:
        assert [o.expert for o in out.outputs] == out.plan.experts
        assert len(out.calls) == 2
        answers = [o.answer for o in out.outputs]
        if answers[0] is not None:
            assert out.final.answer == answers[0] or answers.count(out.final.answer) >= 1


async def test_fallback_in_grouped_mode() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3[:2]))
    from experts import GenerationRequest
    from routers.types import Assignment, Plan, Query

    q = Query(text="not a benchmark question")
    plan = Plan(router="t", assignments=[Assignment(expert=POOL3[0], request=GenerationRequest.chat("x", question_id="missing"), fallback=POOL3[1])])
    run = await GroupedScheduler(reg).run(None, [q], plans=[plan])  # type: ignore[arg-type]
    calls = run.outcomes[0].calls
    assert [c.expert for c in calls] == POOL3[:2]
    assert calls[0].error_kind == "unknown_question" and calls[1].fallback_for == POOL3[0]
