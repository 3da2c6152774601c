"""The `orchestrator` command line.

    orchestrator ask "Which enzyme unwinds DNA?" --router all-vote
    orchestrator experts check --config experts.yaml
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from experts.errors import OrchestratorError
from routers.types import Query, RoutingError
from routers.registry import router_names
from store.db import StoreUnavailable

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Compound multi-LLM routing orchestrator.")
experts_app = typer.Typer(no_args_is_help=True, help="The expert registry.")
app.add_typer(experts_app, name="experts")
keys_app = typer.Typer(no_args_is_help=True, help="Gateway API keys.")
app.add_typer(keys_app, name="keys")
profile_app = typer.Typer(no_args_is_help=True, help="Fitted router artefacts (profiles, classifiers).")
app.add_typer(profile_app, name="profile")
train_app = typer.Typer(no_args_is_help=True, help="Train learned routers: MoT (router + interaction layers), Router-R1 (GRPO policy).")
app.add_typer(train_app, name="train")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (default: embedded default)")]


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; user-caused errors print one or two lines and exit 2, not a traceback."""
    try:
        return asyncio.run(fn())
    except (OrchestratorError, RoutingError, StoreUnavailable) as e:
        _console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _console(stderr=True).print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


def _load_config(config: Path | None):  # type: ignore[no-untyped-def]
    from orchestrator.settings import resolve_config

    try:
        return resolve_config(config)
    except OrchestratorError as e:
        _console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None


@app.command()
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
        _console(stderr=True).print("[red]error:[/red] the question is empty")
        raise typer.Exit(2)
    cfg = _load_config(config)
    router_name = router or cfg.default_router
    if router_name not in router_names():
        _console(stderr=True).print(f"[red]error:[/red] unknown router {router_name!r}; available: {', '.join(router_names())}")
        raise typer.Exit(2)

    async def go() -> dict[str, Any]:
        async with await Runtime.create(cfg) as rt:
            options = {"expert": expert} if expert and router_name == "single" else None
            if options:
                rt.config.routers.setdefault("single", {}).update(options)
            query = Query(text=question, choices=tuple(choices) if choices else None, max_tokens=max_tokens)
            result = await rt.answer(query, router_name)
            return _result_json(result)

    out = run_async(go)
    if as_json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        _print_result(out)


def _result_json(result: Any) -> dict[str, Any]:
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


def _short(text: str | None, n: int = 60) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _print_result(out: dict[str, Any]) -> None:
    con = _console()
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
            _short(why, 40),
            _short(c["answer"] or c["output"], 40),
            f"{c['prompt_tokens']}/{c['completion_tokens']}" + ("~" if c["tokens_estimated"] else ""),
            f"{c['cost_usd']:.6f}",
            f"{c['latency_s']:.2f}",
            "ok" if c["error_kind"] is None else f"[red]{c['error_kind']}[/red]: {_short(c['error_message'], 40)}",
        )
    con.print(table)
    con.print(
        f"tokens {out['prompt_tokens']}/{out['completion_tokens']} · cost ${out['cost_usd']:.6f} · "
        f"latency {out['latency_s']:.2f} s · trace {out['trace_id']}"
    )


@experts_app.command("list")
def experts_list(config: ConfigOpt = None) -> None:
    """List registered experts."""
    cfg = _load_config(config)
    table = Table()
    for col in ("name", "backend", "model", "where", "price in/out $/Mtok", "batch", "description"):
        table.add_column(col)
    for s in cfg.experts:
        table.add_row(
            s.name, s.backend.value, s.model, s.base_url or s.path or "in-process",
            f"{s.price_per_mtok.input:g}/{s.price_per_mtok.output:g}", str(s.max_batch_size), _short(s.description, 50),
        )
    _console().print(table)


