"""The `orchestrator train mot` job: load experts and data, train, checkpoint, optionally store.

    summary = run_training(MoTJob(experts=["smollm2-135m", "gemma-3-270m"], data="mmlu-pro", minutes=20, out=Path("out/mot")))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from routers.mot.data import load_examples
from routers.mot.session import load_experts, query_encoder, resolve_expert_ids
from routers.mot.train import TrainSettings, new_fusion, train

ARTEFACT_KIND = "mot"


class MoTJob(BaseModel):
    experts: list[str] = Field(min_length=2)
    data: str = "mmlu-pro"
    out: Path
    minutes: float = 20.0
    max_steps: int | None = None
    n_stacks: int = 4
    top_k: int = 2
    d_shared: int = 256
    n_heads: int = 4
    batch_size: int = 4
    lr: float = 1e-3
    eval_fraction: float = 0.2
    max_prompt_chars: int | None = 400
    limit: int | None = None
    seed: int = 0
    threads: int = 2


def run_training(job: MoTJob) -> dict[str, Any]:
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    from routers.embeddings import SentenceEmbedder

    examples = load_examples(job.data, split="train", eval_fraction=job.eval_fraction, seed=job.seed,
                             max_prompt_chars=job.max_prompt_chars, limit=job.limit)
    if not examples:
        raise ValueError(f"no training examples in {job.data!r} (max_prompt_chars={job.max_prompt_chars})")
    experts = load_experts(resolve_expert_ids(job.experts), job.n_stacks)
    fusion = new_fusion(experts, top_k=job.top_k, d_shared=job.d_shared, n_heads=job.n_heads)
    settings = TrainSettings(minutes=job.minutes, max_steps=job.max_steps, batch_size=job.batch_size, lr=job.lr, seed=job.seed)
    meta = {"data": job.data, "split": {"eval_fraction": job.eval_fraction, "seed": job.seed,
                                        "max_prompt_chars": job.max_prompt_chars}, "train_examples": len(examples)}
    start = time.monotonic()
    with Progress(TextColumn("train mot"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("train", total=1.0, info="")

        def on_step(step: int, stats: dict[str, float], frac: float) -> None:
            bar.update(task, completed=min(frac, 1.0), info=f"step {step} lm {stats['lm']:.3f} own {stats['own_nll']:.3f}")

        summary = train(fusion, experts, query_encoder(SentenceEmbedder()), examples, settings,
                        out_dir=job.out, on_step=on_step, meta=meta)
    summary["train_examples"] = len(examples)
    summary["total_wall_s"] = round(time.monotonic() - start, 1)
    return summary
