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
    from_traces: Annotated[bool, typer.Option("--from-traces", help="Fit on the store's traces with feedback (or a checkable answer)")] = False,
    since: Annotated[str | None, typer.Option(help="--from-traces: only traces since this ISO time or this long ago (90m, 12h, 7d)")] = None,
) -> None:
    """Fit a router on fit questions (live experts, MMLU-Pro recorded outputs, or a generic outcomes
    directory, whose train split it fits on), or on rated traffic (`--from-traces`), and store it."""
    from orchestrator.bench.jobs import fit_profile
    from orchestrator.bench.runner import BenchOptions
    from orchestrator.progress import PhaseProgress

    require_router(router)
    require_storable_fit(router)
    if recorded is not None and not recorded.exists():
        fail(f"--recorded {recorded}: no such file or directory")
    options = parse_router_options([f"{router}.{o}" for o in router_opt or []]).get(router, {})
    cfg = load_config(config)
    if from_traces or since is not None:
        if recorded is not None:
            fail("--from-traces fits on the store's traffic; drop --recorded (or --from-traces)")
        build_from_traces(cfg, router, options, parse_since(since), as_json)
        return
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


def artefact_kind_of(router: str) -> str:
    """The artefact kind `router` stores its fits under (exit 2 when it stores none)."""
    from routers.registry import router_class

    require_router(router)
    require_storable_fit(router)
    return str(router_class(router).artefact_kind)


@app.command("list")
def profile_list(
    router: Annotated[str | None, typer.Option("--router", "-r", help="Only this router's fits")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the versions as JSON")] = False,
) -> None:
    """Every stored fit version, per pool: which one each pool routes with (pinned, else newest)."""
    from store import Store

    kind = artefact_kind_of(router) if router else None
    cfg = load_config(config)

    async def go() -> list[Any]:
        async with await Store.open(cfg.store) as store:
            return await store.list_artefacts(kind)

    recs = run_async(go)
    newest: dict[tuple[str, str, str | None], int] = {}
    pinned = {(r.kind, r.name, r.pool_key) for r in recs if r.pinned}
    for r in recs:
        newest[(r.kind, r.name, r.pool_key)] = max(r.version, newest.get((r.kind, r.name, r.pool_key), 0))
    rows = []
    for r in recs:
        group = (r.kind, r.name, r.pool_key)
        in_use = r.pinned or (group not in pinned and newest[group] == r.version)
        pool = list(r.meta.get("pool") or r.meta.get("experts") or [])
        fit = r.meta.get("fit") or {}
        rows.append({"kind": r.kind, "name": r.name, "version": r.version, "pool_key": r.pool_key, "pool": pool,
                     "created_at": r.created_at.isoformat() if r.created_at else None, "pinned": r.pinned,
                     "in_use": in_use and r.pool_key is not None, "source": fit.get("source"), "outcomes": fit.get("outcomes")})
    if as_json:
        console().print_json(json.dumps(rows))
        return
    if not rows:
        console().print("no fits stored" + (f" for {router}" if router else "") + "; `orchestrator profile build` fits one")
        return
    from orchestrator.cli._common import table

    t = table("artefact", "version", "pool", "created", "state", "fitted on", right=("version",))
    for row in rows:
        pool = row["pool"]
        pool_text = f"{len(pool)} experts ({', '.join(pool[:3])}{', …' if len(pool) > 3 else ''}) [{(row['pool_key'] or '-')[:8]}]"
        state = "pinned" if row["pinned"] else ("in use (newest)" if row["in_use"] else "")
        how = row["source"] or ""
        if row["outcomes"]:
            how += f" ({row['outcomes']} outcomes)"
        t.add_row(f"{row['kind']}/{row['name']}", str(row["version"]), pool_text, (row["created_at"] or "")[:19], state, how)
    console().print(t)


@app.command("use")
def profile_use(
    version: Annotated[str, typer.Argument(help="The version to route with, or `latest` to unpin (the newest again)")],
    router: Annotated[str, typer.Option("--router", "-r", help="The router whose fit to pin")] = "symbolic-moe",
    name: Annotated[str, typer.Option(help="The artefact name (the router's `artefact` option)")] = "default",
    pool: PoolOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Pin a fit version for the pool it was fitted for (a rollback): every replica routes with it
    within its `fit_poll_s` (ORCHESTRATOR_FIT_POLL_S, 2 s by default). `latest` unpins (with
    `--pool`, only that pool's pin)."""
    from store import Store

    kind = artefact_kind_of(router)
    cfg = load_config(config)
    names = comma_names(pool)
    if names and len(names) == 1 and names[0] in cfg.pools:
        names = list(cfg.pools[names[0]])
    if version != "latest" and not version.isdigit():
        fail(f"VERSION: expected a version number (see `orchestrator profile list --router {router}`) or `latest`, got {version!r}")

    async def go() -> str:
        async with await Store.open(cfg.store) as store:
            if version == "latest":
                n = await store.unpin_artefact(kind, name, names)
                return f"unpinned {kind}/{name} ({n} pin{'s' if n != 1 else ''} dropped): each pool routes with its newest fit"
            rec = await store.pin_artefact(kind, name, int(version))
            if rec is None:
                fail(f"VERSION: no fitted version {version} of {kind}/{name}; `orchestrator profile list --router {router}` lists them")
            pool_names = rec.meta.get("pool") or []
            return f"pinned {kind}/{name} v{rec.version} for its pool of {len(pool_names)} experts ({', '.join(pool_names)})"

    console().print(run_async(go), soft_wrap=True)


def parse_since(text: str | None) -> Any:
    """`--since`: an ISO time (UTC when it names no zone) or a duration back from now (90m, 12h, 7d)."""
    import re
    from datetime import datetime, timedelta, timezone

    if text is None:
        return None
    m = re.fullmatch(r"(\d+)\s*([smhd])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return datetime.now(timezone.utc) - timedelta(**{unit: int(m.group(1))})
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"--since: expected an ISO time (2026-12-01T09:00) or a duration (90m, 12h, 7d), got {text!r}")
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def build_from_traces(cfg: Any, router: str, options: dict[str, Any], since: Any, as_json: bool) -> None:
    """`profile build --from-traces`: what the refit job does, by hand."""
    from orchestrator.learning import refit_from_traffic
    from orchestrator.pipeline import Runtime

    async def go() -> dict[str, Any]:
        async with await Runtime.create(cfg) as rt:
            return await refit_from_traffic(rt, router, since=since, options=options, meta={"by": "profile build --from-traces"})

    t0 = time.perf_counter()
    out = run_async(go)
    if as_json:
        console().print_json(json.dumps(out, default=str))
    console(stderr=as_json).print(
        f"stored {router} v{out['version']} · fitted on {out['outcomes']} expert outcomes from traffic "
        f"({out['questions']} rated questions{', since ' + since.isoformat() if since else ''}) · pool {', '.join(out['pool'])} · "
        f"{time.perf_counter() - t0:.0f} s", soft_wrap=True)