@experts_app.command("check")
def experts_check(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds per probe")] = 10.0,
) -> None:
    """Probe every expert; exits 1 if any is down."""
    from experts.registry import ExpertRegistry

    cfg = _load_config(config)

    async def go():  # type: ignore[no-untyped-def]
        reg = ExpertRegistry.from_specs(cfg.experts)
        try:
            return await reg.check(timeout)
        finally:
            await reg.aclose()

    statuses = run_async(go)
    table = Table()
    for col in ("expert", "backend", "status", "detail"):
        table.add_column(col)
    for st in statuses:
        table.add_row(st.name, st.backend, "[green]up[/green]" if st.healthy else "[red]down[/red]", st.detail)
    _console().print(table)
    down = [s.name for s in statuses if not s.healthy]
    if down:
        _console(stderr=True).print(f"[red]{len(down)} expert(s) down:[/red] {', '.join(down)}")
        raise typer.Exit(1)


@app.command()
def trace(
    trace_id: Annotated[str, typer.Argument(help="A trace id printed by `ask`")],
    config: ConfigOpt = None,
) -> None:
    """Print a stored trace as JSON."""
    from store.repository import Store

    cfg = _load_config(config)

    async def go():  # type: ignore[no-untyped-def]
        async with await Store.open(cfg.store) as store:
            return await store.get_trace(trace_id)

    rec = run_async(go)
    if rec is None:
        _console(stderr=True).print(f"[red]error:[/red] no trace {trace_id!r} in {cfg.store}")
        raise typer.Exit(2)
    sys.stdout.write(rec.model_dump_json(indent=2) + "\n")


