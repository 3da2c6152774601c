"""The store's API: every read and write the rest of the system makes.

    store = await Store.open("sqlite+aiosqlite:///./orchestrator.db")
    await store.save_trace(trace)            # request, plan, steps and calls commit together
    trace = await store.get_trace(trace.id)
    await store.aclose()

Sessions never leave this module; callers get pydantic records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, case, cast, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import selectinload

from store.db import DEFAULT_COMMAND_TIMEOUT_S, StoreUnavailable, open_engine
from store.models import (
    ApiKeyRow,
    ArtefactRow,
    BatchItemRow,
    BatchRow,
    BenchItemRow,
    BenchRunRow,
    ExpertCallRow,
    ExpertRow,
    FeedbackRow,
    FitPinRow,
    IdempotencyKeyRow,
    FileRow,
    KeywordCacheRow,
    RefitStateRow,
    RegistryStateRow,
    RequestRow,
    RoutingPlanRow,
    TraceStepRow,
    utcnow,
)
from store.records import (
    ApiKeyRecord,
    ArtefactRecord,
    BatchItemRecord,
    BatchRecord,
    BenchItemRecord,
    ExpertCallRecord,
    FeedbackRecord,
    IdempotencyRecord,
    FileRecord,
    PlanRecord,
    TraceRecord,
    TraceStepRecord,
    TraceSummaryRecord,
    TrafficGroup,
    TrafficRecord,
    pool_key,
)
from store.urls import mask_url

logger = logging.getLogger("store")

REGISTRY_CHANNEL = "orchestrator_registry"  # Postgres NOTIFY channel: the registry version changed
UNFINISHED = ("in_progress", "cancelling")  # batch statuses a replica may hold a lease on


class RegistryListener:
    """A dedicated Postgres connection LISTENing on `REGISTRY_CHANNEL` (`Store.listen_registry`)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @property
    def alive(self) -> bool:
        return not self._conn.is_closed()

    async def aclose(self) -> None:
        if not self._conn.is_closed():
            try:
                await self._conn.close(timeout=2)
            except Exception:  # noqa: BLE001 - closing a broken connection
                self._conn.terminate()


