"""`orchestrator bench`: compare routers on MMLU-Pro or GPQA, live or on recorded outputs.

    orchestrator bench --recorded ../shared/data/recorded/mmlu_pro_tiger -r best-single -r all-vote --out out/bench
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.cli._common import ConfigOpt, PoolOpt, comma_names, console, fail, load_config, parse_router_options, run_async
from routers.registry import router_names


def bench(
    dataset: Annotated[str, typer.Option(help="mmlu-pro or gpqa")] = "mmlu-pro",
    router: Annotated[list[str] | None, typer.Option("--router", "-r", help="A router to compare (repeat); NAME@LABEL runs a second configuration")] = None,
    recorded: Annotated[Path | None, typer.Option(help="Evaluate on replayed recorded outputs in DIR")] = None,
    fit_recorded: Annotated[Path | None, typer.Option(help="Fit on recorded outputs in DIR (ids kept disjoint)")] = None,
    pool: PoolOpt = None,
    data: Annotated[Path | None, typer.Option(help="Dataset file (MMLU-Pro JSONL, or GPQA dataset.zip)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate at most N questions")] = None,
    seed: Annotated[int, typer.Option(help="Seed for splits, sampling and shuffles")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write results.json, report.md, plot.png here")] = None,
    config: ConfigOpt = None,
    fit_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of question ids used for fitting")] = 0.3,
    fit_limit: Annotated[int | None, typer.Option(min=1, help="Fit on at most N questions (default: all recorded, 50 live)")] = None,
    prompt: Annotated[str, typer.Option(help="cot-5shot (official MMLU-Pro) or zero-shot")] = "cot-5shot",
    max_tokens: Annotated[int, typer.Option(min=1, max=32768, help="Max new tokens per live expert call")] = 512,
    gpqa_subset: Annotated[str, typer.Option(help="diamond, main or extended")] = "diamond",
    gpqa_password: Annotated[str | None, typer.Option(envvar="GPQA_PASSWORD", help="Password of GPQA's dataset.zip")] = None,
    router_opt: Annotated[list[str] | None, typer.Option("--router-opt", help="ROUTER.KEY=VALUE (repeat)")] = None,
    residency: Annotated[int, typer.Option(min=1, help="Live: models resident at once")] = 1,
    fresh: Annotated[bool, typer.Option(help="Start a new run instead of resuming the same one")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json to stdout")] = False,
) -> None:
    """Compare routers on MMLU-Pro or GPQA, live or on recorded outputs (resumable)."""
    from orchestrator.bench.jobs import benchmark
    from orchestrator.bench.runner import BenchOptions
    from orchestrator.progress import PhaseProgress

    routers = router or ["best-single", "all-vote", "oracle"]
    unknown = [r for r in routers if r.split("@", 1)[0] not in router_names()]
    if unknown:
        fail(f"unknown router(s) {', '.join(unknown)}; available: {', '.join(router_names())}")
    if dataset not in ("mmlu-pro", "gpqa"):
        fail(f"--dataset must be mmlu-pro or gpqa, got {dataset!r}")
    if prompt not in ("cot-5shot", "zero-shot"):
        fail(f"--prompt must be cot-5shot or zero-shot, got {prompt!r}")
    for p, flag in ((recorded, "--recorded"), (fit_recorded, "--fit-recorded"), (data, "--data")):
        if p is not None and not p.exists():
            fail(f"{flag} {p}: no such file or directory")
    cfg = load_config(config)
    opts = BenchOptions(
        dataset=dataset, routers=list(dict.fromkeys(routers)), recorded=recorded, fit_recorded=fit_recorded,
        pool=comma_names(pool), data=data, limit=limit, seed=seed,
        out=out, fit_fraction=fit_fraction, fit_limit=fit_limit, prompt=prompt, max_tokens=max_tokens,
        gpqa_subset=gpqa_subset, gpqa_password=gpqa_password, router_options=parse_router_options(router_opt),
        residency=residency, fresh=fresh, named_pools=cfg.pools,
    )

    report = run_async(lambda: benchmark(cfg, opts, progress=PhaseProgress(enabled=not as_json)))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    print_bench(report)
    if out is not None:
        console().print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'plot.png'}")


def print_bench(report: dict[str, Any]) -> None:
    """The report as a table of routers, best first, with the paired tests and the fit note.

    Fits an 80-column terminal: router names are never cut (a long one wraps), and the columns
    are those that rank routers (accuracy, interval, calls, cost); report.md has the full table."""
    from orchestrator.bench.report import cost_axis

    key, header, _ = cost_axis(report)
    table = Table(title=f"{report['dataset']}: {report['n_questions']} questions, pool of {len(report['pool'])}",
                  title_justify="left")
    table.add_column("router", justify="left", overflow="fold", ratio=1)
    for col in ("acc", "95% CI", "calls/q", header.replace(" units", "")):
        table.add_column(col, justify="right", no_wrap=True)
    for name, m in sorted(report["routers"].items(), key=lambda kv: -kv[1]["accuracy"]):
        calls = m["expert_calls_per_question"] + m["aggregator_calls_per_question"]
        cost = m.get(key)
        table.add_row(
            name + (" (bound)" if m.get("upper_bound") else ""), f"{m['accuracy']:.3f}",
            f"{m['ci95'][0]:.3f}–{m['ci95'][1]:.3f}", f"{calls:.2f}",
            "—" if cost is None else (f"{cost:.6f}" if key.endswith("usd") else f"{cost:.3f}"),
        )
    con = console()
    con.print(table)
    for p in (report.get("paired_test"), report.get("paired_test_best_at_3_vs_all_vote")):
        if p:
            con.print(f"paired {p['test']}: {p['a']} vs {p['b']}: p = {p['p_value']:.3g} ({p['a_only']} vs {p['b_only']} discordant)")
    con.print(f"fit questions: {report['fit_questions']}, evaluated: {report['eval_questions']}")
    con.print(f"fit: {report['fit']}")
    if report.get("cost_axis") == "price_units":
        con.print("cost: price units (the called experts' USD/Mtok summed; token counts unknown, not dollars)")
