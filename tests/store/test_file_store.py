"""Uploaded files in the store (SQLite and the real Postgres): content kept whole, listed without
it, scoped to their owner; a batch keeps its input file and the results refused up front."""

from store import BatchItemRecord, BatchRecord, FileRecord, Store


async def test_files_round_trip_and_are_scoped_to_their_owner(store_url: str) -> None:
    content = b'{"custom_id": "a", "body": {}}\n' + bytes(range(256)) * 1000  # binary-safe, 256 kB
    async with await Store.open(store_url) as store:
        made = await store.create_file(FileRecord(id="file-1", owner="key_1", purpose="batch", filename="in.jsonl", content=content))
        assert made.size == len(content) and made.created_at is not None and made.content is None
        await store.create_file(FileRecord(id="file-2", owner="key_2", purpose="batch", filename="other.jsonl", content=b"x\n"))

        got = await store.get_file("file-1", owner="key_1", with_content=True)
        assert got is not None and got.content == content and got.filename == "in.jsonl"
        meta = await store.get_file("file-1")
        assert meta is not None and meta.content is None and meta.size == len(content)
        assert await store.get_file("file-1", owner="key_2") is None
        assert [f.id for f in await store.list_files(owner="key_1")] == ["file-1"]
        assert {f.id for f in await store.list_files()} == {"file-1", "file-2"}

        await store.create_batch(BatchRecord(id="batch_f", owner="key_1", total=2, requests=[{"body": {}}, {"refused": True}],
                                             input_file_id="file-1"),
                                 [BatchItemRecord(idx=1, ok=False, status_code=404, body={"error": {"message": "unknown model"}})])
        b = await store.get_batch("batch_f")
        assert b is not None and b.input_file_id == "file-1" and (b.completed, b.failed) == (0, 1)
        assert await store.batch_done_indices("batch_f") == {1}

        assert not await store.delete_file("file-1", owner="key_2")
        assert await store.delete_file("file-1", owner="key_1")
        assert await store.get_file("file-1") is None


async def test_a_file_batch_is_stored_with_its_refused_results_and_leased_at_once(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        await store.create_file(FileRecord(id="file-l", owner="key_1", purpose="batch", filename="in.jsonl", content=b"{}\n{}\n"))
        await store.create_batch(BatchRecord(id="batch_l", owner="key_1", total=2, requests=[{"body": {}}, {"refused": True}],
                                             input_file_id="file-l"),
                                 [BatchItemRecord(idx=1, ok=False, status_code=400, body={"error": {"message": "bad line"}})],
                                 lease_owner="r1", lease_s=30)
        b = await store.get_batch("batch_l")
        assert b is not None and b.input_file_id == "file-l" and b.lease_owner == "r1" and b.lease_expires_at is not None
        assert (b.completed, b.failed) == (0, 1) and await store.batch_done_indices("batch_l") == {1}
        assert await store.claim_batches("r2", 30, limit=5) == []  # another replica's sweep leaves it alone
        assert await store.renew_batch_lease("batch_l", "r1", 30) == "in_progress"
