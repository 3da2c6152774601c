"""Batch jobs in the store (SQLite and the real Postgres): idempotent per-item results, scoping."""

import asyncio
import uuid

from store import BatchItemRecord, BatchRecord, Store, TraceRecord


def item(idx: int, ok: bool = True) -> tuple[BatchItemRecord, TraceRecord]:
    trace = TraceRecord(id=str(uuid.uuid4()), router="all-vote", query_text=f"q{idx}", answer_text="a")
    return BatchItemRecord(idx=idx, custom_id=f"c{idx}", ok=ok, status_code=200 if ok else 502,
                           body={"n": idx}, trace_id=trace.id), trace


async def test_batch_items_are_stored_once_and_counted(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        await store.create_batch(BatchRecord(id="batch_a", owner="key_1", total=5, requests=[{"body": {"i": i}} for i in range(5)],
                                             meta={"k": "v"}))
        await store.create_batch(BatchRecord(id="batch_b", owner="key_2", total=1))
        first = [item(0), item(1), item(2, ok=False)]
        assert await store.save_batch_items("batch_a", [i for i, _ in first], [t for _, t in first]) == 3
        # A resumed chunk that overlaps: only index 3 is new; 0 and 1 (and their traces) are skipped.
        again = [item(0), item(1), item(3)]
        assert await store.save_batch_items("batch_a", [i for i, _ in again], [t for _, t in again]) == 1
        assert await store.batch_done_indices("batch_a") == {0, 1, 2, 3}
        assert await store.count_traces() == 4

        b = await store.get_batch("batch_a", owner="key_1", with_requests=True)
        assert b is not None and (b.total, b.completed, b.failed) == (5, 3, 1) and b.meta == {"k": "v"}
        assert b.requests[4] == {"body": {"i": 4}}
        assert await store.get_batch("batch_a", owner="key_2") is None
        assert [x.id for x in await store.list_batches(owner="key_2")] == ["batch_b"]
        items = await store.batch_items("batch_a", after=0, limit=2)
        assert [(i.idx, i.ok, i.status_code, i.body) for i in items] == [(1, True, 200, {"n": 1}), (2, False, 502, {"n": 2})]

        assert not await store.set_batch_status("batch_a", "cancelled", only_from=("cancelling",))
        assert await store.set_batch_status("batch_a", "completed", only_from=("in_progress",))
        done = await store.get_batch("batch_a")
        assert done is not None and done.status == "completed" and done.completed_at is not None
        assert [x.id for x in await store.list_batches(statuses=("in_progress",))] == ["batch_b"]


async def test_concurrent_writers_of_the_same_items_store_each_once(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        await store.create_batch(BatchRecord(id="batch_c", total=20))
        chunks = [[item(i) for i in range(start, start + 10)] for start in (0, 5, 10, 0)]
        added = await asyncio.gather(*(store.save_batch_items("batch_c", [i for i, _ in c], [t for _, t in c]) for c in chunks))
        assert sum(added) == 20
        assert sorted(i.idx for i in await store.batch_items("batch_c")) == list(range(20))
        assert await store.count_traces() == 20
