"""`orchestrator profile build`: fit a router (profiles, classifiers) and store its artefact.

    orchestrator profile build --router coe --fit-limit 40
    orchestrator profile build --router coe --recorded ../shared/data/recorded/mmlu_pro_tiger --fit-limit 200

On in-process tiny models the default is the short letter-only prompt with a 16-token cap
(`--prompt cot-5shot` for the official format). Ends with one line: the stored version and what
it was fitted on; `--json` prints the whole fit summary instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from orchestrator.cli._common import (
    ConfigOpt, MaxTokensOpt, PoolOpt, PromptOpt, comma_names, console, fail, live_prompt, load_config, parse_router_options,
    prepare_models, require_router, run_async,
)

app = typer.Typer(no_args_is_help=True, help="Fitted router artefacts (profiles, classifiers).")


@app.command("build")
def profile_build(
    router: Annotated[str, typer.Option("--router", "-r", help="The router to fit")] = "symbolic-moe",
    config: ConfigOpt = None,
    recorded: Annotated[Path | None, typer.Option(help="Fit on recorded outputs in DIR instead of live experts")] = None,
    pool: PoolOpt = None,
    fit_limit: Annotated[int | None, typer.Option(min=1, help="Fit on at most N questions (live default: 50)")] = None,
    max_tokens: MaxTokensOpt = None,
    prompt: PromptOpt = "auto",
    seed: Annotated[int, typer.Option()] = 0,
    router_opt: Annotated[list[str] | None, typer.Option("--router-opt", help="KEY=VALUE option of the router (repeat)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole fit summary as JSON on stdout")] = False,
) -> None:
    """Fit a router on fit questions (live experts, MMLU-Pro recorded outputs, or a generic outcomes
    directory, whose train split it fits on) and store it."""
    from orchestrator.bench.jobs import fit_profile
    from orchestrator.bench.runner import BenchOptions
    from orchestrator.progress import PhaseProgress

    require_router(router)
    require_storable_fit(router)
    if recorded is not None and not recorded.exists():
        fail(f"--recorded {recorded}: no such file or directory")
    options = parse_router_options([f"{router}.{o}" for o in router_opt or []]).get(router, {})
    cfg = load_config(config)
    prompt, max_tokens = live_prompt(cfg, comma_names(pool), prompt, max_tokens, faithful=("zero-shot", 256),
                                     recorded=recorded is not None)
    opts = BenchOptions(recorded=recorded, pool=comma_names(pool), seed=seed,
                        fit_limit=fit_limit, prompt=prompt, max_tokens=max_tokens, named_pools=cfg.pools)
    if recorded is None:
        prepare_models(cfg)
    display = PhaseProgress(title="profile build", steps=["prepare", "fit", router])
    t0 = time.perf_counter()
    out = run_async(lambda: fit_profile(cfg, opts, router, options, progress=display))
    if as_json:
        console().print_json(json.dumps(out, default=str))
    console(stderr=as_json).print(closing_line(out, opts, time.perf_counter() - t0), soft_wrap=True)


def require_storable_fit(router: str) -> None:
    """Exit 2 unless `router` is fitted and stores what it learnt (what `profile build` is for)."""
    from orchestrator.cli.train import app as train_app
    from routers.base import Router
    from routers.registry import router_class, router_names

    def storable(name: str) -> bool:
        cls = router_class(name)
        return cls.fit is not Router.fit and getattr(cls, "artefact_kind", None) is not None

    choices = ", ".join(n for n in router_names() if storable(n))
    cls = router_class(router)
    if storable(router):
        return
    if router in {c.name for c in train_app.registered_commands}:
        fail(f"router {router!r} is trained, not fitted: run `orchestrator train {router}`")
    if cls.fit is Router.fit:
        fail(f"router {router!r} needs no fit, so there is nothing to build; `profile build` fits: {choices}")
    fail(f"router {router!r} stores no fit (every `bench` run fits it afresh); `profile build` fits: {choices}")


def closing_line(out: dict[str, Any], opts: Any, seconds: float) -> str:
    """`stored coe v3 (artefact coe-router/default) · fitted on 40 questions: live expert runs, ...`"""
    stored = out.get("stored")
    head = (f"stored {out['router']} v{stored['version']} (artefact {stored['kind']}/{stored['name']})" if stored
            else f"fitted {out['router']} (nothing stored)")
    how = "" if opts.recorded else f", prompt {opts.prompt}, at most {opts.max_tokens} new tokens"
    return (f"{head} · fitted on {out['fit_questions']} MMLU-Pro questions: {out['source']}{how} · pool "
            f"{', '.join(out['pool'])} · {seconds:.0f} s")
