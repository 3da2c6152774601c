"""The gateway's background trace writer on a real SQLite store: batching, flush, poison rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from store import ExpertCallRecord, PlanRecord, Store, TraceRecord, TraceStepRecord
from store.trace_writer import TraceWriter, is_transient


def trace(i: int, *, id_: str | None = None) -> TraceRecord:
    return TraceRecord(
        id=id_ or f"t-{i:05d}", router="single", query_text=f"question {i}", answer_text="ok", status="ok",
        plan=PlanRecord(router="single", experts=["e"], aggregation={"kind": "single"}),
        steps=[TraceStepRecord(seq=0, kind="route"), TraceStepRecord(seq=1, kind="generate")],
        calls=[ExpertCallRecord(expert="e", role="expert", prompt_tokens=3, completion_tokens=1, output="ok")],
    )


async def test_traces_are_batched_flushed_and_readable_before_commit(tmp_path: Path) -> None:
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}") as store:
        writer = TraceWriter(store, min_interval_s=0.05, spill_dir=tmp_path)
        await writer.start()
        for i in range(300):
            await writer.put(trace(i))
        assert writer.pending("t-00299") is not None  # served from memory until committed
        assert await writer.flush(10)
        assert writer.written == 300 and writer.backlog == 0 and writer.healthy
        assert writer.commits < 30  # shared transactions, not one per trace
        await writer.aclose()
        assert await store.count_traces() == 300
        got = await store.get_trace("t-00123")
        assert got is not None and [s.kind for s in got.steps] == ["route", "generate"] and got.calls[0].output == "ok"
        assert got.plan is not None and got.plan.experts == ["e"]
    assert not list(tmp_path.glob("unsaved-traces-*.jsonl"))


async def test_a_trace_the_store_rejects_is_spilled_and_does_not_block_the_rest(tmp_path: Path) -> None:
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as store:
        await store.save_trace(trace(1))
        writer = TraceWriter(store, spill_dir=tmp_path)
        await writer.start()
        await writer.put(trace(1))  # same id again: the primary key refuses it for good
        for i in range(2, 6):
            await writer.put(trace(i))
        assert await writer.flush(10)
        assert writer.healthy and writer.rejected == 1
        await writer.aclose()
        assert await store.count_traces() == 5
    (spill,) = tmp_path.glob("unsaved-traces-*.jsonl")
    assert [json.loads(line)["id"] for line in spill.read_text().splitlines()] == ["t-00001"]


def test_connection_failures_are_transient_and_bad_rows_are_not() -> None:
    from sqlalchemy import exc as sa

    assert is_transient(ConnectionRefusedError(111, "refused")) and is_transient(asyncio.TimeoutError())
    assert is_transient(sa.OperationalError("INSERT", {}, Exception("database is locked")))
    assert not is_transient(sa.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")))
    assert not is_transient(ValueError("bad"))


def test_server_shutdown_is_transient_and_data_errors_are_not() -> None:
    # Postgres answers "the database system is shutting down" (SQLSTATE 57P03) while it stops:
    # seen as a generic DBAPIError; the trace must be held and retried, never spilled.
    from sqlalchemy import exc as sa

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    assert is_transient(sa.DBAPIError("INSERT", {}, PgError("57P03")))
    assert is_transient(sa.DBAPIError("INSERT", {}, Exception("cannot switch to state 12")))
    assert not is_transient(sa.DBAPIError("INSERT", {}, PgError("23505")))
    assert not is_transient(sa.DBAPIError("INSERT", {}, PgError("22P02")))
