"""Learning from traffic (issue 23): traces with feedback become fit data, and a refit job any
replica may run, leased in the store, stores new fit versions that every replica then follows.

    data = await traffic_fit_data(store, pool)                # the FitData an offline fit would use
    out = await refit_from_traffic(runtime, "symbolic-moe")   # `profile build --from-traces`
    job = RefitJob(runtime, owner=replica_id, routers=["symbolic-moe"], threshold=200)
    await job.check()                                          # what the replica loop calls every check_s

Outcomes per expert, from one trace:
* feedback on one expert call (`call_seq`): that call's expert scored (score + 1) / 2, right when > 0;
* feedback on the answer: every expert whose answer is the answer shares its score; when the answer
  was right (score > 0) and the question is multiple choice, an expert with another answer was
  wrong (one option is right); when it was wrong, another answer says nothing and is left out;
  on a multiple-choice question a call that chose no option was wrong either way (it cannot have
  been right: the offline outcomes score it so, and leaving it out would rank an expert that often
  fails to answer by its accuracy on the questions it did answer);
* a checkable answer (`metadata.answer`): every call scored against it (automatic, no feedback).
Multi-expert plans (Symbolic-MoE's three recruits, exploration's shadow calls) so give one outcome
per expert called. The newest outcome of an expert on a question wins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from routers.types import FitData, FitOutcome, Query, RoutingError
from store.records import FeedbackRecord, TraceRecord
from store.repository import Store

if TYPE_CHECKING:
    from orchestrator.pipeline import Runtime

logger = logging.getLogger("orchestrator.learning")

ANSWERING_ROLES = ("expert", "shadow")  # calls whose answer is the expert's own (not an aggregator's synthesis)


def checkable_answer(meta: dict[str, Any]) -> str | None:
    answer = (meta.get("metadata") or {}).get("answer")
    return str(answer).strip() if isinstance(answer, (str, int)) and str(answer).strip() else None


def trace_outcomes(trace: TraceRecord, feedback: Sequence[FeedbackRecord]) -> dict[str, FitOutcome]:
    """Each called expert's outcome on this trace's question (see the module docstring)."""
    calls = [c for c in trace.calls if c.role in ANSWERING_ROLES and c.error_kind is None]
    out: dict[str, FitOutcome] = {}
    gold = checkable_answer(trace.query_meta)
    if gold is not None:
        for c in calls:
            out[c.expert] = FitOutcome(correct=c.answer is not None and c.answer.strip().upper() == gold.upper(), answer=c.answer,
                                       response=c.output or "", cost_usd=c.cost_usd)
    multiple_choice = bool(trace.query_meta.get("choices"))
    for f in feedback:  # in order: later feedback overrides
        quality = (f.score + 1) / 2
        if f.call_seq is not None:
            c = next((c for c in calls if c.seq == f.call_seq), None)
            if c is not None:
                out[c.expert] = FitOutcome(correct=f.score > 0, answer=c.answer, response=c.output or "", score=quality, cost_usd=c.cost_usd)
            continue
        for c in calls:
            if trace.answer is not None and c.answer == trace.answer:
                out[c.expert] = FitOutcome(correct=f.score > 0, answer=c.answer, response=c.output or "", score=quality, cost_usd=c.cost_usd)
            elif multiple_choice and (c.answer is None or f.score > 0):
                out[c.expert] = FitOutcome(correct=False, answer=c.answer, response=c.output or "", score=0.0, cost_usd=c.cost_usd)
    return out


def trace_query(trace: TraceRecord) -> Query:
    meta = trace.query_meta
    return Query(text=trace.query_text, question_id=str(meta.get("question_id") or trace.id), category=meta.get("category"),
                 choices=tuple(meta["choices"]) if meta.get("choices") else None)


async def traffic_fit_data(store: Store, pool: Sequence[str], *, since: datetime | None = None,
                           routers: Sequence[str] | None = None) -> tuple[FitData, int]:
    """The fit data traffic gives `pool`'s experts (questions any of them has an outcome on),
    and how many outcomes it holds."""
    wanted = set(pool)
    questions: dict[str, Query] = {}
    outcomes: dict[str, dict[str, FitOutcome]] = {m: {} for m in pool}
    n = 0
    for trace, feedback in await store.learning_traces(since=since, routers=routers):
        per_expert = {m: o for m, o in trace_outcomes(trace, feedback).items() if m in wanted}
        if not per_expert:
            continue
        q = trace_query(trace)
        questions[q.question_id or trace.id] = q
        for m, o in per_expert.items():
            outcomes[m][q.question_id or trace.id] = o
            n += 1
    return FitData(list(questions.values()), outcomes, source=f"traffic: {len(questions)} rated questions, {n} expert outcomes"), n


async def refit_from_traffic(runtime: "Runtime", router: str, *, since: datetime | None = None,
                             options: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit `router` (its configured pool and options) on traffic outcomes and store the fit as
    a new version for its pool. Raises RoutingError when traffic gave it nothing to fit on."""
    from routers.registry import build_router

    opts = {**runtime.config.routers.get(router, {}), **(options or {})}
    pool = opts.pop("pool", None)
    r = build_router(router, runtime.router_context(pool), opts)
    if getattr(r, "artefact_kind", None) is None:
        raise RoutingError(f"router {router!r} stores no fit; fits from traffic are for symbolic-moe, coe and the other stored fits")
    data, n = await traffic_fit_data(runtime.store, r.pool, since=since)
    if not data.questions:
        raise RoutingError(f"router {router!r}: no rated traffic for its pool yet (POST /v1/feedback, or metadata.answer)")
    r.save_meta = {"fit": {"source": "traffic", "outcomes": n, "questions": len(data.questions), **(meta or {})}}  # type: ignore[attr-defined]
    summary = await r.fit(data)
    return {"router": router, "version": getattr(r, "fit_version", None), "pool": r.pool, "outcomes": n,
            "questions": len(data.questions), "source": data.source, "fit": summary}


