"""Fits per pool, cold start and fit versions (issue 23): a router loads the fit stored for its own
pool (pinned, else newest), routes on a uniform prior before its first fit, and a running runtime
follows version changes within its `fit_poll_s`."""

import asyncio
from pathlib import Path

from conftest import POOL3, RECORDED, mmlu_questions
from fit_fixtures import recorded_fit_data
from evals.recorded_pool import NAMED_POOLS
from experts.spec import OrchestratorConfig
from orchestrator.pipeline import Runtime
from routers.symbolic_moe import SymbolicMoERouter

POOL16 = NAMED_POOLS["small16"]
POOL2 = POOL3[:2]


def recorded_config(tmp_path: Path, models: list[str], routers: dict | None = None) -> OrchestratorConfig:
    return OrchestratorConfig.model_validate({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'fits.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in models],
        "routers": routers or {},
    })


async def fit_symbolic_moe(rt: Runtime, pool: list[str], n: int, offset: int) -> int:
    router = SymbolicMoERouter(rt.router_context(pool))
    await router.fit(recorded_fit_data(pool, n, offset))
    assert router.fit_version is not None
    return router.fit_version


async def test_a_fit_for_the_16_model_pool_never_reaches_a_2_expert_router(tmp_path: Path) -> None:
    cfg = recorded_config(tmp_path, POOL16, {"symbolic-moe": {"pool": POOL2}})
    q = mmlu_questions(1, offset=3000)[0]
    async with await Runtime.create(cfg) as rt:
        v16 = await fit_symbolic_moe(rt, POOL16, 40, 500)
        # The 2-expert router finds no fit for its pool: it cold-starts on the uniform prior (no 400).
        cold = await rt.answer(q, "symbolic-moe")
        trace = await rt.store.get_trace(cold.trace_id)
        assert trace.plan.detail["prior"] == "uniform" and trace.plan.detail["fit_version"] is None
        assert set(trace.plan.experts) <= set(POOL2) and len(set(trace.plan.experts)) == len(trace.plan.experts) == 2
        assert "prior: uniform" in trace.plan.detail["reasons"][0]
        # Its own fit: loaded by a new runtime (a new replica), while the 16-model fit stays stored and listed.
        v2 = await fit_symbolic_moe(rt, POOL2, 40, 600)
        listed = await rt.store.list_artefacts("symbolic-moe-profile")
        assert [r.version for r in listed] == [v16, v2] and len({r.pool_key for r in listed}) == 2
    async with await Runtime.create(cfg) as rt:
        own = await rt.answer(q, "symbolic-moe")
        assert (await rt.store.get_trace(own.trace_id)).plan.detail["fit_version"] == v2
        whole = await rt.answer(q, "symbolic-moe", options={"pool": POOL16})
        assert (await rt.store.get_trace(whole.trace_id)).plan.detail["fit_version"] == v16


async def test_cold_start_can_be_refused_and_coe_cold_starts_with_one_expert(tmp_path: Path) -> None:
    import pytest

    from routers.types import RoutingError

    cfg = recorded_config(tmp_path, POOL3)
    q = mmlu_questions(1, offset=3001)[0]
    async with await Runtime.create(cfg) as rt:
        with pytest.raises(RoutingError, match="must be fitted first"):
            await rt.answer(q, "symbolic-moe", options={"prior": "none"})
        with pytest.raises(RoutingError, match="prior must be one of"):
            await rt.answer(q, "coe", options={"prior": "flat"})
        with pytest.raises(RoutingError, match="must be fitted first"):
            await rt.answer(q, "best-single")  # no prior: a router that does not learn from traffic still refuses
        res = await rt.answer(q, "coe")
        trace = await rt.store.get_trace(res.trace_id)
        assert trace.plan.detail == {**trace.plan.detail, "prior": "uniform", "fit_version": None}
        assert len(trace.plan.experts) == 1 and trace.status == "ok"
        # The draw is seeded per question: the same question gets the same expert.
        again = await rt.answer(q, "coe")
        assert (await rt.store.get_trace(again.trace_id)).plan.experts == trace.plan.experts


async def test_a_runtime_follows_pins_and_new_versions_within_its_poll(tmp_path: Path) -> None:
    cfg = recorded_config(tmp_path, POOL3)
    qs = mmlu_questions(4, offset=3002)
    async with await Runtime.create(cfg) as rt:
        rt.fit_poll_s = 0.3
        v1 = await fit_symbolic_moe(rt, POOL3, 40, 500)
        v2 = await fit_symbolic_moe(rt, POOL3, 40, 700)

        async def version(i: int) -> int | None:
            res = await rt.answer(qs[i % len(qs)], "symbolic-moe")
            return (await rt.store.get_trace(res.trace_id)).plan.detail["fit_version"]

        assert await version(0) == v2
        in_flight = await rt.router("symbolic-moe")  # what a request that started before the pin holds
        assert (await rt.store.pin_artefact("symbolic-moe-profile", "default", v1)).pinned
        await asyncio.sleep(rt.fit_poll_s + 0.05)
        assert await version(1) == v1  # the first request after the bound routes on the pinned version
        assert (await in_flight.route(qs[2])).detail["fit_version"] == v2  # the old router finishes on its version
        assert [r.version for r in await rt.store.list_artefacts() if r.pinned] == [v1]
        # A new fit does not override a pin; unpinning returns to the newest.
        v3 = await fit_symbolic_moe(rt, POOL3, 40, 900)
        await asyncio.sleep(rt.fit_poll_s + 0.05)
        assert await version(2) == v1
        assert await rt.store.unpin_artefact("symbolic-moe-profile", "default") == 1
        await asyncio.sleep(rt.fit_poll_s + 0.05)
        assert await version(3) == v3
