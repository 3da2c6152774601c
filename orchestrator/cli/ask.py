"""`orchestrator ask` (answer one question, record its trace) and `orchestrator trace` (print it).

    orchestrator ask "Which enzyme unwinds DNA?" --router all-vote --json
    orchestrator trace 0b5c...
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orchestrator.cli._common import (
    EXIT_NO_ANSWER, EXIT_UNDECIDED, ConfigOpt, console, fail, load_config, prepare_models, require_router, run_async, short, table,
)
from routers.registry import router_names
from routers.types import Query, RoutingError

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
    """Answer one question with a router and record its trace.

    Exits 0 with an answer, 3 when no expert answered, 4 when the router could not decide."""
    from orchestrator.pipeline import Runtime

    if not question.strip():
        fail("the question is empty")
    cfg = load_config(config)
    router_name = router or cfg.default_router
    require_router(router_name)
    if expert is not None:
        if router_name != "single":
            fail(f"--expert applies to --router single only, not --router {router_name}")
        if expert not in {s.name for s in cfg.experts}:
            fail(f"unknown expert {expert!r}; configured: {', '.join(s.name for s in cfg.experts)}")
    query = Query(text=question, choices=tuple(choices) if choices else None, max_tokens=max_tokens)
    options = {"expert": expert} if expert else None
    prepare_models(cfg)

    async def go() -> dict[str, Any] | str:
        async with await Runtime.create(cfg) as rt:
            try:
                return result_json(await rt.answer(query, router_name, options=options))
            except RoutingError as e:
                return str(e)

    with console(stderr=True).status(f"asking {router_name}…") if sys.stderr.isatty() else nullcontext():
        out = run_async(go)
    if isinstance(out, str):
        fail(f"the router could not decide: {out}", EXIT_UNDECIDED)
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        print_result(out)
    problem = no_answer_reason(out, multiple_choice=bool(choices))
    if problem is not None:
        fail(*problem)


def no_answer_reason(out: dict[str, Any], *, multiple_choice: bool) -> tuple[str, int] | None:
    """Why `ask` has no real answer (one line, and its exit code), or None when it has one."""
    calls = [c for c in out["calls"] if c["role"] == "expert"] or out["calls"]
    failed = [c for c in calls if c["error_kind"] is not None]
    if calls and len(failed) == len(calls):
        why = "; ".join(f"{c['expert']}: {short(c['error_message'] or c['error_kind'], 50)}" for c in failed)
        return f"no expert answered ({why}); trace {out['trace_id']}", EXIT_NO_ANSWER
    if not out["answer"].strip():
        return f"no expert answered: every answer is empty; trace {out['trace_id']}", EXIT_NO_ANSWER
    if multiple_choice and out["parsed_answer"] is None:
        return f"the router could not decide: no option can be read from the answer; trace {out['trace_id']}", EXIT_UNDECIDED
    return None


def trace(
    trace_id: Annotated[str, typer.Argument(help="A trace id printed by `ask`")],
    config: ConfigOpt = None,
) -> None:
    """Print a stored trace as JSON."""
    from store.repository import Store
    from store.urls import mask_url

    cfg = load_config(config)

    async def go():  # type: ignore[no-untyped-def]
        async with await Store.open(cfg.store) as store:
            return await store.get_trace(trace_id)

    rec = run_async(go)
    if rec is None:
        fail(f"no trace {trace_id!r} in {mask_url(cfg.store)}")
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
    """The answer, a table of calls that fits 80 columns (names whole), then why each expert was
    asked and every error message in full, one line each."""
    con = console()
    con.print(out["answer"].strip() or "[dim](empty answer)[/dim]")
    con.print()
    names = [c["expert"] + ("" if c["role"] == "expert" else f" ({c['role']})") for c in out["calls"]]
    calls = table("expert", "answer", "tokens", "s", "status", title=f"router {out['router']} · aggregation {out['aggregation']}",
                  names=names, right=("tokens", "s"))
    reasons = [e["reason"] for e in out["experts"]]
    whys: dict[str, str] = {}
    errors: list[str] = []
    for i, (name, c) in enumerate(zip(names, out["calls"], strict=True)):
        why = c["fallback_for"] and f"fallback for {c['fallback_for']}" or (reasons[i] if i < len(reasons) and c["role"] == "expert" else "")
        if why:
            whys[name] = why
        if c["error_kind"] is not None:
            errors.append(f"[red]{c['error_kind']}[/red] {name}: {c['error_message']}")
        calls.add_row(
            name,
            short(c["answer"] or c["output"], 40),
            f"{c['prompt_tokens']}/{c['completion_tokens']}" + ("~" if c["tokens_estimated"] else ""),
            f"{c['latency_s']:.2f}",
            "ok" if c["error_kind"] is None else f"[red]{c['error_kind']}[/red]",
        )
    con.print(calls)
    if len(set(whys.values())) == 1 and len(whys) > 1:
        con.print(f"why: {next(iter(whys.values()))} (each of them)")
    else:
        for name, why in whys.items():
            con.print(f"why {name}: {why}")
    for line in errors:
        con.print(line)
    con.print(
        f"tokens {out['prompt_tokens']}/{out['completion_tokens']} · cost ${out['cost_usd']:.6f} · "
        f"latency {out['latency_s']:.2f} s · trace {out['trace_id']}"
    )
