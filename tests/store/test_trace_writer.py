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


# ---------------------------------------------------------------------------- the journal

async def test_a_trace_is_journaled_before_put_returns_and_dropped_once_committed(tmp_path: Path) -> None:
    from store.trace_journal import TraceJournal, read_segment_ids

    journal_dir = tmp_path / "journal"
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'j.db'}") as store:
        writer = TraceWriter(store, journal=TraceJournal.open(journal_dir, "gw-a"), min_interval_s=0.05)
        await writer.start()
        for i in range(20):
            await writer.put(trace(i))
        # on disk before anything was committed (put never awaited the store)
        segments = sorted(journal_dir.glob("gw-a.*.jsonl"))
        assert [t for p in segments for t in read_segment_ids(p)] == [f"t-{i:05d}" for i in range(20)]
        assert await writer.flush(10)
        assert writer.journal is not None and writer.journal.outstanding == 0
        assert all(p.stat().st_size == 0 for p in journal_dir.glob("gw-a.*.jsonl"))  # committed: emptied
        await writer.aclose()
        assert await store.count_traces() == 20
    assert list(journal_dir.iterdir()) == []  # a clean stop leaves nothing behind


_DYING_REPLICA = """
import asyncio, os, signal, sys
from pathlib import Path
from store import Store, TraceRecord
from store.trace_journal import TraceJournal

async def main():
    journal = TraceJournal.open(Path(sys.argv[1]), "gw-dead")
    traces = [TraceRecord(id=f"d-{i:03d}", router="single", query_text=f"q{i}") for i in range(50)]
    for t in traces:
        journal.append(t)
    async with await Store.open(sys.argv[2]) as store:   # the first 10 made it to the store
        await store.save_traces(traces[:10])
    os.write(journal._fd, b'{"id": "d-torn", "router": "sin')  # killed in the middle of a line
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_killed_replicas_journal_is_replayed_exactly_once(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO
    from store.trace_journal import TraceJournal, replay_journals

    journal_dir, url = tmp_path / "journal", f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    proc = subprocess.run([sys.executable, "-c", _DYING_REPLICA, str(journal_dir), url], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr  # SIGKILL: nothing ran after it

    async with await Store.open(url) as store:
        live = TraceJournal.open(journal_dir, "gw-live")  # a running replica's journal is never replayed
        live.append(TraceRecord(id="l-1", router="single", query_text="still running"))
        # two replicas start at once and both replay
        a, b = await asyncio.gather(replay_journals(journal_dir, store, exclude="gw-x"), replay_journals(journal_dir, store, exclude="gw-y"))
        assert a.written + b.written == 40 and a.already_stored + b.already_stored == 10
        assert a.torn_lines + b.torn_lines == 1 and sorted(a.replicas + b.replicas) == ["gw-dead"]
        assert await store.count_traces() == 50 and await store.get_trace("l-1") is None
        again = await replay_journals(journal_dir, store)
        assert again.written == 0 and again.replicas == []
        assert sorted(p.name for p in journal_dir.iterdir()) == ["gw-live.1.jsonl", "gw-live.lock"]
        live.close()  # stopped with a trace still outstanding: its segment stays for the next start
        assert (await replay_journals(journal_dir, store)).written == 1
        assert await store.count_traces() == 51 and list(journal_dir.iterdir()) == []


async def test_a_replayed_trace_the_store_refuses_is_set_aside(tmp_path: Path) -> None:
    from store.trace_journal import TraceJournal, replay_journals

    journal_dir = tmp_path / "journal"
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}") as store:
        async with store.engine.begin() as conn:  # a constraint the store enforces: refused for good
            await conn.exec_driver_sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON requests WHEN NEW.query_text = 'poison' "
                                       "BEGIN SELECT RAISE(ABORT, 'poison refused'); END")
        j = TraceJournal.open(journal_dir, "gw-old")
        j.append(trace(1))
        j.append(trace(2).model_copy(update={"query_text": "poison"}))
        j.append(trace(3))
        j.close()
        report = await replay_journals(journal_dir, store)
        assert (report.written, report.rejected) == (2, 1)
        assert await store.count_traces() == 2
    (spill,) = journal_dir.glob("unsaved-traces-*.jsonl")
    assert [json.loads(line)["id"] for line in spill.read_text().splitlines()] == ["t-00002"]
