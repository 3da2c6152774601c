"""`orchestrator train mot|router-r1`: train the learned routers on CPU for a bounded time.

    orchestrator train mot --out out/mot --store
    orchestrator train router-r1 --out runs/r1 --steps 20
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from experts.errors import OrchestratorError
from orchestrator.cli._common import ConfigOpt, comma_names, console, fail, load_config, run_async

app = typer.Typer(no_args_is_help=True, help="Train learned routers: MoT (router + interaction layers), Router-R1 (GRPO policy).")


@app.command("mot")
def train_mot(
    experts: Annotated[str, typer.Option(help="Comma-separated expert models (packaged ids or directories)")] = "smollm2-135m-instruct,gemma-3-270m",
    data: Annotated[str, typer.Option(help="`mmlu-pro` or an MMLU-Pro-format JSONL file")] = "mmlu-pro",
    out: Annotated[Path, typer.Option(help="Checkpoint directory (mot.pt, train_log.jsonl, metrics.json)")] = Path("out/mot"),
    n_options: Annotated[int, typer.Option(min=2, max=10, help="Options kept per question (gold + seeded distractors)")] = 4,
    max_prompt_chars: Annotated[int, typer.Option(min=50, help="Skip longer prompts")] = 250,
    train_limit: Annotated[int, typer.Option(min=2, help="Training questions (the last --dev-fraction choose the epoch kept)")] = 2000,
    dev_fraction: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.1,
    epochs: Annotated[float, typer.Option(min=0.01, help="Passes over the cached training set")] = 10.0,
    minutes: Annotated[float | None, typer.Option(min=0.01, help="Training time cap (the cache build is not counted)")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after N batches")] = None,
    n_stacks: Annotated[int, typer.Option(min=1, help="Q: stacks (interaction points) per expert")] = 4,
    top_k: Annotated[int, typer.Option(min=2, help="Active experts per query")] = 2,
    d_shared: Annotated[int, typer.Option(min=8, help="Width of the shared latent space")] = 64,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    cache_dir: Annotated[Path | None, typer.Option(help="Frozen-state cache (default ~/.cache/llm-orchestrator/mot)")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Also save the checkpoint as the store artefact mot/default")] = False,
    config: ConfigOpt = None,
) -> None:
    """Train MoT's router and interaction layers (experts frozen, their forwards cached) on CPU.
    The shipped checkpoint (routers/mot/shipped/) is a short run of this with --train-limit 249."""
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
    out: Annotated[Path, typer.Option(help="Run directory: metrics.jsonl, reward.png, summary.json, checkpoints")],
    steps: Annotated[int, typer.Option(min=1, help="GRPO steps")] = 20,
    config: ConfigOpt = None,
    policy: Annotated[str | None, typer.Option(help="A local expert of the config as the initial policy (default smollm2-135m)")] = None,
    policy_path: Annotated[Path | None, typer.Option(help="Start from a checkpoint directory instead")] = None,
    recorded: Annotated[Path | None, typer.Option(help="Recorded outputs as callees (default ../shared/data/recorded/mmlu_pro_tiger)")] = None,
    live: Annotated[bool, typer.Option(help="Use the config's experts as live callees instead of recorded outputs")] = False,
    pool: Annotated[str | None, typer.Option(help="Comma-separated callee names")] = None,
    data: Annotated[Path | None, typer.Option(help="MMLU-Pro JSONL (default ../shared/data/mmlu_pro/test.jsonl)")] = None,
    max_chars: Annotated[int, typer.Option(min=50, help="Train on questions of at most N characters with options")] = 500,
    group_size: Annotated[int, typer.Option(min=2, help="Rollouts per question (GRPO group)")] = 4,
    questions_per_step: Annotated[int, typer.Option(min=1)] = 1,
    max_turns: Annotated[int, typer.Option(min=1, help="Routing turns (then one answer-only turn)")] = 4,
    max_new_tokens: Annotated[int, typer.Option(min=8, help="New tokens per policy turn")] = 64,
    obs_tokens: Annotated[int, typer.Option(min=8, help="Tokens kept of each callee reply")] = 128,
    lr: Annotated[float, typer.Option(help="Learning rate (reference: 1e-6)")] = 1e-6,
    beta: Annotated[float, typer.Option(help="KL coefficient to the reference policy")] = 0.001,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Cost weight α")] = 0.0,
    save_every: Annotated[int, typer.Option(min=1)] = 10,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 2,
    seed: Annotated[int, typer.Option()] = 0,
    prefill: Annotated[str, typer.Option(help='Start each assistant turn with this text, e.g. "<think>" (not in the reference)')] = "",
) -> None:
    """GRPO-train the Router-R1 policy; the checkpoint loads with --router-opt router-r1.policy_path=DIR."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from orchestrator.training import RouterR1Sources, prepare_router_r1
    from routers.router_r1.training.trainer import TrainConfig

    cfg = load_config(config)
    tcfg = TrainConfig(out=out, steps=steps, group_size=group_size, questions_per_step=questions_per_step, max_turns=max_turns,
                       max_new_tokens=max_new_tokens, obs_tokens=obs_tokens, lr=lr, beta=beta, alpha=alpha, save_every=save_every,
                       threads=threads, seed=seed, prefill=prefill, max_chars=max_chars)
    sources = RouterR1Sources(policy=policy, policy_path=policy_path, recorded=recorded, live=live, pool=comma_names(pool), data=data)

    async def go() -> dict[str, Any]:
        async with prepare_router_r1(cfg, sources, tcfg) as run:
            console(stderr=True).print(f"policy {run.policy_dir} · callees {', '.join(run.callees)} · {len(run.questions)} training questions")
            with Progress(TextColumn("[bold]train router-r1"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console(stderr=True)) as bar:
                task = bar.add_task("train", total=steps, info="")

                def on_step(step: int, total: int, rec: Any) -> None:
                    bar.update(task, completed=step, info=f"reward {rec.reward_mean:+.3f} · format {rec.format_ok:.2f} · "
                                                            f"correct {rec.accuracy:.2f} · {rec.seconds:.0f} s")
                    bar.console.print(f"step {step:3d}: reward {rec.reward_mean:+.3f} ± {rec.reward_std:.3f}, format ok "
                                      f"{rec.format_ok:.2f}, correct {rec.accuracy:.2f}, routes {rec.routes_mean:.2f}, "
                                      f"kl {rec.kl:.5f}, {rec.seconds:.0f} s")

                return await run.train(progress=on_step)

    summary = run_async(go)
    console().print_json(json.dumps(summary))