def _parse_router_options(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """`--router-opt coe.budget=0.5` → {"coe": {"budget": 0.5}} (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for v in values or []:
        if "=" not in v or "." not in v.split("=", 1)[0]:
            raise typer.BadParameter(f"{v!r}: expected ROUTER.KEY=VALUE, e.g. random.k=3", param_hint="--router-opt")
        key, value = v.split("=", 1)
        router, opt = key.split(".", 1)
        out.setdefault(router, {})[opt] = yaml.safe_load(value)
    return out


@app.command()
def bench(
    dataset: Annotated[str, typer.Option(help="mmlu-pro or gpqa")] = "mmlu-pro",
    router: Annotated[list[str] | None, typer.Option("--router", "-r", help="A router to compare (repeat); NAME@LABEL runs a second configuration")] = None,
    recorded: Annotated[Path | None, typer.Option(help="Evaluate on replayed recorded outputs in DIR")] = None,
    fit_recorded: Annotated[Path | None, typer.Option(help="Fit on recorded outputs in DIR (ids kept disjoint)")] = None,
    pool: Annotated[str | None, typer.Option(help="Comma-separated expert names, or a named pool (small16)")] = None,
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
    from orchestrator.bench.runner import BenchOptions, run_benchmark
    from orchestrator.progress import PhaseProgress

    routers = router or ["best-single", "all-vote", "oracle"]
    unknown = [r for r in routers if r.split("@", 1)[0] not in router_names()]
    if unknown:
        _console(stderr=True).print(f"[red]error:[/red] unknown router(s) {', '.join(unknown)}; available: {', '.join(router_names())}")
        raise typer.Exit(2)
    if dataset not in ("mmlu-pro", "gpqa"):
        _console(stderr=True).print(f"[red]error:[/red] --dataset must be mmlu-pro or gpqa, got {dataset!r}")
        raise typer.Exit(2)
    if prompt not in ("cot-5shot", "zero-shot"):
        _console(stderr=True).print(f"[red]error:[/red] --prompt must be cot-5shot or zero-shot, got {prompt!r}")
        raise typer.Exit(2)
    for p, flag in ((recorded, "--recorded"), (fit_recorded, "--fit-recorded"), (data, "--data")):
        if p is not None and not p.exists():
            _console(stderr=True).print(f"[red]error:[/red] {flag} {p}: no such file or directory")
            raise typer.Exit(2)
    cfg = _load_config(config)
    opts = BenchOptions(
        dataset=dataset, routers=list(dict.fromkeys(routers)), recorded=recorded, fit_recorded=fit_recorded,
        pool=[p.strip() for p in pool.split(",") if p.strip()] if pool else None, data=data, limit=limit, seed=seed,
        out=out, fit_fraction=fit_fraction, fit_limit=fit_limit, prompt=prompt, max_tokens=max_tokens,
        gpqa_subset=gpqa_subset, gpqa_password=gpqa_password, router_options=_parse_router_options(router_opt),
        residency=residency, fresh=fresh, named_pools=cfg.pools,
    )

    async def go() -> dict[str, Any]:
        from experts.registry import ExpertRegistry
        from store.repository import Store

        registry = None if recorded else ExpertRegistry.from_specs(cfg.experts)
        async with await Store.open(cfg.store) as store:
            try:
                with PhaseProgress(enabled=not as_json) as progress:
                    return await run_benchmark(opts, store, registry=registry, progress=progress)
            finally:
                if registry is not None:
                    await registry.aclose()

    report = run_async(go)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    _print_bench(report)
    if out is not None:
        _console().print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'plot.png'}")


def _print_bench(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['dataset']}: {report['n_questions']} questions, pool of {len(report['pool'])}", title_justify="left")
    for col in ("router", "accuracy", "95% CI", "calls/q", "agg/q", "cost $/q", "unparsed", "wall s"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for name, m in sorted(report["routers"].items(), key=lambda kv: -kv[1]["accuracy"]):
        table.add_row(
            name + (" (upper bound)" if m.get("upper_bound") else ""), f"{m['accuracy']:.3f}",
            f"{m['ci95'][0]:.3f}–{m['ci95'][1]:.3f}", f"{m['expert_calls_per_question']:.2f}",
            f"{m['aggregator_calls_per_question']:.2f}", f"{m['cost_per_question_usd']:.6f}", str(m["unparsed"]), f"{m['wall_s']:.1f}",
        )
    con = _console()
    con.print(table)
    p = report.get("paired_test")
    if p:
        con.print(f"paired {p['test']}: {p['a']} vs {p['b']}: p = {p['p_value']:.3g} ({p['a_only']} vs {p['b_only']} discordant)")
    con.print(f"fit: {report['fit']}")


@profile_app.command("build")
def profile_build(
    router: Annotated[str, typer.Option("--router", "-r", help="The router to fit")] = "symbolic-moe",
    config: ConfigOpt = None,
    recorded: Annotated[Path | None, typer.Option(help="Fit on recorded outputs in DIR instead of live experts")] = None,
    pool: Annotated[str | None, typer.Option(help="Comma-separated expert names, or a named pool (small16)")] = None,
    fit_limit: Annotated[int | None, typer.Option(min=1, help="Fit on at most N questions")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Max new tokens per live expert call")] = 256,
    prompt: Annotated[str, typer.Option(help="cot-5shot or zero-shot (live)")] = "zero-shot",
    seed: Annotated[int, typer.Option()] = 0,
    router_opt: Annotated[list[str] | None, typer.Option("--router-opt", help="KEY=VALUE option of the router (repeat)")] = None,
) -> None:
    """Fit a router on MMLU-Pro fit questions (live experts or recorded outputs) and store it."""
    from orchestrator.bench.runner import BenchOptions, BenchmarkRunner
    from orchestrator.progress import PhaseProgress
    from store.repository import Store

    if router not in router_names():
        _console(stderr=True).print(f"[red]error:[/red] unknown router {router!r}; available: {', '.join(router_names())}")
        raise typer.Exit(2)
    options = _parse_router_options([f"{router}.{o}" for o in router_opt or []]).get(router, {})
    cfg = _load_config(config)

    async def go() -> dict[str, Any]:
        from experts.registry import ExpertRegistry

        opts = BenchOptions(recorded=recorded, pool=[p.strip() for p in pool.split(",")] if pool else None, seed=seed,
                            fit_limit=fit_limit, prompt=prompt, max_tokens=max_tokens, named_pools=cfg.pools)
        registry = None if recorded else ExpertRegistry.from_specs(cfg.experts)
        async with await Store.open(cfg.store) as store:
            await store.upsert_experts([s.model_dump(mode="json") for s in cfg.experts])
            try:
                with PhaseProgress() as progress:
                    return await BenchmarkRunner(opts, store, registry=registry, progress=progress).fit_router(router, options)
            finally:
                if registry is not None:
                    await registry.aclose()

    out = run_async(go)
    _console().print_json(json.dumps(out, default=str))


@train_app.command("mot")
def train_mot(
    experts: Annotated[str, typer.Option(help="Comma-separated expert models (packaged ids or directories)")] = "smollm2-135m-instruct,gemma-3-270m",
    data: Annotated[str, typer.Option(help="`mmlu-pro` or a JSONL file of prompt/target pairs")] = "mmlu-pro",
    out: Annotated[Path, typer.Option(help="Checkpoint directory (mot.pt, train_log.jsonl)")] = Path("out/mot"),
    minutes: Annotated[float, typer.Option(min=0.01, help="Training time budget")] = 20.0,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after N batches")] = None,
    n_stacks: Annotated[int, typer.Option(min=1, help="Q: stacks (interaction points) per expert")] = 4,
    top_k: Annotated[int, typer.Option(min=2, help="Active experts per query")] = 2,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    max_prompt_chars: Annotated[int | None, typer.Option(help="Skip longer prompts")] = 400,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Also save the checkpoint as the store artefact mot/default")] = False,
    config: ConfigOpt = None,
) -> None:
    """Train MoT's router and interaction layers (experts frozen) on CPU for a bounded time."""
    from routers.mot.run import ARTEFACT_KIND, MoTJob, run_training

    job = MoTJob(experts=[e.strip() for e in experts.split(",") if e.strip()], data=data, out=out, minutes=minutes,
                 max_steps=max_steps, n_stacks=n_stacks, top_k=top_k, batch_size=batch_size,
                 max_prompt_chars=max_prompt_chars, threads=threads, seed=seed)
    try:
        summary = run_training(job)
    except (OrchestratorError, ValueError) as e:
        _console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    if store:
        from store.repository import Store

        cfg = _load_config(config)

        async def save() -> int:
            st = await Store.open(cfg.store)
            try:
                path = Path(summary["checkpoint"])
                return await st.save_artefact(ARTEFACT_KIND, "default", path.read_bytes(), {"experts": job.experts, **summary})
            finally:
                await st.aclose()

        summary["artefact_version"] = run_async(save)
    _console().print_json(json.dumps(summary, default=str))


@train_app.command("router-r1")
def train_router_r1(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Run directory: metrics*.jsonl, reward.png, eval.json, summary.json, checkpoints")],
    steps: Annotated[int, typer.Option(min=0, help="GRPO steps (from --policy-path, or from this run's warm-up)")] = 0,
    warmup: Annotated[int, typer.Option(min=0, help="Supervised warm-up: demonstrations from the recorded outputs")] = 0,
    evaluate: Annotated[int, typer.Option(min=0, help="Then evaluate greedily on N evaluation questions (the bench's sample)")] = 0,
    config: ConfigOpt = None,
    policy: Annotated[str | None, typer.Option(help="A local expert of the config whose model is the base (default smollm2-135m)")] = None,
    policy_path: Annotated[Path | None, typer.Option(help="Start from this checkpoint (GRPO: also the KL reference)")] = None,
    recorded: Annotated[Path | None, typer.Option(help="Recorded outputs as callees (default ../shared/data/recorded/mmlu_pro_tiger)")] = None,
    live: Annotated[bool, typer.Option(help="Use the config's experts as live callees instead of recorded outputs")] = False,
    pool: Annotated[str | None, typer.Option(help="Comma-separated callee names")] = None,
    data: Annotated[Path | None, typer.Option(help="MMLU-Pro JSONL (default ../shared/data/mmlu_pro/test.jsonl)")] = None,
    fit_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fit side of the split (bench's --fit-fraction)")] = 0.3,
    split_seed: Annotated[int, typer.Option(help="Seed of the split and of the evaluation sample (bench's --seed)")] = 0,
    group_size: Annotated[int, typer.Option(min=2, help="Rollouts per question (GRPO group)")] = 6,
    questions_per_step: Annotated[int, typer.Option(min=1)] = 2,
    grpo_max_chars: Annotated[int, typer.Option(min=50, help="GRPO on fit questions of at most N characters with options (CPU time)")] = 500,
    max_turns: Annotated[int, typer.Option(min=1, help="Routing turns (then one answer-only turn)")] = 3,
    max_new_tokens: Annotated[int, typer.Option(min=8, help="New tokens per policy turn")] = 64,
    obs_tokens: Annotated[int, typer.Option(min=8, help="Tokens kept of each callee reply (its tail)")] = 48,
    lr: Annotated[float, typer.Option(help="GRPO learning rate (LoRA)")] = 1e-4,
    warmup_lr: Annotated[float, typer.Option(help="Warm-up learning rate (LoRA)")] = 5e-4,
    warmup_models: Annotated[str | None, typer.Option(help="Comma-separated recorded models the warm-up's other pools draw from")] = None,
    beta: Annotated[float, typer.Option(help="KL coefficient to the reference policy")] = 0.001,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Cost weight α")] = 0.0,
    save_every: Annotated[int, typer.Option(min=1)] = 25,
    threads: Annotated[int, typer.Option(min=1, help="torch threads (1 on a shared machine: threads that wait on each other are slower)")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    prefill: Annotated[str, typer.Option(help='Start each assistant turn with this text, e.g. "<think>" (not in the reference)')] = "",
) -> None:
    """Warm up (supervised), GRPO-train and evaluate the Router-R1 policy (a LoRA adapter);
    the checkpoint loads with --router-opt router-r1.policy_path=DIR."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.dispatcher import Dispatcher
    from routers.router_r1.training import cli_support
    from routers.router_r1.training.trainer import TrainJob, run_training

    command = _command_line(ctx, ["orchestrator", "train", "router-r1"])
    cfg = _load_config(config)
    if not (warmup or steps or evaluate):
        _console(stderr=True).print("[red]error:[/red] nothing to do: pass --warmup N, --steps N and/or --evaluate N")
        raise typer.Exit(2)

    async def go() -> dict[str, Any]:
        cli_support.check_policy_path(policy_path)
        job = TrainJob(out=out, base_model=cli_support.base_model(cfg, policy=policy), policy_path=policy_path, warmup=warmup,
                       warmup_lr=warmup_lr, steps=steps, group_size=group_size, questions_per_step=questions_per_step, grpo_max_chars=grpo_max_chars, lr=lr,
                       beta=beta, alpha=alpha, save_every=save_every, max_turns=max_turns, max_new_tokens=max_new_tokens,
                       obs_tokens=obs_tokens, prefill=prefill, evaluate=evaluate, threads=threads, seed=seed,
                       command=command)
        names = [p.strip() for p in pool.split(",") if p.strip()] if pool else None
        extra = [m.strip() for m in warmup_models.split(",") if m.strip()] if warmup_models is not None else None
        extra = extra if warmup else []  # only the warm-up reads other models' outputs (each table costs memory)
        tdata = cli_support.training_data(cfg, recorded=recorded, pool=names, live=live, policy=policy, data=data,
                                          fit_fraction=fit_fraction, seed=split_seed, extra_models=extra)
        _console(stderr=True).print(f"base {job.base_model} · callees {', '.join(tdata.pool)} · {len(tdata.fit)} fit / "
                                    f"{len(tdata.eval)} evaluation questions")
        try:
            async with Dispatcher(tdata.registry) as dispatcher:
                with Progress(TextColumn("[bold]train router-r1 {task.fields[stage]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                              TimeElapsedColumn(), console=_console(stderr=True)) as bar:
                    task = bar.add_task("train", total=1, stage="")

                    def on_step(stage: str, step: int, total: int, rec: dict[str, Any]) -> None:
                        bar.update(task, completed=step, total=total, stage=stage)
                        if stage == "warmup":
                            bar.console.print(f"warm-up {step:4d}: loss {rec['loss']:.4f}, {rec['tokens']} tokens, {rec['seconds']:.0f} s")
                        elif stage == "grpo":
                            bar.console.print(f"step {step:3d}: reward {rec['reward_mean']:+.3f} ± {rec['reward_std']:.3f}, format ok "
                                              f"{rec['format_ok']:.2f}, correct {rec['accuracy']:.2f}, calls {rec['calls']}, "
                                              f"kl {rec['kl']:.5f}, {rec['seconds']:.0f} s")

                    return await run_training(job, tdata, dispatcher.submit_or_error, progress=on_step)
        finally:
            await tdata.registry.aclose()

    try:
        summary = run_async(go)
    except ValueError as e:
        _console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    _console().print_json(json.dumps(summary, default=str))


def _command_line(ctx: typer.Context, prefix: list[str]) -> str:
    """The running command with the options given (not the defaults), for a run's records."""
    import shlex

    import click

    parts = list(prefix)
    for p in ctx.command.params:
        value = ctx.params.get(p.name or "")
        if value is None or value == p.default or not isinstance(p, click.Option):
            continue
        parts += [p.opts[0]] if p.is_flag else [p.opts[0], shlex.quote(str(value))]
    return " ".join(parts)


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Run the OpenAI-compatible gateway."""
    import logging

    import uvicorn

    from orchestrator.gateway.app import GatewaySettings, create_app

    cfg = _load_config(config)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(levelname)s %(name)s: %(message)s")
    app_ = create_app(cfg, GatewaySettings())
    _console(stderr=True).print(f"serving on http://{host}:{port}/v1 (store {cfg.store})")
    uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=False)


@app.command()
def loadtest(
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels")] = "1,16,64",
    seconds: Annotated[float, typer.Option(min=1, help="Seconds per level and target")] = 10,
    compare_litellm: Annotated[bool, typer.Option("--compare-litellm", help="Also measure the LiteLLM proxy (own venv)")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Logs, configs and the trace database (default: a temp dir)")] = None,
) -> None:
    """Gateway overhead against an instant loopback upstream: direct vs ours (vs LiteLLM)."""
    import tempfile

    from orchestrator.loadtest.driver import DriverMissing, wrk_path
    from orchestrator.loadtest.report import print_report
    from orchestrator.loadtest.run import run_loadtest

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"{concurrency!r}: expected positive integers such as 1,16,64", param_hint="--concurrency") from None
    try:
        wrk_path()
    except DriverMissing as e:
        _console(stderr=True).print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    work = workdir or Path(tempfile.mkdtemp(prefix="orchestrator-loadtest-"))
    err = _console(stderr=True)
    with err.status("load test") as status:
        result = run_async(lambda: run_loadtest(levels, seconds=seconds, compare_litellm=compare_litellm, workdir=work,
                                                progress=lambda msg: status.update(f"load test: {msg}")))
    print_report(_console(), result)
    if json_file is not None:
        json_file.write_text(json.dumps(result.contract_json(), indent=2))
        err.print(f"wrote {json_file}")


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="A label for the key")], config: ConfigOpt = None) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from orchestrator.gateway.security import new_api_key
    from store.repository import Store

    cfg = _load_config(config)
    key_id, key, digest = new_api_key()

    async def go() -> None:
        async with await Store.open(cfg.store) as store:
            await store.create_api_key(key_id, name, digest)

    run_async(go)
    _console(stderr=True).print(f"created {key_id} ({name}); store it now, it is not shown again:")
    sys.stdout.write(key + "\n")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id printed by `keys create`")], config: ConfigOpt = None) -> None:
    """Revoke an API key."""
    from store.repository import Store

    cfg = _load_config(config)

    async def go() -> bool:
        async with await Store.open(cfg.store) as store:
            return await store.revoke_api_key(key_id)

    if not run_async(go):
        _console(stderr=True).print(f"[red]error:[/red] no key {key_id!r}")
        raise typer.Exit(2)
    _console().print(f"revoked {key_id}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