class RefitJob:
    """Refits each named router when `threshold` new outcomes arrived since its last refit.

    Any replica runs `check()` every `check_s`; the refit of one (router, pool) is claimed in the
    store (`Store.claim_refit`: one atomic UPDATE), so one trigger gives exactly one refit however
    many replicas see it. A replica that dies mid-refit leaves a lease that expires after `lease_s`."""

    def __init__(self, runtime: "Runtime", *, owner: str, routers: Sequence[str], threshold: int, lease_s: float = 300.0) -> None:
        self.runtime, self.owner, self.routers = runtime, owner, list(routers)
        self.threshold, self.lease_s = threshold, lease_s
        self.refits: list[dict[str, Any]] = []  # what this replica refitted (newest last, bounded)

    async def check(self) -> list[dict[str, Any]]:
        """One pass: refit every router whose trigger fired and whose lease this replica won."""
        done = []
        outcomes = await self.runtime.store.count_outcomes()
        for name in self.routers:
            router = await self.runtime.router(name)
            kind, artefact, pool = router.artefact_kind, router.artefact, router.pool  # type: ignore[attr-defined]
            used = await self.runtime.store.claim_refit(kind, artefact, pool, self.owner, self.lease_s,
                                                        outcomes=outcomes, threshold=self.threshold)
            if used is None:
                continue
            stored: int | None = None
            t0 = time.perf_counter()
            try:
                out = await refit_from_traffic(self.runtime, name, meta={"trigger_outcomes": outcomes, "by": self.owner})
                stored = outcomes
                out["refit_s"] = round(time.perf_counter() - t0, 2)
                done.append(out)
                logger.info("refitted %s on %d outcomes from traffic in %.1f s: v%s", name, out["outcomes"], out["refit_s"], out["version"])
            except RoutingError as e:  # too little data for this method yet (coe needs 20 categorised questions)
                logger.warning("refit of %s skipped: %s", name, e)
                stored = outcomes  # wait for the next `threshold` outcomes rather than retrying at once
            finally:
                await self.runtime.store.finish_refit(kind, artefact, pool, self.owner, outcomes=stored)
        self.refits = (self.refits + done)[-100:]
        return done
