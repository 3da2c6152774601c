"""Registry changes while a runtime serves: cached routers and dispatcher queues follow them, and two
runtimes on one store follow each other's changes (the shared registry)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from conftest import POOL3, RECORDED, mmlu_questions
from experts import ExpertSpec, GenerationRequest, parse_config
from faulty_upstream import FaultyUpstream
from orchestrator.pipeline import Runtime
from orchestrator.registry_sync import RegistryFollower


def recorded(name: str) -> ExpertSpec:
    return ExpertSpec(name=name, backend="recorded", path=str(RECORDED), model=name)  # type: ignore[arg-type]


def config(tmp_path: Path, names: list[str]):  # type: ignore[no-untyped-def]
    return parse_config({"store": f"sqlite+aiosqlite:///{tmp_path / 'r.db'}",
                         "experts": [recorded(n).model_dump(mode="json") for n in names]})


async def test_deleting_an_expert_rebuilds_the_cached_routers_that_used_it(tmp_path: Path) -> None:
    q = mmlu_questions(1, offset=3)[0]
    async with await Runtime.create(config(tmp_path, POOL3)) as rt:
        before = await rt.answer(q, "all-vote", record=False)
        assert sorted(before.experts_used) == sorted(POOL3)
        pinned = await rt.router("all-vote", {"pool": POOL3[:2]})
        assert rt.drop_expert(POOL3[2])
        after = await rt.answer(q, "all-vote", record=False)  # not "unknown expert": the pool shrank
        assert sorted(after.experts_used) == sorted(POOL3[:2])
        assert await rt.router("all-vote", {"pool": POOL3[:2]}) is pinned  # did not use it: kept
        assert rt.drop_expert(POOL3[1])
        assert await rt.router("all-vote", {"pool": POOL3[:2]}) is not pinned


async def test_replacing_an_expert_sends_its_next_calls_to_the_new_backend(tmp_path: Path) -> None:
    with FaultyUpstream("ok") as up:
        async with await Runtime.create(config(tmp_path, POOL3[:1])) as rt:
            old = rt.registry.backend(POOL3[0])
            first = await rt.dispatcher.submit(POOL3[0], GenerationRequest.chat("hello"))
            assert first.error is not None and first.error.kind == "unknown_question"  # the recorded backend
            spec = ExpertSpec(name=POOL3[0], backend="openai", base_url=up.base_url, model="faulty")  # type: ignore[arg-type]
            assert rt.put_expert(spec) and not rt.put_expert(spec)  # the same spec twice: one change
            second = await rt.dispatcher.submit(POOL3[0], GenerationRequest.chat("hello"))
            assert second.ok and second.text == "The answer is 4." and up.requests == 1
            assert rt.registry.backend(POOL3[0]) is not old


async def test_a_change_made_through_one_runtime_reaches_the_other_within_the_poll(tmp_path: Path) -> None:
    q = mmlu_questions(1, offset=5)[0]
    poll_s = 0.3
    async with await Runtime.create(config(tmp_path, POOL3[:2])) as a, await Runtime.create(config(tmp_path, POOL3[:2])) as b:
        fa, fb = RegistryFollower(a, poll_s=poll_s), RegistryFollower(b, poll_s=poll_s)
        await fa.seed(a.config.experts)
        await fb.seed(b.config.experts)
        changes = []
        fb.on_change = lambda: changes.append(time.monotonic())
        followers = [asyncio.create_task(f.run()) for f in (fa, fb)]
        try:
            assert sorted((await b.answer(q, "all-vote", record=False)).experts_used) == sorted(POOL3[:2])  # cached on b
            t0 = time.monotonic()
            await a.register_expert(recorded(POOL3[2]))
            assert POOL3[2] in a.registry  # at once where it was made
            while POOL3[2] not in b.registry and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.01)
            assert changes and changes[0] - t0 <= poll_s + 0.2  # SQLite: within one poll
            assert sorted((await b.answer(q, "all-vote", record=False)).experts_used) == sorted(POOL3)

            assert await a.unregister_expert(POOL3[0])
            while POOL3[0] in b.registry and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            assert sorted((await b.answer(q, "all-vote", record=False)).experts_used) == sorted(POOL3[1:])
            assert sorted(s["name"] for s in await a.store.list_experts()) == sorted(POOL3[1:])
        finally:
            for t in followers:
                t.cancel()
            await asyncio.gather(*followers, return_exceptions=True)


async def test_concurrent_health_checks_share_one_probe_per_expert() -> None:
    from experts import ExpertRegistry

    with FaultyUpstream("ok") as up:
        reg = ExpertRegistry.from_specs([ExpertSpec(name=f"e{i}", backend="openai", base_url=up.base_url, model="faulty")  # type: ignore[arg-type]
                                         for i in range(2)])
        try:
            checks = await asyncio.gather(*(reg.check(timeout_s=5) for _ in range(20)))
            assert all(h.healthy for c in checks for h in c)
            assert up.health_probes == 2  # 20 concurrent checks of 2 experts: one probe each
            await reg.check(timeout_s=5)  # a later check probes again
            assert up.health_probes == 4
        finally:
            await reg.aclose()


async def test_a_replica_serves_its_config_minus_tombstones_plus_api_experts(tmp_path: Path) -> None:
    async with await Runtime.create(config(tmp_path, POOL3[:2])) as rt:
        # rows an older version (or another replica's config) wrote: listed, not served here
        await rt.store.upsert_experts([recorded(POOL3[2]).model_dump(mode="json")], origin="config")
        follower = RegistryFollower(rt)
        await follower.seed(rt.config.experts)
        await follower.sync()
        assert rt.registry.names == POOL3[:2]
        await rt.store.upsert_experts([recorded(POOL3[2]).model_dump(mode="json")], origin="api")  # registered elsewhere
        await rt.store.delete_expert(POOL3[0])  # deleted elsewhere: a config expert too
        assert await follower.sync()
        assert sorted(rt.registry.names) == sorted(POOL3[1:])
        assert not await follower.sync()  # nothing moved
        await follower.seed(rt.config.experts)  # a restart with it in the config brings it back
        await follower.sync()
        assert sorted(rt.registry.names) == sorted(POOL3)


async def test_api_rows_never_shadow_a_config_expert(tmp_path: Path) -> None:
    """An API row another replica (with another config) wrote never replaces this replica's config
    experts nor takes one of their names (the gateway refuses that for its own config names)."""
    async with await Runtime.create(config(tmp_path, POOL3[:2])) as rt:
        follower = RegistryFollower(rt)
        await follower.seed(rt.config.experts)
        await follower.sync()
        mine = rt.registry.spec(POOL3[1])
        shadow = ExpertSpec(name=POOL3[1], backend="openai", base_url="http://127.0.0.1:9/v1", model="elsewhere")  # type: ignore[arg-type]
        await rt.store.upsert_experts([shadow.model_dump(mode="json")], origin="api")  # the name of a config expert
        alias = ExpertSpec(name="other", aliases=(POOL3[0].upper(),), backend="openai", base_url="http://127.0.0.1:9/v1", model="x")  # type: ignore[arg-type]
        await rt.store.upsert_experts([alias.model_dump(mode="json")], origin="api")  # an alias taking one
        await follower.sync()
        assert rt.registry.names == POOL3[:2]
        assert rt.registry.spec(POOL3[1]) == mine


async def test_a_stored_api_expert_this_replica_does_not_admit_is_not_served(tmp_path: Path) -> None:
    async with await Runtime.create(config(tmp_path, POOL3[:1])) as rt:
        follower = RegistryFollower(rt, admit=lambda spec: None if spec.name == "fine" else "not on the allow-list")
        await follower.seed(rt.config.experts)
        for name in ("fine", "refused"):
            spec = ExpertSpec(name=name, backend="openai", base_url="http://127.0.0.1:9/v1", model=name)  # type: ignore[arg-type]
            await rt.store.upsert_experts([spec.model_dump(mode="json")], origin="api")
        await follower.sync()
        assert sorted(rt.registry.names) == sorted([POOL3[0], "fine"])
