"""`orchestrator bench`: compare routers on MMLU-Pro or GPQA, live or on recorded outputs.

    orchestrator bench --recorded ../shared/data/recorded/mmlu_pro_tiger -r best-single -r all-vote --out out/bench
    orchestrator bench --recorded ... --engine ray --ray-address auto     # expert groups on Ray actors (one per expert)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli._common import (
    ConfigOpt, MaxTokensOpt, PoolOpt, PromptOpt, comma_names, console, fail, live_prompt, load_config, parse_router_options,
    prepare_models, run_async, table,
)
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
    prompt: PromptOpt = "auto",
    max_tokens: MaxTokensOpt = None,
    gpqa_subset: Annotated[str, typer.Option(help="diamond, main or extended")] = "diamond",
    gpqa_password: Annotated[str | None, typer.Option(envvar="GPQA_PASSWORD", help="Password of GPQA's dataset.zip")] = None,
    router_opt: Annotated[list[str] | None, typer.Option("--router-opt", help="ROUTER.KEY=VALUE (repeat)")] = None,
    residency: Annotated[int, typer.Option(min=1, help="Live: models resident at once")] = 1,
    fresh: Annotated[bool, typer.Option(help="Start a new run instead of resuming the same one")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json to stdout")] = False,
    engine: Annotated[str, typer.Option(help="Where expert groups run: in-process, or ray (one Ray actor per expert, each model loaded once per run)")] = "in-process",
    ray_address: Annotated[str | None, typer.Option(help="--engine ray: the cluster to join (auto, ray://HOST:10001); unset: a local Ray instance")] = None,
) -> None:
    """Compare routers on MMLU-Pro or GPQA, live or on recorded outputs (resumable)."""
    from orchestrator.bench.jobs import benchmark
    from orchestrator.bench.runner import BenchOptions
    from orchestrator.progress import PhaseProgress

    routers = router or ["best-single", "all-vote", "oracle"]
    unknown = [r for r in routers if r.split("@", 1)[0] not in router_names()]
    if unknown:
        fail(f"unknown router(s) {', '.join(unknown)}; available: {', '.join(router_names())}")
    if engine not in ("in-process", "ray"):
        fail(f"--engine must be in-process or ray, got {engine!r}")
    if engine == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            fail("--engine ray needs Ray: pip install 'llm-orchestrator[ray]'")
    if dataset not in ("mmlu-pro", "gpqa"):
        fail(f"--dataset must be mmlu-pro or gpqa, got {dataset!r}")
    for p, flag in ((recorded, "--recorded"), (fit_recorded, "--fit-recorded"), (data, "--data")):
        if p is not None and not p.exists():
            fail(f"{flag} {p}: no such file or directory")
    cfg = load_config(config)
    if dataset == "gpqa" and prompt == "auto":
        prompt = "zero-shot"  # GPQA has its one zero-shot CoT prompt
    prompt, max_tokens = live_prompt(cfg, comma_names(pool), prompt, max_tokens, faithful=("cot-5shot", 512),
                                     recorded=recorded is not None)
    routers = list(dict.fromkeys(routers))
    opts = BenchOptions(
        dataset=dataset, routers=routers, recorded=recorded, fit_recorded=fit_recorded,
        pool=comma_names(pool), data=data, limit=limit, seed=seed,
        out=out, fit_fraction=fit_fraction, fit_limit=fit_limit, prompt=prompt, max_tokens=max_tokens,
        gpqa_subset=gpqa_subset, gpqa_password=gpqa_password, router_options=parse_router_options(router_opt),
        residency=residency, fresh=fresh, named_pools=cfg.pools, engine=engine, ray_address=ray_address,
        embedder=cfg.embedder,
    )
    if recorded is None:
        prepare_models(cfg)
        console(stderr=True).print(f"live experts: prompt {prompt}, at most {max_tokens} new tokens per call"
                                   + (" (--prompt cot-5shot for the official 5-shot CoT)" if prompt == "short" else ""))
    steps = ["prepare", *(["fit"] if any(fitted(r) for r in routers) else []), *routers]
    display = PhaseProgress(title="bench", steps=steps, enabled=not as_json)
    report = run_async(lambda: benchmark(cfg, opts, progress=display))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    print_bench(report)
    if out is not None:
        console().print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'plot.png'}")


def fitted(label: str) -> bool:
    """Whether the bench computes fit data for this router (it has a fit step)."""
    from routers.base import Router
    from routers.registry import router_class

    cls = router_class(label.split("@", 1)[0])
    return cls.needs_fit or cls.fit is not Router.fit


def print_bench(report: dict[str, Any]) -> None:
    """The report as a table of routers, best first, with the paired test and the fit note.
    Accuracy is in percent, as in report.md."""
    from orchestrator.bench.report import cost_axis, pct

    key, header, _ = cost_axis(report)

    ranked = sorted(report["routers"].items(), key=lambda kv: -kv[1]["accuracy"])
    labels = [name + (" (upper bound)" if m.get("upper_bound") else "") for name, m in ranked]
    cells: dict[str, Any] = {
        "acc %": lambda m: pct(m["accuracy"]),
        "95% CI": lambda m: f"{pct(m['ci95'][0])}–{pct(m['ci95'][1])}",
        "calls/q": lambda m: f"{m['expert_calls_per_question']:.2f}",
        "agg/q": lambda m: f"{m['aggregator_calls_per_question']:.2f}",
        ("$/q" if key.endswith("usd") else "units/q"): lambda m: "—" if m.get(key) is None else f"{m[key]:.2g}",
        "no ans": lambda m: str(m["unparsed"]),
        "wall s": lambda m: f"{m['wall_s']:.1f}",
    }
    # Columns that are zero for every router say nothing: left out, so names fit in 80 columns.
    if not any(m["aggregator_calls_per_question"] for _, m in ranked):
        del cells["agg/q"]
    if not any(m["unparsed"] for _, m in ranked):
        del cells["no ans"]
    t = table("router", *cells, title=f"{report['dataset']}: {report['n_questions']} questions, pool of {len(report['pool'])} "
              "(accuracy in %; no ans: no option read)", names=labels, right=tuple(cells))
    for label, (_, m) in zip(labels, ranked, strict=True):
        t.add_row(label, *(cell(m) for cell in cells.values()))
    con = console()
    con.print(t)
    for p in (report.get("paired_test"), report.get("paired_test_best_at_3_vs_all_vote")):
        if p:
            con.print(f"paired {p['test']}: {p['a']} vs {p['b']}: p = {p['p_value']:.3g} ({p['a_only']} vs {p['b_only']} discordant)")
    con.print(f"fit questions: {report['fit_questions']}, evaluated: {report['eval_questions']}")
    con.print(f"fit: {report['fit']}")
    if report.get("cost_axis") == "price_units":
        con.print("cost: price units (the called experts' USD/Mtok summed; token counts unknown, not dollars)")
