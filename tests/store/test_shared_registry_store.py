"""The registry in the store: a version that moves only on a real change, notifications on Postgres,
replicas seeding the same experts at once, and what the store bounds (statement timeout, schema)."""

from __future__ import annotations

import asyncio
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from conftest import postgres_url, _fresh_pg_schema
from store import Store
from store.models import Base
from store.trace_writer import is_transient

SPEC = {"name": "a", "backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"}


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    url = postgres_url()
    if not url:
        pytest.fail("POSTGRES_URL is not set: start Postgres with `bash .ci/postgres.sh start`")
    return _fresh_pg_schema(url, request.node.name)


async def test_the_version_moves_on_every_change_and_only_then(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        v0 = await store.registry_version()
        assert await store.upsert_experts([SPEC])
        assert not await store.upsert_experts([SPEC])  # the same spec again: no change
        assert await store.registry_version() == v0 + 1
        assert await store.upsert_experts([{**SPEC, "model": "m2"}])
        assert await store.upsert_experts([{**SPEC, "model": "m2"}], origin="api")  # registered through the API now
        assert await store.delete_expert("a") and not await store.delete_expert("a")
        version, rows = await store.registry_snapshot()
        assert version == v0 + 4 and rows == [("deleted", {**SPEC, "model": "m2"})]  # a tombstone replicas follow
        assert await store.list_experts() == []
        assert await store.delete_expert("b", spec={**SPEC, "name": "b"})  # never listed: tombstoned all the same
        assert await store.upsert_experts([SPEC])  # a replica starting with it in its config lifts the tombstone
        assert [s["name"] for s in await store.list_experts()] == ["a"]


async def test_replicas_seeding_the_same_experts_at_once_agree(store_url: str) -> None:
    async with await Store.open(store_url) as first:
        await first.registry_version()  # migrated
    stores = [await Store.open(store_url) for _ in range(4)]
    try:
        specs = [{**SPEC, "name": f"e{i}"} for i in range(5)]
        changed = await asyncio.gather(*(s.upsert_experts(specs) for s in stores))
        assert any(changed)
        version, stored = await stores[0].registry_snapshot()
        assert [spec["name"] for _, spec in stored] == [f"e{i}" for i in range(5)]
        assert version == sum(changed)  # one bump per writer that changed something
    finally:
        for s in stores:
            await s.aclose()


@pytest.mark.postgres
async def test_postgres_notifies_listeners_when_a_change_commits(pg_url: str) -> None:
    url = pg_url
    async with await Store.open(url) as writer, await Store.open(url) as reader:
        got: list[tuple[int, float]] = []
        listener = await reader.listen_registry(lambda v: got.append((v, time.monotonic())))
        assert listener is not None and listener.alive
        try:
            t0 = time.monotonic()
            await writer.upsert_experts([SPEC])
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            assert got and got[0][0] == await writer.registry_version()
            assert got[0][1] - t0 < 1.0  # at commit, not at the next poll
            await writer.upsert_experts([SPEC])  # no change: no notification
            await asyncio.sleep(0.2)
            assert len(got) == 1
        finally:
            await listener.aclose()


async def test_sqlite_has_no_notifications(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}") as store:
        assert await store.listen_registry(lambda v: None) is None


@pytest.mark.postgres
async def test_a_statement_that_overruns_the_command_timeout_fails_fast_as_transient(pg_url: str) -> None:
    from sqlalchemy import text

    async with await Store.open(pg_url, command_timeout_s=0.5) as store:
        t0 = time.monotonic()
        with pytest.raises(Exception) as info:
            async with store.engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - t0 < 2.0
        assert is_transient(info.value)
        await store.ping()  # the pool recovers


async def test_the_migrations_create_exactly_the_models(store_url: str) -> None:
    async with await Store.open(store_url) as store, store.engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    assert diff == []
