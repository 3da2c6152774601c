"""Batch leases in the store (SQLite and Postgres): taken atomically, renewed by their holder only,
taken over once expired, released at shutdown; cancelling respects a live lease."""

from __future__ import annotations

import asyncio

from store import BatchRecord, Store


async def test_concurrent_sweepers_never_take_the_same_job(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        for i in range(12):
            await store.create_batch(BatchRecord(id=f"b{i:02d}", total=1))
        # 6 replicas sweep at once, each on its own connections, each wanting up to 5 jobs
        stores = [await Store.open(store_url) for _ in range(6)]
        try:
            got = await asyncio.gather(*(s.claim_batches(f"r{k}", 30, limit=5) for k, s in enumerate(stores)))
        finally:
            for s in stores:
                await s.aclose()
        taken = [batch_id for claims in got for batch_id, _ in claims]
        assert sorted(taken) == [f"b{i:02d}" for i in range(12)]  # each job exactly once, none left
        owners = {b.id: b.lease_owner for b in await store.list_batches(limit=100)}
        for k, claims in enumerate(got):
            assert all(owners[batch_id] == f"r{k}" for batch_id, _ in claims)
        assert await store.claim_batches("late", 30, limit=10) == []  # every lease is live


async def test_a_lease_is_renewed_by_its_holder_only_and_taken_over_when_it_expires(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        await store.create_batch(BatchRecord(id="job", total=3), lease_owner="r1", lease_s=0.6)
        assert await store.claim_batches("r2", 30, limit=5) == []  # leased at creation
        assert await store.renew_batch_lease("job", "r1", 0.6) == "in_progress"
        assert await store.renew_batch_lease("job", "r2", 0.6) is None
        await asyncio.sleep(0.8)  # r1 stopped renewing (it died)
        assert await store.claim_batches("r2", 30, limit=5) == [("job", "in_progress")]
        assert await store.renew_batch_lease("job", "r1", 0.6) is None  # r1 lost it for good
        rec = await store.get_batch("job")
        assert rec is not None and rec.lease_owner == "r2" and rec.lease_expires_at is not None

        # a clean shutdown releases it: the next sweep takes it at once
        assert await store.release_batch_lease("job", "r2")
        assert await store.claim_batches("r3", 30, limit=5) == [("job", "in_progress")]
        # a finished job holds no lease and is never claimed again
        assert await store.set_batch_status("job", "completed", only_from=("in_progress",))
        rec = await store.get_batch("job")
        assert rec is not None and rec.lease_owner is None and rec.lease_expires_at is None
        assert await store.renew_batch_lease("job", "r3", 30) is None
        assert await store.claim_batches("r4", 0.1, limit=5) == []


async def test_cancel_waits_for_a_live_holder_and_is_immediate_otherwise(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        await store.create_batch(BatchRecord(id="held", total=1), lease_owner="r1", lease_s=30)
        await store.create_batch(BatchRecord(id="free", total=1))
        assert await store.cancel_batch("held") == "cancelling"  # r1 stops at its next chunk
        assert await store.renew_batch_lease("held", "r1", 30) == "cancelling"
        assert await store.cancel_batch("free") == "cancelled"
        assert await store.cancel_batch("free") is None
        # a cancelling job whose holder died is claimed by a sweeper (which then finalises it)
        await store.create_batch(BatchRecord(id="orphan", total=1), lease_owner="dead", lease_s=0.2)
        assert await store.cancel_batch("orphan") == "cancelling"
        await asyncio.sleep(0.4)
        assert ("orphan", "cancelling") in await store.claim_batches("r2", 30, limit=5)