class Store:
    """Async repository over one SQLAlchemy engine (SQLite or Postgres)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, command_timeout_s: float | None = DEFAULT_COMMAND_TIMEOUT_S) -> "Store":
        return cls(await open_engine(url, command_timeout_s=command_timeout_s))

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def url(self) -> str:
        return mask_url(self.engine.url.render_as_string(hide_password=False))

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _session(self) -> AsyncSession:
        return self._sessions()

    async def ping(self) -> None:
        try:
            async with self._session() as s:
                await s.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as e:
            raise StoreUnavailable(f"store at {self.url} is unavailable: {type(e).__name__}") from e

    # ---------------------------------------------------------------- experts (the shared registry)
    async def upsert_experts(self, specs: Iterable[dict[str, Any]], *, origin: str = "config") -> bool:
        """Add or replace experts by name, from a config file (`origin="config"`) or registered
        through the gateway (`"api"`); True if anything changed (the registry version is then
        bumped, and on Postgres every listening replica notified, in the same transaction)."""
        specs = list(specs)
        for _ in range(3):  # replicas seeding the same names at once: the loser re-reads and compares
            try:
                async with self._session() as s, s.begin():
                    changed = False
                    for spec in specs:
                        row = await s.get(ExpertRow, spec["name"])
                        if row is None:
                            s.add(ExpertRow(name=spec["name"], backend=spec["backend"], model=spec["model"], spec=spec, origin=origin))
                            changed = True
                        elif row.spec != spec or row.origin != origin:
                            row.backend, row.model, row.spec, row.origin = spec["backend"], spec["model"], spec, origin
                            changed = True
                    if changed:
                        await s.flush()
                        await self._bump_registry(s)
                    return changed
            except IntegrityError:
                continue
        raise StoreUnavailable("could not store the experts: concurrent writers kept conflicting")

    async def list_experts(self) -> list[dict[str, Any]]:
        """The specs of the experts not deleted, by name."""
        async with self._session() as s:
            q = select(ExpertRow).where(ExpertRow.origin != "deleted").order_by(ExpertRow.name)
            return [dict(r.spec) for r in (await s.execute(q)).scalars().all()]

    async def registry_snapshot(self) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
        """The registry version and every stored (origin, spec), tombstones included, read together."""
        async with self._session() as s, s.begin():
            version = (await s.execute(select(RegistryStateRow.version).where(RegistryStateRow.id == 1))).scalar_one()
            rows = (await s.execute(select(ExpertRow).order_by(ExpertRow.name))).scalars().all()
            return int(version), [(r.origin, dict(r.spec)) for r in rows]

    async def registry_version(self) -> int:
        async with self._session() as s:
            return int((await s.execute(select(RegistryStateRow.version).where(RegistryStateRow.id == 1))).scalar_one())

    async def delete_expert(self, name: str, *, spec: dict[str, Any] | None = None) -> bool:
        """Mark an expert deleted (a tombstone every replica follows, the config experts of the
        same name included, until a replica starts with it in its config); with `spec`, also an
        expert the store did not list yet. True if it was not deleted already."""
        async with self._session() as s, s.begin():
            row = await s.get(ExpertRow, name)
            if row is None:
                if spec is None:
                    return False
                s.add(ExpertRow(name=name, backend=spec["backend"], model=spec["model"], spec=spec, origin="deleted"))
            elif row.origin == "deleted":
                return False
            else:
                row.origin = "deleted"
            await s.flush()
            await self._bump_registry(s)
            return True

    async def _bump_registry(self, s: AsyncSession) -> int:
        await s.execute(update(RegistryStateRow).where(RegistryStateRow.id == 1).values(version=RegistryStateRow.version + 1))
        version = int((await s.execute(select(RegistryStateRow.version).where(RegistryStateRow.id == 1))).scalar_one())
        if self.is_postgres:  # delivered to listeners when this transaction commits
            await s.execute(text("SELECT pg_notify(:channel, :version)"), {"channel": REGISTRY_CHANNEL, "version": str(version)})
        return version

    async def listen_registry(self, on_change: Callable[[int], None]) -> RegistryListener | None:
        """Postgres: call `on_change(version)` whenever a registry change commits (LISTEN on a
        connection of its own). None on SQLite, which has no notifications: poll `registry_version`."""
        if not self.is_postgres:
            return None
        import asyncpg

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn, timeout=10)

        def notified(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            try:
                on_change(int(payload))
            except ValueError:
                logger.warning("ignoring a registry notification with payload %r", payload)

        await conn.add_listener(REGISTRY_CHANNEL, notified)
        return RegistryListener(conn)

    # ---------------------------------------------------------------- traces
    @staticmethod
    def _trace_rows(trace: TraceRecord) -> RequestRow:
        row = RequestRow(
            **trace.model_dump(exclude={"plan", "steps", "calls", "created_at"}),
        )
        if trace.created_at is not None:
            row.created_at = trace.created_at
        if trace.plan is not None:
            row.plan = RoutingPlanRow(**trace.plan.model_dump())
        row.steps = [TraceStepRow(**st.model_dump()) for st in trace.steps]
        row.calls = [ExpertCallRow(**c.model_dump()) for c in trace.calls]
        return row

    async def save_trace(self, trace: TraceRecord) -> None:
        """Write a request with its plan, steps and calls atomically."""
        await self.save_traces([trace])

    async def save_traces(self, traces: Sequence[TraceRecord]) -> None:
        """Write many traces in one transaction, one multi-row INSERT per table.

        Core inserts rather than ORM objects: the unit of work costs ~2 ms of CPU per trace,
        which the gateway's trace writer would otherwise spend on the event loop."""
        if not traces:
            return
        async with self._session() as s, s.begin():
            await self._insert_traces(s, traces)

    async def save_traces_absent(self, traces: Sequence[TraceRecord]) -> int:
        """Write the traces whose ids are not stored yet, in one transaction; returns how many
        were new. Replaying a journal with it stores each trace once, however often it replays."""
        if not traces:
            return 0
        for attempt in range(3):
            try:
                async with self._session() as s, s.begin():
                    have: set[str] = set()
                    ids = [t.id for t in traces]
                    for i in range(0, len(ids), 500):
                        q = select(RequestRow.id).where(RequestRow.id.in_(ids[i : i + 500]))
                        have.update((await s.execute(q)).scalars())
                    new = [t for t in traces if t.id not in have]
                    await self._insert_traces(s, new)
                return len(new)
            except IntegrityError:
                if attempt == 2:  # not a concurrent writer of the same ids: a row the store refuses
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _insert_traces(s: AsyncSession, traces: Sequence[TraceRecord]) -> None:
        if not traces:
            return
        now = utcnow()
        requests, plans, steps, calls = [], [], [], []
        for t in traces:
            requests.append({**t.model_dump(exclude={"plan", "steps", "calls", "created_at"}), "created_at": t.created_at or now})
            if t.plan is not None:
                plans.append({"request_id": t.id, **t.plan.model_dump()})
            steps += [{"request_id": t.id, **st.model_dump()} for st in t.steps]
            calls += [{"request_id": t.id, **c.model_dump()} for c in t.calls]
        for table, rows in ((RequestRow, requests), (RoutingPlanRow, plans), (TraceStepRow, steps), (ExpertCallRow, calls)):
            if rows:
                await s.execute(insert(table.__table__), rows)  # type: ignore[attr-defined]

    async def get_trace(self, trace_id: str, *, owner: str | None = None) -> TraceRecord | None:
        """Return a trace; with `owner`, only if that key owns it."""
        async with self._session() as s:
            q = (
                select(RequestRow)
                .where(RequestRow.id == trace_id)
                .options(selectinload(RequestRow.plan), selectinload(RequestRow.steps), selectinload(RequestRow.calls))
            )
            row = (await s.execute(q)).scalar_one_or_none()
            if row is None or (owner is not None and row.owner != owner):
                return None
            return TraceRecord(
                id=row.id,
                created_at=row.created_at,
                router=row.router,
                query_text=row.query_text,
                query_meta=row.query_meta or {},
                answer_text=row.answer_text,
                answer=row.answer,
                status=row.status,
                error=row.error,
                latency_s=row.latency_s,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                cost_usd=row.cost_usd,
                owner=row.owner,
                plan=PlanRecord(router=row.plan.router, experts=row.plan.experts, aggregation=row.plan.aggregation, detail=row.plan.detail)
                if row.plan
                else None,
                steps=[TraceStepRecord(seq=st.seq, kind=st.kind, detail=st.detail, duration_s=st.duration_s) for st in row.steps],
                calls=[
                    ExpertCallRecord.model_validate({c: getattr(cr, c) for c in ExpertCallRecord.model_fields})
                    for cr in row.calls
                ],
            )

    async def count_traces(self, router: str | None = None, *, status: str | None = None) -> int:
        async with self._session() as s:
            q = select(func.count()).select_from(RequestRow)
            if router is not None:
                q = q.where(RequestRow.router == router)
            if status is not None:
                q = q.where(RequestRow.status == status)
            return int((await s.execute(q)).scalar_one())

    async def expert_latency_stats(self) -> dict[str, dict[str, float]]:
        """Mean latency and call count per expert over successful calls (Router-R1 descriptors)."""
        async with self._session() as s:
            q = (
                select(ExpertCallRow.expert, func.avg(ExpertCallRow.latency_s), func.count())
                .where(ExpertCallRow.error_kind.is_(None))
                .group_by(ExpertCallRow.expert)
            )
            return {e: {"mean_latency_s": float(m or 0.0), "calls": int(n)} for e, m, n in (await s.execute(q)).all()}

    async def list_traces(self, *, owner: str | None = None, router: str | None = None, expert: str | None = None,
                          status: str | None = None, since: datetime | None = None, until: datetime | None = None,
                          limit: int = 100) -> list[TraceSummaryRecord]:
        """The newest traces matching every filter given (`owner`: only that key's), each with the
        experts it called."""
        async with self._session() as s:
            q = select(RequestRow.id, RequestRow.created_at, RequestRow.router, RequestRow.status, RequestRow.latency_s,
                       RequestRow.cost_usd, RequestRow.owner, func.substr(RequestRow.query_text, 1, 200))
            if owner is not None:
                q = q.where(RequestRow.owner == owner)
            if router:
                q = q.where(RequestRow.router == router)
            if status:
                q = q.where(RequestRow.status == status)
            if since is not None:
                q = q.where(RequestRow.created_at >= since)
            if until is not None:
                q = q.where(RequestRow.created_at <= until)
            if expert:
                q = q.where(RequestRow.id.in_(select(ExpertCallRow.request_id).where(ExpertCallRow.expert == expert)))
            rows = (await s.execute(q.order_by(RequestRow.created_at.desc()).limit(limit))).all()
            experts: dict[str, list[str]] = {r[0]: [] for r in rows}
            if rows:
                calls = select(ExpertCallRow.request_id, ExpertCallRow.expert).where(ExpertCallRow.request_id.in_(list(experts)))
                for rid, name in (await s.execute(calls.order_by(ExpertCallRow.seq))).all():
                    if name not in experts[rid]:
                        experts[rid].append(name)
            return [TraceSummaryRecord(id=i, created_at=at, router=rt, status=st, latency_s=lat, cost_usd=cost, owner=own,
                                       query_text=text_, experts=experts[i]) for i, at, rt, st, lat, cost, own, text_ in rows]

    async def traffic_since(self, since: datetime, *, latency_sample: int = 5000) -> TrafficRecord:
        """What was answered since `since`, per router and per expert: counts, errors, cost and
        tokens summed by the database; latencies of the newest `latency_sample` requests (and
        calls), so a busy hour costs the caller a bounded read."""
        async with self._session() as s:
            failed = case((RequestRow.status != "ok", 1), else_=0)
            reqs = select(RequestRow.router, func.count(), func.sum(failed), func.sum(RequestRow.cost_usd), func.sum(
                RequestRow.prompt_tokens + RequestRow.completion_tokens)).where(RequestRow.created_at >= since).group_by(RequestRow.router)
            in_window = ExpertCallRow.request_id.in_(select(RequestRow.id).where(RequestRow.created_at >= since))
            call_failed = case((ExpertCallRow.error_kind.is_not(None), 1), else_=0)
            calls = select(ExpertCallRow.expert, func.count(), func.sum(call_failed), func.sum(ExpertCallRow.cost_usd), func.sum(
                ExpertCallRow.prompt_tokens + ExpertCallRow.completion_tokens)).where(in_window).group_by(ExpertCallRow.expert)
            routers = {r: TrafficGroup(name=r, requests=n, errors=int(e or 0), cost_usd=float(c or 0), tokens=int(t or 0))
                       for r, n, e, c, t in (await s.execute(reqs)).all()}
            experts = {x: TrafficGroup(name=x, requests=n, errors=int(e or 0), cost_usd=float(c or 0), tokens=int(t or 0))
                       for x, n, e, c, t in (await s.execute(calls)).all()}
            newest = select(RequestRow.id, RequestRow.router, RequestRow.latency_s).where(RequestRow.created_at >= since) \
                .order_by(RequestRow.created_at.desc()).limit(latency_sample)
            for _, router, latency in (await s.execute(newest)).all():
                routers[router].latencies_s.append(float(latency or 0))
            q = select(ExpertCallRow.expert, ExpertCallRow.latency_s).where(
                ExpertCallRow.request_id.in_(select(newest.subquery().c.id)))
            for expert, latency in (await s.execute(q)).all():
                experts[expert].latencies_s.append(float(latency or 0))
            return TrafficRecord(routers=sorted(routers.values(), key=lambda g: g.name),
                                 experts=sorted(experts.values(), key=lambda g: g.name))

    # ---------------------------------------------------------------- feedback
    async def add_feedback(self, feedback: FeedbackRecord) -> FeedbackRecord:
        async with self._session() as s, s.begin():
            row = FeedbackRow(**feedback.model_dump(exclude={"id", "created_at"}))
            s.add(row)
            await s.flush()
            return FeedbackRecord(id=row.id, trace_id=row.trace_id, owner=row.owner, score=row.score, comment=row.comment,
                                  created_at=row.created_at, call_seq=row.call_seq)

    async def feedback_for(self, trace_id: str) -> list[FeedbackRecord]:
        async with self._session() as s:
            rows = (await s.execute(select(FeedbackRow).where(FeedbackRow.trace_id == trace_id).order_by(FeedbackRow.id))).scalars().all()
            return [FeedbackRecord(id=r.id, trace_id=r.trace_id, owner=r.owner, score=r.score, comment=r.comment, created_at=r.created_at,
                                   call_seq=r.call_seq) for r in rows]

    def _labelled(self) -> ColumnElement[bool]:
        """Requests that carry a checkable answer (`metadata.answer`): scored automatically."""
        return cast(RequestRow.query_meta, Text).like('%"answer"%')

    async def count_outcomes(self) -> int:
        """How many outcomes traffic has given so far: feedback rows (per trace or per call) and
        requests with a checkable answer. The refit job compares it with its last refit's."""
        async with self._session() as s:
            fb = (await s.execute(select(func.count()).select_from(FeedbackRow))).scalar_one()
            auto = (await s.execute(select(func.count()).select_from(RequestRow).where(self._labelled()))).scalar_one()
            return int(fb) + int(auto)

    async def learning_traces(self, *, since: datetime | None = None, routers: Sequence[str] | None = None,
                              limit: int = 50_000) -> list[tuple[TraceRecord, list[FeedbackRecord]]]:
        """The newest `limit` answered traces that have feedback or a checkable answer, oldest
        first, each with its calls and its feedback: what a fit from traffic learns from."""
        async with self._session() as s:
            rated = select(FeedbackRow.trace_id)
            q = select(RequestRow).where(RequestRow.status == "ok", or_(RequestRow.id.in_(rated), self._labelled()))
            if since is not None:
                q = q.where(RequestRow.created_at >= since)
            if routers:
                q = q.where(RequestRow.router.in_(list(routers)))
            q = q.options(selectinload(RequestRow.calls)).order_by(RequestRow.created_at.desc()).limit(limit)
            rows = list(reversed((await s.execute(q)).scalars().all()))
            ids = [r.id for r in rows]
            feedback: dict[str, list[FeedbackRecord]] = {i: [] for i in ids}
            for i in range(0, len(ids), 500):
                fq = select(FeedbackRow).where(FeedbackRow.trace_id.in_(ids[i : i + 500])).order_by(FeedbackRow.id)
                for f in (await s.execute(fq)).scalars():
                    feedback[f.trace_id].append(FeedbackRecord(id=f.id, trace_id=f.trace_id, owner=f.owner, score=f.score,
                                                               comment=f.comment, created_at=f.created_at, call_seq=f.call_seq))
            out = []
            for r in rows:
                calls = [ExpertCallRecord.model_validate({c: getattr(cr, c) for c in ExpertCallRecord.model_fields}) for cr in r.calls]
                out.append((TraceRecord(id=r.id, created_at=r.created_at, router=r.router, query_text=r.query_text,
                                        query_meta=r.query_meta or {}, answer=r.answer, status=r.status, calls=calls), feedback[r.id]))
            return out

    # ---------------------------------------------------------------- refit leases
    async def claim_refit(self, kind: str, name: str, pool: Sequence[str], owner: str, lease_s: float, *,
                          outcomes: int, threshold: int) -> int | None:
        """Lease the refit of `kind`/`name` for `pool` to `owner` if at least `threshold` outcomes
        arrived since the last refit (`outcomes` is the current count) and nobody holds it.
        Returns the outcome count the last refit used (the claim's watermark), or None.

        Atomic: one UPDATE whose WHERE re-checks the free lease and the watermark, so of several
        replicas seeing the same trigger exactly one gets it; `finish_refit` moves the watermark."""
        key = pool_key(pool)
        assert key is not None
        now, expiry = self._lease_clock(lease_s)
        try:
            async with self._session() as s, s.begin():
                if await s.get(RefitStateRow, (kind, name, key)) is None:
                    s.add(RefitStateRow(kind=kind, name=name, pool_key=key, outcomes_used=0, refits=0))
        except IntegrityError:
            pass  # another replica created it first
        async with self._session() as s, s.begin():
            row = RefitStateRow
            where = and_(row.kind == kind, row.name == name, row.pool_key == key,
                         or_(row.lease_expires_at.is_(None), row.lease_expires_at < now))
            used = (await s.execute(select(row.outcomes_used).where(where))).scalar_one_or_none()
            if used is None or outcomes - used < threshold:
                return None
            res = await s.execute(update(row).where(where, row.outcomes_used == used).values(lease_owner=owner, lease_expires_at=expiry))
            return int(used) if res.rowcount == 1 else None

    async def finish_refit(self, kind: str, name: str, pool: Sequence[str], owner: str, *, outcomes: int | None) -> bool:
        """Release `owner`'s refit lease; with `outcomes` (a refit stored), move the watermark
        there. False when `owner` no longer held the lease."""
        values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
        if outcomes is not None:
            values.update(outcomes_used=outcomes, refits=RefitStateRow.refits + 1)
        async with self._session() as s, s.begin():
            res = await s.execute(update(RefitStateRow).where(
                RefitStateRow.kind == kind, RefitStateRow.name == name, RefitStateRow.pool_key == pool_key(pool),
                RefitStateRow.lease_owner == owner).values(**values))
            return res.rowcount == 1

    async def refit_state(self, kind: str, name: str, pool: Sequence[str]) -> dict[str, Any] | None:
        async with self._session() as s:
            row = await s.get(RefitStateRow, (kind, name, pool_key(pool)))
            return None if row is None else {"outcomes_used": row.outcomes_used, "refits": row.refits, "lease_owner": row.lease_owner}

    # ---------------------------------------------------------------- benchmark runs
    async def start_bench_run(self, run_id: str, config: dict[str, Any]) -> bool:
        """Create the run, or find it to resume. Returns True if it already existed."""
        async with self._session() as s, s.begin():
            row = await s.get(BenchRunRow, run_id)
            if row is not None:
                row.status = "running"
                return True
            s.add(BenchRunRow(id=run_id, config=config, status="running"))
            return False

    async def bench_items(self, run_id: str, router: str | None = None) -> list[BenchItemRecord]:
        async with self._session() as s:
            q = select(BenchItemRow).where(BenchItemRow.run_id == run_id)
            if router is not None:
                q = q.where(BenchItemRow.router == router)
            rows = (await s.execute(q.order_by(BenchItemRow.id))).scalars().all()
            return [
                BenchItemRecord(router=r.router, question_id=r.question_id, category=r.category, pred=r.pred, correct=r.correct, detail=r.detail)
                for r in rows
            ]

    async def add_bench_items(self, run_id: str, items: Sequence[BenchItemRecord]) -> None:
        """Insert a chunk of outcomes in one transaction (a killed run loses at most a chunk)."""
        if not items:
            return
        async with self._session() as s, s.begin():
            s.add_all([BenchItemRow(run_id=run_id, **it.model_dump()) for it in items])

    async def finish_bench_run(self, run_id: str, results: dict[str, Any]) -> None:
        async with self._session() as s, s.begin():
            row = await s.get(BenchRunRow, run_id)
            if row is None:
                raise KeyError(run_id)
            row.status, row.results = "done", results

    async def get_bench_run(self, run_id: str) -> dict[str, Any] | None:
        async with self._session() as s:
            row = await s.get(BenchRunRow, run_id)
            if row is None:
                return None
            return {"id": row.id, "status": row.status, "config": row.config, "results": row.results}

    async def latest_bench_results(self, limit: int = 20) -> list[dict[str, Any]]:
        async with self._session() as s:
            q = select(BenchRunRow).where(BenchRunRow.status == "done").order_by(BenchRunRow.updated_at.desc()).limit(limit)
            return [dict(r.results or {}) for r in (await s.execute(q)).scalars().all()]

    async def list_bench_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest runs: id, status, created_at, config and (once done) results."""
        async with self._session() as s:
            q = select(BenchRunRow).order_by(BenchRunRow.created_at.desc()).limit(limit)
            return [{"id": r.id, "status": r.status, "created_at": r.created_at, "config": r.config, "results": r.results}
                    for r in (await s.execute(q)).scalars().all()]

    # ---------------------------------------------------------------- artefacts
    async def save_artefact(self, kind: str, name: str, payload: bytes, meta: dict[str, Any] | None = None) -> int:
        """Store a new version of an artefact; returns its version number (1, 2, ...). Versions
        count per (kind, name) across pools; `meta["pool"]` keys the version to its pool."""
        meta = meta or {}
        key = pool_key(meta["pool"]) if isinstance(meta.get("pool"), list) else None
        for _ in range(5):  # concurrent writers may race for the same version number
            try:
                async with self._session() as s, s.begin():
                    q = select(func.max(ArtefactRow.version)).where(ArtefactRow.kind == kind, ArtefactRow.name == name)
                    version = int((await s.execute(q)).scalar_one() or 0) + 1
                    s.add(ArtefactRow(kind=kind, name=name, version=version, meta=meta, payload=payload, pool_key=key))
                return version
            except IntegrityError:
                continue
        raise StoreUnavailable(f"could not allocate a version for artefact {kind}/{name}")

    @staticmethod
    def _artefact_record(row: ArtefactRow, *, pinned: bool = False) -> ArtefactRecord:
        return ArtefactRecord(kind=row.kind, name=row.name, version=row.version, created_at=row.created_at, meta=row.meta,
                              payload=row.payload, pool_key=row.pool_key, pinned=pinned)

    async def load_artefact(self, kind: str, name: str, version: int | None = None, *,
                            pool: Sequence[str] | None = None) -> ArtefactRecord | None:
        """The given version, or the newest one. With `pool`: only versions fitted for that pool,
        and with no `version` the one pinned for it (`pin_artefact`) before the newest."""
        async with self._session() as s:
            q = select(ArtefactRow).where(ArtefactRow.kind == kind, ArtefactRow.name == name)
            pinned = False
            if pool is not None:
                key = pool_key(pool)
                q = q.where(ArtefactRow.pool_key == key)
                if version is None:
                    version = (await s.execute(select(FitPinRow.version).where(
                        FitPinRow.kind == kind, FitPinRow.name == name, FitPinRow.pool_key == key))).scalar_one_or_none()
                    pinned = version is not None
            q = q.where(ArtefactRow.version == version) if version is not None else q.order_by(ArtefactRow.version.desc()).limit(1)
            row = (await s.execute(q)).scalars().first()
            return None if row is None else self._artefact_record(row, pinned=pinned)

    async def current_artefact_version(self, kind: str, name: str, pool: Sequence[str]) -> int | None:
        """The version a router of `pool` routes with: the pinned one, else the newest (None: no
        fit for this pool yet). One indexed read: replicas poll it between requests."""
        key = pool_key(pool)
        async with self._session() as s:
            pin = select(FitPinRow.version).where(FitPinRow.kind == kind, FitPinRow.name == name, FitPinRow.pool_key == key)
            newest = select(func.max(ArtefactRow.version)).where(ArtefactRow.kind == kind, ArtefactRow.name == name,
                                                                 ArtefactRow.pool_key == key)
            row = (await s.execute(select(pin.scalar_subquery(), newest.scalar_subquery()))).one()
            return row[0] if row[0] is not None else row[1]

    async def list_artefacts(self, kind: str | None = None) -> list[ArtefactRecord]:
        """Every stored version (no payloads), oldest first; `pinned` marks the pinned ones."""
        async with self._session() as s:
            q = select(ArtefactRow.kind, ArtefactRow.name, ArtefactRow.version, ArtefactRow.created_at, ArtefactRow.meta,
                       ArtefactRow.pool_key)
            pins_q = select(FitPinRow.kind, FitPinRow.name, FitPinRow.pool_key, FitPinRow.version)
            if kind is not None:
                q = q.where(ArtefactRow.kind == kind)
                pins_q = pins_q.where(FitPinRow.kind == kind)
            pins = {tuple(p) for p in (await s.execute(pins_q)).all()}
            rows = (await s.execute(q.order_by(ArtefactRow.kind, ArtefactRow.name, ArtefactRow.version))).all()
            return [ArtefactRecord(kind=k, name=n, version=v, created_at=c, meta=m, pool_key=pk, pinned=(k, n, pk, v) in pins)
                    for k, n, v, c, m, pk in rows]

    async def pin_artefact(self, kind: str, name: str, version: int) -> ArtefactRecord | None:
        """Pin `version` for the pool it was fitted for: every router of that pool routes with it
        (a rollback) until unpinned. None if there is no such version, or it has no pool."""
        async with self._session() as s, s.begin():
            row = (await s.execute(select(ArtefactRow).where(ArtefactRow.kind == kind, ArtefactRow.name == name,
                                                             ArtefactRow.version == version))).scalars().first()
            if row is None or row.pool_key is None:
                return None
            pin = await s.get(FitPinRow, (kind, name, row.pool_key))
            if pin is None:
                s.add(FitPinRow(kind=kind, name=name, pool_key=row.pool_key, version=version))
            else:
                pin.version = version
            return self._artefact_record(row, pinned=True)

    async def unpin_artefact(self, kind: str, name: str, pool: Sequence[str] | None = None) -> int:
        """Drop the pin of `pool` (every pool's when None): the newest version is used again.
        Returns how many pins were dropped."""
        async with self._session() as s, s.begin():
            q = delete(FitPinRow).where(FitPinRow.kind == kind, FitPinRow.name == name)
            if pool is not None:
                q = q.where(FitPinRow.pool_key == pool_key(pool))
            return int((await s.execute(q)).rowcount or 0)

    # ---------------------------------------------------------------- keyword cache
    async def get_keywords(self, hashes: Sequence[str], tagger: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        async with self._session() as s:
            for i in range(0, len(hashes), 500):
                chunk = list(hashes[i : i + 500])
                q = select(KeywordCacheRow).where(KeywordCacheRow.tagger == tagger, KeywordCacheRow.question_hash.in_(chunk))
                for r in (await s.execute(q)).scalars():
                    out[r.question_hash] = list(r.keywords)
        return out

    async def put_keywords(self, items: dict[str, list[str]], tagger: str) -> None:
        if not items:
            return
        async with self._session() as s, s.begin():
            existing = set()
            keys = list(items)
            for i in range(0, len(keys), 500):
                q = select(KeywordCacheRow.question_hash).where(
                    KeywordCacheRow.tagger == tagger, KeywordCacheRow.question_hash.in_(keys[i : i + 500])
                )
                existing.update((await s.execute(q)).scalars())
            s.add_all([KeywordCacheRow(question_hash=h, tagger=tagger, keywords=kw) for h, kw in items.items() if h not in existing])

    # ---------------------------------------------------------------- API keys
    async def create_api_key(self, key_id: str, name: str, key_hash: str, role: str = "user") -> None:
        async with self._session() as s, s.begin():
            s.add(ApiKeyRow(id=key_id, name=name, key_hash=key_hash, role=role))

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The active key with this hash."""
        async with self._session() as s:
            q = select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked.is_(False))
            row = (await s.execute(q)).scalar_one_or_none()
            return self._key_record(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        async with self._session() as s:
            rows = (await s.execute(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))).scalars().all()
            return [self._key_record(r) for r in rows]

    @staticmethod
    def _key_record(row: ApiKeyRow) -> ApiKeyRecord:
        return ApiKeyRecord(id=row.id, name=row.name, role=row.role, created_at=row.created_at, revoked=row.revoked)

    async def count_api_keys(self, *, include_revoked: bool = False) -> int:
        """Active keys; with `include_revoked`, every key ever created (the gateway stays closed
        once a key has existed: revoking the last one must not open it)."""
        async with self._session() as s:
            q = select(func.count()).select_from(ApiKeyRow)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked.is_(False))
            return int((await s.execute(q)).scalar_one())

    async def api_key_revoked(self, key_id: str) -> bool | None:
        """Whether the key is revoked; None when there is no such key."""
        async with self._session() as s:
            row = await s.get(ApiKeyRow, key_id)
            return None if row is None else bool(row.revoked)

    async def revoke_api_key(self, key_id: str) -> bool:
        async with self._session() as s, s.begin():
            row = await s.get(ApiKeyRow, key_id)
            if row is None:
                return False
            row.revoked = True
            return True

    # ---------------------------------------------------------------- idempotency keys
    async def claim_idempotency_key(self, owner: str, key: str, request_hash: str, *, stale_after_s: float = 60.0) -> IdempotencyRecord:
        """Claim `key` for `owner`, or find who holds it.

        The row is inserted before the work it guards, so of two concurrent submits with one key
        exactly one gets `claimed=True`; the other sees the holder's row (its `batch_id` is None
        while the holder is still submitting). A claim left without a batch for `stale_after_s`
        (its process died mid-submit) is taken over."""
        for _ in range(3):
            try:
                async with self._session() as s, s.begin():
                    s.add(IdempotencyKeyRow(owner=owner, key=key, request_hash=request_hash))
                return IdempotencyRecord(owner=owner, key=key, request_hash=request_hash, claimed=True)
            except IntegrityError:
                pass
            async with self._session() as s, s.begin():
                row = await s.get(IdempotencyKeyRow, (owner, key))
                if row is None:
                    continue  # released meanwhile: claim it again
                created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=timezone.utc)
                cutoff = utcnow() - timedelta(seconds=stale_after_s)
                if row.batch_id is None and created < cutoff:
                    took = await s.execute(  # conditional: of two takers, one wins
                        update(IdempotencyKeyRow)
                        .where(IdempotencyKeyRow.owner == owner, IdempotencyKeyRow.key == key,
                               IdempotencyKeyRow.batch_id.is_(None), IdempotencyKeyRow.created_at < cutoff)
                        .values(request_hash=request_hash, created_at=utcnow())
                        .execution_options(synchronize_session=False)
                    )
                    if (took.rowcount or 0) == 1:
                        return IdempotencyRecord(owner=owner, key=key, request_hash=request_hash, claimed=True)
                    continue
                return IdempotencyRecord(owner=owner, key=key, request_hash=row.request_hash, batch_id=row.batch_id, claimed=False)
        raise StoreUnavailable(f"could not claim idempotency key {key!r}")

    async def complete_idempotency_key(self, owner: str, key: str, batch_id: str) -> None:
        """Record the batch a claimed key created."""
        async with self._session() as s, s.begin():
            await s.execute(update(IdempotencyKeyRow).where(IdempotencyKeyRow.owner == owner, IdempotencyKeyRow.key == key)
                            .values(batch_id=batch_id))

    async def release_idempotency_key(self, owner: str, key: str) -> None:
        """Forget a claim whose submit failed (the caller may retry the key with a corrected body)."""
        async with self._session() as s, s.begin():
            await s.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.owner == owner, IdempotencyKeyRow.key == key,
                                                            IdempotencyKeyRow.batch_id.is_(None)))

    # ---------------------------------------------------------------- batch jobs
    async def create_batch(self, batch: BatchRecord, items: Sequence[BatchItemRecord] = (), *,
                           lease_owner: str | None = None, lease_s: float = 0.0) -> None:
        """Store a new batch, with the results it already has (requests refused up front), at once;
        with `lease_owner`, already leased to that replica for `lease_s`."""
        async with self._session() as s, s.begin():
            s.add(BatchRow(id=batch.id, owner=batch.owner, status=batch.status, total=batch.total,
                           requests=batch.requests, meta=batch.meta, input_file_id=batch.input_file_id))
            if items or lease_owner is not None:
                await s.flush()  # the batch row first: items reference it
            if items:
                s.add_all([BatchItemRow(batch_id=batch.id, **i.model_dump()) for i in items])
            if lease_owner is not None:
                _now, expiry = self._lease_clock(lease_s)
                await s.execute(update(BatchRow).where(BatchRow.id == batch.id).values(lease_owner=lease_owner, lease_expires_at=expiry))

    def _lease_clock(self, lease_s: float) -> tuple[Any, Any]:
        """(now, now + lease) for lease conditions: the database's clock on Postgres (replicas on
        several hosts agree on it), this host's on SQLite (a file only one host can share)."""
        if self.is_postgres:
            return func.now(), func.now() + timedelta(seconds=lease_s)
        now = utcnow()
        return now, now + timedelta(seconds=lease_s)

    @staticmethod
    def _lease_free(now: Any) -> ColumnElement[bool]:
        return or_(BatchRow.lease_expires_at.is_(None), BatchRow.lease_expires_at < now)

    async def claim_batches(self, owner: str, lease_s: float, *, limit: int) -> list[tuple[str, str]]:
        """Lease to `owner` up to `limit` unfinished jobs that nobody holds (their lease expired,
        was released, or never existed); returns their (id, status), oldest first.

        Atomic per job: on Postgres the candidates are locked with FOR UPDATE SKIP LOCKED (two
        sweepers never wait on or take the same job); on SQLite each job is taken by an UPDATE
        whose WHERE re-checks that its lease is free (SQLite runs one writer at a time)."""
        if limit <= 0:
            return []
        now, expiry = self._lease_clock(lease_s)
        claimable = and_(BatchRow.status.in_(UNFINISHED), self._lease_free(now))
        if self.is_postgres:
            async with self._session() as s, s.begin():
                q = (select(BatchRow.id, BatchRow.status).where(claimable).order_by(BatchRow.created_at).limit(limit)
                     .with_for_update(skip_locked=True))
                rows = [(str(i), str(st)) for i, st in (await s.execute(q)).all()]
                if rows:
                    await s.execute(update(BatchRow).where(BatchRow.id.in_([i for i, _ in rows]))
                                    .values(lease_owner=owner, lease_expires_at=expiry))
                return rows
        async with self._session() as s:  # more candidates than wanted: concurrent sweepers lose some races
            q = select(BatchRow.id, BatchRow.status).where(claimable).order_by(BatchRow.created_at).limit(limit * 10)
            candidates = [(str(i), str(st)) for i, st in (await s.execute(q)).all()]
        got: list[tuple[str, str]] = []
        for batch_id, status in candidates:
            if len(got) >= limit:
                break
            async with self._session() as s, s.begin():
                res = await s.execute(update(BatchRow).where(BatchRow.id == batch_id, claimable)
                                      .values(lease_owner=owner, lease_expires_at=expiry))
                if res.rowcount == 1:
                    got.append((batch_id, status))
        return got

    async def renew_batch_lease(self, batch_id: str, owner: str, lease_s: float) -> str | None:
        """Extend `owner`'s lease on a job; the job's status, or None when `owner` no longer
        holds it (another replica took it over, or it finished)."""
        _now, expiry = self._lease_clock(lease_s)
        async with self._session() as s, s.begin():
            res = await s.execute(update(BatchRow).where(BatchRow.id == batch_id, BatchRow.lease_owner == owner,
                                                         BatchRow.status.in_(UNFINISHED)).values(lease_expires_at=expiry))
            if res.rowcount != 1:
                return None
            return str((await s.execute(select(BatchRow.status).where(BatchRow.id == batch_id))).scalar_one())

    async def release_batch_lease(self, batch_id: str, owner: str) -> bool:
        """Give up `owner`'s lease (a clean shutdown): the next sweep of any replica takes the job."""
        async with self._session() as s, s.begin():
            res = await s.execute(update(BatchRow).where(BatchRow.id == batch_id, BatchRow.lease_owner == owner)
                                  .values(lease_owner=None, lease_expires_at=None))
            return res.rowcount == 1

    async def cancel_batch(self, batch_id: str) -> str | None:
        """Cancel an unfinished job: `cancelled` at once when no replica holds a live lease on
        it, else `cancelling` (its holder stops at its next chunk). Returns the new status, or
        None if the job was not in progress."""
        now, _expiry = self._lease_clock(0)
        async with self._session() as s, s.begin():
            res = await s.execute(update(BatchRow).where(BatchRow.id == batch_id, BatchRow.status == "in_progress", self._lease_free(now))
                                  .values(status="cancelled", completed_at=utcnow(), lease_owner=None, lease_expires_at=None))
            if res.rowcount == 1:
                return "cancelled"
            res = await s.execute(update(BatchRow).where(BatchRow.id == batch_id, BatchRow.status == "in_progress")
                                  .values(status="cancelling"))
            return "cancelling" if res.rowcount == 1 else None

    async def _batch_counts(self, s: AsyncSession, batch_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(completed, failed) per batch."""
        if not batch_ids:
            return {}
        q = (
            select(BatchItemRow.batch_id, BatchItemRow.ok, func.count())
            .where(BatchItemRow.batch_id.in_(list(batch_ids)))
            .group_by(BatchItemRow.batch_id, BatchItemRow.ok)
        )
        out: dict[str, tuple[int, int]] = {}
        for bid, ok, n in (await s.execute(q)).all():
            done, failed = out.get(bid, (0, 0))
            out[bid] = (done + int(n), failed) if ok else (done, failed + int(n))
        return out

    @staticmethod
    def _batch_record(row: BatchRow, counts: tuple[int, int], with_requests: bool) -> BatchRecord:
        return BatchRecord(
            id=row.id, owner=row.owner, status=row.status, created_at=row.created_at, completed_at=row.completed_at,
            total=row.total, completed=counts[0], failed=counts[1], requests=list(row.requests) if with_requests else [],
            meta=dict(row.meta or {}), error=row.error, input_file_id=row.input_file_id,
            lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at,
        )

    async def get_batch(self, batch_id: str, *, owner: str | None = None, with_requests: bool = False) -> BatchRecord | None:
        """A batch with its progress counts; with `owner`, only if that key owns it."""
        async with self._session() as s:
            row = await s.get(BatchRow, batch_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            counts = await self._batch_counts(s, [batch_id])
            return self._batch_record(row, counts.get(batch_id, (0, 0)), with_requests)

    async def list_batches(self, *, owner: str | None = None, statuses: Sequence[str] | None = None,
                           limit: int = 100, with_requests: bool = False) -> list[BatchRecord]:
        """Newest first; `owner` restricts to one key's batches."""
        async with self._session() as s:
            q = select(BatchRow)
            if owner is not None:
                q = q.where(BatchRow.owner == owner)
            if statuses is not None:
                q = q.where(BatchRow.status.in_(list(statuses)))
            rows = (await s.execute(q.order_by(BatchRow.created_at.desc()).limit(limit))).scalars().all()
            counts = await self._batch_counts(s, [r.id for r in rows])
            return [self._batch_record(r, counts.get(r.id, (0, 0)), with_requests) for r in rows]

    async def set_batch_status(self, batch_id: str, status: str, *, error: str | None = None,
                               only_from: Sequence[str] | None = None) -> bool:
        """Move a batch to `status` (optionally only from one of `only_from`); True if it moved."""
        async with self._session() as s, s.begin():
            row = await s.get(BatchRow, batch_id)
            if row is None or (only_from is not None and row.status not in only_from):
                return False
            row.status = status
            if error is not None:
                row.error = error
            if status in ("completed", "failed", "cancelled"):
                row.completed_at = utcnow()
                row.lease_owner, row.lease_expires_at = None, None
            return True

    async def batch_done_indices(self, batch_id: str) -> set[int]:
        async with self._session() as s:
            q = select(BatchItemRow.idx).where(BatchItemRow.batch_id == batch_id)
            return set((await s.execute(q)).scalars().all())

    async def save_batch_items(self, batch_id: str, items: Sequence[BatchItemRecord], traces: Sequence[TraceRecord] = ()) -> int:
        """Write finished items and their traces in one transaction, skipping items already stored
        (keyed by (batch id, index)), so a resumed or repeated chunk never duplicates a result.
        Returns how many items were new."""
        if not items:
            return 0
        by_trace = {t.id: t for t in traces}
        for attempt in range(3):  # a concurrent writer of the same item makes the insert fail: re-read and skip it
            try:
                async with self._session() as s, s.begin():
                    q = select(BatchItemRow.idx).where(BatchItemRow.batch_id == batch_id, BatchItemRow.idx.in_([i.idx for i in items]))
                    have = set((await s.execute(q)).scalars().all())
                    new = [i for i in items if i.idx not in have]
                    s.add_all([self._trace_rows(by_trace[i.trace_id]) for i in new if i.trace_id in by_trace])
                    s.add_all([BatchItemRow(batch_id=batch_id, **i.model_dump()) for i in new])
                return len(new)
            except IntegrityError:
                if attempt == 2:  # not a race: a row the store refuses (the caller isolates it)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def batch_items(self, batch_id: str, *, after: int = -1, limit: int | None = None) -> list[BatchItemRecord]:
        """Finished items in index order (those with index > `after`)."""
        async with self._session() as s:
            q = select(BatchItemRow).where(BatchItemRow.batch_id == batch_id, BatchItemRow.idx > after).order_by(BatchItemRow.idx)
            if limit is not None:
                q = q.limit(limit)
            rows = (await s.execute(q)).scalars().all()
            return [BatchItemRecord(idx=r.idx, custom_id=r.custom_id, ok=r.ok, status_code=r.status_code, body=dict(r.body),
                                    trace_id=r.trace_id) for r in rows]

    # ---------------------------------------------------------------- files
    async def create_file(self, file: FileRecord) -> FileRecord:
        async with self._session() as s, s.begin():
            row = FileRow(id=file.id, owner=file.owner, purpose=file.purpose, filename=file.filename,
                          size=len(file.content or b""), content=file.content or b"")
            s.add(row)
        return self._file_record(row, with_content=False)

    @staticmethod
    def _file_record(row: FileRow, *, with_content: bool) -> FileRecord:
        return FileRecord(id=row.id, owner=row.owner, purpose=row.purpose, filename=row.filename, size=row.size,
                          created_at=row.created_at, content=row.content if with_content else None)

    async def get_file(self, file_id: str, *, owner: str | None = None, with_content: bool = False) -> FileRecord | None:
        """A file; with `owner`, only if that key owns it."""
        async with self._session() as s:
            if with_content:
                row = await s.get(FileRow, file_id)
            else:  # leave the content (up to the upload limit) in the database
                cols = [c for c in FileRow.__table__.c if c.name != "content"]
                found = (await s.execute(select(*cols).where(FileRow.id == file_id))).first()
                row = FileRow(**found._mapping, content=b"") if found is not None else None
            if row is None or (owner is not None and row.owner != owner):
                return None
            return self._file_record(row, with_content=with_content)

    async def list_files(self, *, owner: str | None = None, purpose: str | None = None, limit: int = 100) -> list[FileRecord]:
        """Newest first, without their content."""
        async with self._session() as s:
            cols = [c for c in FileRow.__table__.c if c.name != "content"]
            q = select(*cols)
            if owner is not None:
                q = q.where(FileRow.owner == owner)
            if purpose is not None:
                q = q.where(FileRow.purpose == purpose)
            rows = (await s.execute(q.order_by(FileRow.created_at.desc()).limit(limit))).all()
            return [self._file_record(FileRow(**r._mapping, content=b""), with_content=False) for r in rows]

    async def file_usage(self, owner: str | None) -> tuple[int, int]:
        """(files, bytes) stored for `owner` (None: the files of an open gateway's operator)."""
        async with self._session() as s:
            q = select(func.count(), func.coalesce(func.sum(FileRow.size), 0)).select_from(FileRow)
            q = q.where(FileRow.owner.is_(None) if owner is None else FileRow.owner == owner)
            count, size = (await s.execute(q)).one()
            return int(count), int(size)

    async def delete_file(self, file_id: str, *, owner: str | None = None) -> bool:
        async with self._session() as s, s.begin():
            q = delete(FileRow).where(FileRow.id == file_id)
            if owner is not None:
                q = q.where(FileRow.owner == owner)
            return (await s.execute(q)).rowcount > 0
