"""`orchestrator profile build`: fit a router (profiles, classifiers) and store its artefact.

    orchestrator profile build --router coe --recorded ../shared/data/recorded/mmlu_pro_tiger --fit-limit 200
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._common import ConfigOpt, PoolOpt, console, load_config, parse_router_options, require_router, run_async

app = typer.Typer(no_args_is_help=True, help="Fitted router artefacts (profiles, classifiers).")


@app.command("build")
def profile_build(
    router: Annotated[str, typer.Option("--router", "-r", help="The router to fit")] = "symbolic-moe",
    config: ConfigOpt = None,
    recorded: Annotated[Path | None, typer.Option(help="Fit on recorded outputs in DIR instead of live experts")] = None,
    pool: PoolOpt = None,
    fit_limit: Annotated[int | None, typer.Option(min=1, help="Fit on at most N questions")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Max new tokens per live expert call")] = 256,
    prompt: Annotated[str, typer.Option(help="cot-5shot or zero-shot (live)")] = "zero-shot",
    seed: Annotated[int, typer.Option()] = 0,
    router_opt: Annotated[list[str] | None, typer.Option("--router-opt", help="KEY=VALUE option of the router (repeat)")] = None,
) -> None:
    """Fit a router on fit questions (live experts, MMLU-Pro recorded outputs, or a generic outcomes
    directory, whose train split it fits on) and store it."""
    from orchestrator.bench.jobs import fit_profile
    from orchestrator.bench.runner import BenchOptions
    from orchestrator.progress import PhaseProgress

    require_router(router)
    options = parse_router_options([f"{router}.{o}" for o in router_opt or []]).get(router, {})
    cfg = load_config(config)
    opts = BenchOptions(recorded=recorded, pool=[p.strip() for p in pool.split(",")] if pool else None, seed=seed,
                        fit_limit=fit_limit, prompt=prompt, max_tokens=max_tokens, named_pools=cfg.pools)

    out = run_async(lambda: fit_profile(cfg, opts, router, options, progress=PhaseProgress()))
    console().print_json(json.dumps(out, default=str))
