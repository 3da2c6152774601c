"""`orchestrator train mot|router-r1`: train the learned routers on CPU for a bounded time.

    orchestrator train mot --out out/mot --store
    orchestrator train router-r1 --out runs/r1 --warmup 384 --evaluate 200
    orchestrator train router-r1 --out runs/r1-grpo --policy-path runs/r1/checkpoint-warmup --steps 40
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from experts.errors import OrchestratorError
from orchestrator.cli._common import ConfigOpt, comma_names, console, fail, load_config, run_async

app = typer.Typer(no_args_is_help=True, help="Train learned routers: MoT (router + interaction layers), Router-R1 (warm-up, GRPO, evaluation).")


@app.command("mot")
def train_mot(
    experts: Annotated[str, typer.Option(help="Comma-separated expert models (packaged ids or directories)")] = "smollm2-135m-instruct,gemma-3-270m",
    data: Annotated[str, typer.Option(help="`mmlu-pro` or an MMLU-Pro-format JSONL file")] = "mmlu-pro",
    out: Annotated[Path, typer.Option(help="Checkpoint directory (mot.pt, train_log.jsonl, metrics.json)")] = Path("out/mot"),
    n_options: Annotated[int, typer.Option(min=2, max=10, help="Options kept per question (gold + seeded distractors)")] = 4,
    max_prompt_chars: Annotated[int, typer.Option(min=50, help="Skip longer prompts")] = 250,
    train_limit: Annotated[int, typer.Option(min=2, help="Training questions (the last --dev-fraction choose the epoch kept)")] = 2000,
    dev_fraction: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.1,
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the cached training set")] = 20.0,
    minutes: Annotated[float | None, typer.Option(min=0.01, help="Training time cap (the cache build is not counted)")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after N batches")] = None,
    n_stacks: Annotated[int, typer.Option(min=1, help="Q: stacks (interaction points) per expert")] = 4,
    top_k: Annotated[int, typer.Option(min=2, help="Active experts per query")] = 2,
    d_shared: Annotated[int, typer.Option(min=8, help="Width of the shared latent space")] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    cache_dir: Annotated[Path | None, typer.Option(help="Frozen-state cache (default ~/.cache/llm-orchestrator/mot)")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Also save the checkpoint as the store artefact mot/default")] = False,
    config: ConfigOpt = None,
) -> None:
    """Train MoT's router and interaction layers (experts frozen, their forwards cached) on CPU.
    The shipped checkpoint (routers/mot/shipped/) is this job with its defaults."""
    from orchestrator.training import store_mot_checkpoint
    from routers.mot.run import MoTJob, run_training

    job = MoTJob(experts=comma_names(experts) or [], data=data, out=out, n_options=n_options,
                 max_prompt_chars=max_prompt_chars, train_limit=train_limit, dev_fraction=dev_fraction, epochs=epochs,
                 minutes=minutes, max_steps=max_steps, n_stacks=n_stacks, top_k=top_k, d_shared=d_shared,
                 batch_size=batch_size, lr=lr, cache_dir=cache_dir, threads=threads, seed=seed)
    try:
        summary = run_training(job, log=lambda line: console(stderr=True).print(line, markup=False, highlight=False))
    except (OrchestratorError, ValueError) as e:
        fail(str(e))
    if store:
        cfg = load_config(config)
        summary["artefact_version"] = run_async(lambda: store_mot_checkpoint(cfg.store, job, summary))
    console().print_json(json.dumps(summary, default=str))


@app.command("router-r1")
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

    from orchestrator.training import RouterR1Sources, prepare_router_r1
    from routers.router_r1.training.trainer import TrainJob

    if not (warmup or steps or evaluate):
        fail("nothing to do: pass --warmup N, --steps N and/or --evaluate N")
    cfg = load_config(config)
    job = TrainJob(out=out, policy_path=policy_path, warmup=warmup, warmup_lr=warmup_lr, steps=steps, group_size=group_size,
                   questions_per_step=questions_per_step, grpo_max_chars=grpo_max_chars, lr=lr, beta=beta, alpha=alpha,
                   save_every=save_every, max_turns=max_turns, max_new_tokens=max_new_tokens, obs_tokens=obs_tokens,
                   prefill=prefill, evaluate=evaluate, threads=threads, seed=seed,
                   command=_command_line(ctx, ["orchestrator", "train", "router-r1"]))
    sources = RouterR1Sources(policy=policy, recorded=recorded, live=live, pool=comma_names(pool), data=data,
                              fit_fraction=fit_fraction, split_seed=split_seed,
                              warmup_models=None if warmup_models is None else comma_names(warmup_models) or [])

    async def go() -> dict[str, Any]:
        async with prepare_router_r1(cfg, sources, job) as run:
            console(stderr=True).print(f"base {run.job.base_model} · callees {', '.join(run.data.pool)} · {len(run.data.fit)} fit / "
                                       f"{len(run.data.eval)} evaluation questions")
            with Progress(TextColumn("[bold]train router-r1 {task.fields[stage]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), console=console(stderr=True)) as bar:
                task = bar.add_task("train", total=1, stage="")

                def on_step(stage: str, step: int, total: int, rec: dict[str, Any]) -> None:
                    bar.update(task, completed=step, total=total, stage=stage)
                    if stage == "warmup":
                        bar.console.print(f"warm-up {step:4d}: loss {rec['loss']:.4f}, {rec['tokens']} tokens, {rec['seconds']:.0f} s")
                    elif stage == "grpo":
                        bar.console.print(f"step {step:3d}: reward {rec['reward_mean']:+.3f} ± {rec['reward_std']:.3f}, format ok "
                                          f"{rec['format_ok']:.2f}, correct {rec['accuracy']:.2f}, calls {rec['calls']}, "
                                          f"kl {rec['kl']:.5f}, {rec['seconds']:.0f} s")

                return await run.train(progress=on_step)

    try:
        summary = run_async(go)
    except ValueError as e:
        fail(str(e))
    console().print_json(json.dumps(summary, default=str))


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
