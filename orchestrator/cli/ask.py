"""`orchestrator ask` (answer one question, record its trace) and `orchestrator trace` (print it).

    orchestrator ask "Which enzyme unwinds DNA?" --router all-vote --json
    orchestrator trace 0b5c...
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from orchestrator.cli._common import ConfigOpt, console, fail, load_config, require_router, run_async, short
from routers.registry import router_names
from routers.types import Query

if TYPE_CHECKING:
    from orchestrator.pipeline import QueryResult


def ask(
    question: Annotated[str, typer.Argument(help="The question to answer")],
    router: Annotated[str | None, typer.Option("--router", "-r", help=f"One of: {', '.join(router_names())}")] = None,
    config: ConfigOpt = None,
    expert: Annotated[str | None, typer.Option("--expert", "-e", help="For --router single: the expert")] = None,
    choices: Annotated[list[str] | None, typer.Option("--choice", help="An answer option (repeat for multiple choice)")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=8192, help="Max new tokens per expert call")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Answer one question with a router and record its trace."""
    from orchestrator.pipeline import Runtime

    if not question.strip():
        fail("the question is empty")
    cfg = load_config(config)
    router_name = router or cfg.default_router
    require_router(router_name)
    query = Query(text=question, choices=tuple(choices) if choices else None, max_tokens=max_tokens)
    options = {"expert": expert} if expert and router_name == "single" else None

    async def go() -> dict[str, Any]:
        async with await Runtime.create(cfg) as rt:
            return result_json(await rt.answer(query, router_name, options=options))

    out = run_async(go)
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        print_result(out)


def trace(
    trace_id: Annotated[str, typer.Argument(help="A trace id printed by `ask`")],
    config: ConfigOpt = None,
) -> None:
    """Print a stored trace as JSON."""
    from store.repository import Store

    cfg = load_config(config)

    async def go():  # type: ignore[no-untyped-def]
        async with await Store.open(cfg.store) as store:
            return await store.get_trace(trace_id)

    rec = run_async(go)
    if rec is None:
        fail(f"no trace {trace_id!r} in {cfg.store}")
    sys.stdout.write(rec.model_dump_json(indent=2) + "\n")


def result_json(result: QueryResult) -> dict[str, Any]:
    """The `ask --json` object (also what the table below is drawn from)."""
    plan = result.plan
    return {
        "answer": result.final.text,
        "parsed_answer": result.final.answer,
        "router": result.router,
        "aggregation": result.final.method,
        "trace_id": result.trace_id,
        "experts": [
            {"expert": a.expert, "reason": a.reason, "weight": a.weight} for a in (plan.assignments if plan else [])
        ],
        "plan_detail": plan.detail if plan else {},
        "calls": [c.model_dump(exclude={"seq"}) for c in result.calls],
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost_usd": result.cost_usd,
        "latency_s": round(result.latency_s, 4),
    }


def print_result(out: dict[str, Any]) -> None:
    con = console()
    con.print(out["answer"].strip() or "[dim](empty answer)[/dim]")
    con.print()
    table = Table(title=f"router {out['router']} · aggregation {out['aggregation']}", title_justify="left")
    for col in ("role", "expert", "why", "answer", "tokens in/out", "cost $", "latency s", "status"):
        table.add_column(col)
    reasons = [e["reason"] for e in out["experts"]]
    for i, c in enumerate(out["calls"]):
        why = c["fallback_for"] and f"fallback for {c['fallback_for']}" or (reasons[i] if i < len(reasons) and c["role"] == "expert" else "")
        table.add_row(
            c["role"],
            c["expert"],
            short(why, 40),
            short(c["answer"] or c["output"], 40),
            f"{c['prompt_tokens']}/{c['completion_tokens']}" + ("~" if c["tokens_estimated"] else ""),
            f"{c['cost_usd']:.6f}",
            f"{c['latency_s']:.2f}",
            "ok" if c["error_kind"] is None else f"[red]{c['error_kind']}[/red]: {short(c['error_message'], 40)}",
        )
    con.print(table)
    con.print(
        f"tokens {out['prompt_tokens']}/{out['completion_tokens']} · cost ${out['cost_usd']:.6f} · "
        f"latency {out['latency_s']:.2f} s · trace {out['trace_id']}"
    )
