"""Per-request cost of the pieces the issue-25 hot-path work replaced, old and new side by side.

    python benchmarks/gateway_hot_path.py [--repeat 7] [--number 2000]

Each line times one piece of a `single` chat request as the gateway builds it, the way it was
built before and the way it is built now, in the same process, alternating, best of `--repeat`
runs of `--number` calls (the best run is the least disturbed one on a loaded machine):

* the response body: `chat_completion(...).model_dump_json()` (five pydantic models) against
  `chat_completion_json` (one orjson call);
* the trace record: `TraceRecord(...)` validated (what `Runtime.trace_record` does) against the same
  record built with `model_construct` (tried and dropped: pydantic's Python-level unvalidated
  build costs more than its Rust validation here);
* the store's JSON columns of one trace (query meta, plan experts/aggregation/detail, each step's
  detail): the stdlib encoder (SQLAlchemy's default) against `store.db._json_dumps` (orjson).
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.gateway.queries import chat_completion, chat_completion_json  # noqa: E402
from orchestrator.pipeline import QueryResult, Runtime  # noqa: E402
from routers.types import FinalAnswer, Plan, Query  # noqa: E402
from store.db import _json_dumps  # noqa: E402
from store.records import ExpertCallRecord, PlanRecord, TraceRecord, TraceStepRecord  # noqa: E402


def sample() -> tuple[Query, QueryResult]:
    query = Query(text="Say ok.", max_tokens=8)
    plan = Plan.single("single", "loadtest-upstream", query.expert_request(), reason="the named expert")
    calls = [ExpertCallRecord(expert="loadtest-upstream", prompt_tokens=9, completion_tokens=2, latency_s=0.0004, finish_reason="stop",
                              answer=None)]
    steps = [TraceStepRecord(seq=0, kind="route", detail={"experts": ["loadtest-upstream"]}, duration_s=1e-5),
             TraceStepRecord(seq=1, kind="generate", detail={"expert": "loadtest-upstream", "assigned": "loadtest-upstream", "ok": True,
                                                             "fallback_used": False}, duration_s=4e-4),
             TraceStepRecord(seq=2, kind="aggregate", detail={"method": "single", "answer": None, "tally": {}}, duration_s=1e-5)]
    result = QueryResult(trace_id="8f0c1f3e-1f7a-4c43-9a59-3f0f7f7a0b11", router="single",
                         final=FinalAnswer("ok", None, "single", finish_reason="stop"), plan=plan, outputs=[], calls=calls,
                         steps=steps, latency_s=0.0005)
    return query, result


def constructed_trace(query: Query, result: QueryResult) -> TraceRecord:
    """The trace record built unvalidated (`model_construct`), the alternative measured and dropped."""
    plan = result.plan
    assert plan is not None
    meta = {k: v for k, v in query.model_dump(exclude={"text", "gold", "prompt", "messages"}).items() if v not in (None, {}, ())}
    return TraceRecord.model_construct(
        id=result.trace_id, created_at=None, router=result.router, query_text=query.text, query_meta=meta,
        answer_text=result.final.text, answer=result.final.answer, status="ok" if result.ok else "error", error=None,
        latency_s=result.latency_s, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        cost_usd=result.cost_usd, owner=None,
        plan=PlanRecord.model_construct(router=plan.router, experts=[a.expert for a in plan.assignments],
                                        aggregation=plan.aggregation.model_dump(),
                                        detail={"reasons": [a.reason for a in plan.assignments], **plan.detail}),
        steps=result.steps, calls=result.calls,
    )


def json_columns(trace: TraceRecord, dumps) -> None:  # type: ignore[no-untyped-def]
    dumps(trace.query_meta)
    if trace.plan is not None:
        dumps(trace.plan.experts), dumps(trace.plan.aggregation), dumps(trace.plan.detail)
    for s in trace.steps:
        dumps(s.detail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    a = ap.parse_args()
    query, result = sample()
    trace = Runtime.trace_record(query, result)
    assert json.loads(chat_completion(result, "single").model_dump_json())["choices"] == json.loads(chat_completion_json(result, "single"))["choices"]
    pieces = {
        "response body": (lambda: chat_completion(result, "single").model_dump_json(), lambda: chat_completion_json(result, "single")),
        "trace record*": (lambda: Runtime.trace_record(query, result), lambda: constructed_trace(query, result)),
        "JSON columns": (lambda: json_columns(trace, json.dumps), lambda: json_columns(trace, _json_dumps)),
    }
    total_old = total_new = 0.0
    print(f"{'piece':<16}{'before µs':>11}{'after µs':>10}{'saved µs':>10}")
    for name, (old, new) in pieces.items():
        best_old = best_new = float("inf")
        for _ in range(a.repeat):  # alternate, so both see the same machine
            best_old = min(best_old, timeit.timeit(old, number=a.number) / a.number)
            best_new = min(best_new, timeit.timeit(new, number=a.number) / a.number)
        if not name.endswith("*"):  # the pieces the gateway now builds the new way
            total_old += best_old
            total_new += best_new
        print(f"{name:<16}{best_old * 1e6:>11.1f}{best_new * 1e6:>10.1f}{(best_old - best_new) * 1e6:>10.1f}")
    print(f"{'total (used)':<16}{total_old * 1e6:>11.1f}{total_new * 1e6:>10.1f}{(total_old - total_new) * 1e6:>10.1f}")
    print("* trace record: 'before' is the validated build the gateway keeps, 'after' the unvalidated one it does not use")


if __name__ == "__main__":
    main()
