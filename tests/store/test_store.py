"""Store round trips on SQLite and on the real Postgres server that .ci/run starts."""

import uuid

import pytest

from store import BenchItemRecord, ExpertCallRecord, PlanRecord, Store, StoreUnavailable, TraceRecord, TraceStepRecord


def make_trace(owner: str | None = None) -> TraceRecord:
    return TraceRecord(
        id=str(uuid.uuid4()),
        router="all-vote",
        query_text="Which enzyme unwinds DNA?",
        query_meta={"category": "biology"},
        answer_text="Helicase.",
        answer="B",
        prompt_tokens=30,
        completion_tokens=12,
        cost_usd=0.0012,
        owner=owner,
        plan=PlanRecord(router="all-vote", experts=["a", "b"], aggregation={"kind": "vote"}),
        steps=[TraceStepRecord(seq=0, kind="route"), TraceStepRecord(seq=1, kind="aggregate", detail={"tally": {"B": 2}})],
        calls=[
            ExpertCallRecord(seq=0, expert="a", prompt_tokens=15, completion_tokens=6, answer="B", output="... (B)"),
            ExpertCallRecord(seq=1, expert="b", error_kind="timeout", error_message="no answer in 5 s", attempts=3),
            ExpertCallRecord(seq=2, expert="c", fallback_for="b", answer="B"),
        ],
    )


async def test_trace_round_trip(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        t = make_trace(owner="key1")
        await store.save_trace(t)
        back = await store.get_trace(t.id)
        assert back is not None
        assert back.model_dump(exclude={"created_at"}) == t.model_dump(exclude={"created_at"})
        assert await store.get_trace(t.id, owner="key2") is None  # another key cannot see it
        assert await store.get_trace("missing") is None
        assert await store.count_traces("all-vote") == 1


async def test_trace_is_written_whole_or_not_at_all(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        t = make_trace()
        await store.save_trace(t)
        dup = make_trace()
        dup2 = dup.model_copy(update={"id": t.id})  # same primary key: the second write must fail...
        with pytest.raises(Exception):
            await store.save_traces([dup, dup2])
        # ...and nothing of `dup` (first in the same transaction) may remain.
        assert await store.get_trace(dup.id) is None
        assert await store.count_traces() == 1


async def test_migrations_are_idempotent(store_url: str) -> None:
    s1 = await Store.open(store_url)
    await s1.save_trace(make_trace())
    await s1.aclose()
    async with await Store.open(store_url) as s2:  # second open: already at head, data kept
        assert await s2.count_traces() == 1


async def test_experts_bench_artefacts_keywords(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        await store.upsert_experts([{"name": "a", "backend": "local", "model": "m"}])
        await store.upsert_experts([{"name": "a", "backend": "local", "model": "m2"}])
        assert [e["model"] for e in await store.list_experts()] == ["m2"]
        assert await store.delete_expert("a") and not await store.delete_expert("a")

        assert await store.start_bench_run("run1", {"dataset": "mmlu-pro"}) is False
        assert await store.start_bench_run("run1", {"dataset": "mmlu-pro"}) is True  # resume
        await store.add_bench_items("run1", [BenchItemRecord(router="r", question_id=str(i), correct=i % 2 == 0) for i in range(5)])
        items = await store.bench_items("run1", "r")
        assert [i.question_id for i in items] == ["0", "1", "2", "3", "4"]
        assert sum(i.correct for i in items) == 3
        await store.finish_bench_run("run1", {"accuracy": 0.6})
        assert (await store.get_bench_run("run1"))["status"] == "done"
        assert (await store.latest_bench_results())[0] == {"accuracy": 0.6}

        assert await store.save_artefact("profile", "p", b"v1", {"n": 1}) == 1
        assert await store.save_artefact("profile", "p", b"v2") == 2
        assert (await store.load_artefact("profile", "p")).payload == b"v2"
        assert (await store.load_artefact("profile", "p", version=1)).meta == {"n": 1}
        assert await store.load_artefact("profile", "other") is None

        await store.put_keywords({"h1": ["algebra", "calculus"]}, tagger="emb")
        await store.put_keywords({"h1": ["ignored"], "h2": ["law"]}, tagger="emb")
        assert await store.get_keywords(["h1", "h2", "h3"], "emb") == {"h1": ["algebra", "calculus"], "h2": ["law"]}
        assert await store.get_keywords(["h1"], "llm") == {}


async def test_unreachable_store_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailable, match="cannot open the store"):
        await Store.open("postgresql+asyncpg://u:secret@127.0.0.1:1/db")
