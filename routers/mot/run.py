"""The `orchestrator train mot` job: load experts and data, cache the frozen forwards, train,
checkpoint.

    summary = run_training(MoTJob(out=Path("out/mot")))      # the defaults reproduce the shipped checkpoint

Data: MMLU-Pro reduced to `n_options` options (`data`), prompts of at most `max_prompt_chars`
characters; the first `train_limit` questions of the split's training side (in its hash order),
of which the last `dev_fraction` choose the epoch kept (never the evaluation side, which
`benchmarks/mot_eval.py` scores).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from routers.mot.cache import StateCache
from routers.mot.data import Example, load_examples
from routers.mot.session import load_experts, query_encoder, resolve_expert_ids
from routers.mot.train import TrainData, TrainSettings, new_fusion, train

ARTEFACT_KIND = "mot"


class MoTJob(BaseModel):
    experts: list[str] = Field(default=["smollm2-135m-instruct", "gemma-3-270m"], min_length=2)
    data: str = "mmlu-pro"
    out: Path
    n_options: int = 4
    max_prompt_chars: int = 250
    train_limit: int = 2000
    dev_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    eval_fraction: float = 0.2
    seed: int = 0
    n_stacks: int = 4
    top_k: int = 2
    d_shared: int = 8  # the shipped checkpoint's: the best dev NLL of four (benchmarks/results/mot-full-2000)
    n_heads: int = 4
    epochs: float = 20.0
    max_steps: int | None = None
    minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    cache_dir: Path | None = None
    threads: int = 1  # under CPU contention, 2 threads cost ~3x the CPU time of 1 (OpenMP waits)

    def examples(self, split: str = "train", limit: int | None = None) -> list[Example]:
        return load_examples(self.data, split=split, eval_fraction=self.eval_fraction, seed=self.seed,  # type: ignore[arg-type]
                             n_options=self.n_options, max_prompt_chars=self.max_prompt_chars, limit=limit)

    def data_meta(self) -> dict[str, Any]:
        return {"data": self.data, "n_options": self.n_options, "max_prompt_chars": self.max_prompt_chars,
                "split": {"eval_fraction": self.eval_fraction, "seed": self.seed}, "train_limit": self.train_limit,
                "dev_fraction": self.dev_fraction}


def build_cache(cache: StateCache, experts: list, examples: list[Example], embed: Callable[[list[str]], torch.Tensor],
                log: Callable[[str], None] = print) -> float:
    """The frozen forwards (query embeddings, then each expert), skipping what is cached."""
    t0 = time.monotonic()
    n = cache.build_queries(embed, examples)
    log(f"query embeddings: {n} computed, {len(examples) - n} cached")
    for e in experts:
        todo = len(cache.missing(e, examples))
        log(f"{e.name}: {todo} of {len(examples)} examples to run")
        cache.build(e, examples, on_progress=lambda d, t, name=e.name: log(f"{name}: {d}/{t} ({time.monotonic() - t0:.0f} s)"))
    return time.monotonic() - t0


def run_training(job: MoTJob, log: Callable[[str], None] = print) -> dict[str, Any]:
    torch.set_num_threads(job.threads)
    torch.manual_seed(job.seed)
    from routers.embeddings import SentenceEmbedder

    examples = job.examples("train", job.train_limit)
    if len(examples) < 2:
        raise ValueError(f"too few training examples in {job.data!r} (max_prompt_chars={job.max_prompt_chars})")
    n_dev = int(round(len(examples) * job.dev_fraction))
    train_ex, dev_ex = examples[: len(examples) - n_dev], examples[len(examples) - n_dev :]
    experts = load_experts(resolve_expert_ids(job.experts), job.n_stacks)
    cache = StateCache(job.cache_dir)
    cache_s = build_cache(cache, experts, examples, query_encoder(SentenceEmbedder()), log)
    data = TrainData.from_cache(cache, experts, train_ex)
    dev = TrainData.from_cache(cache, experts, dev_ex) if dev_ex else None
    fusion = new_fusion(experts, top_k=job.top_k, d_shared=job.d_shared, n_heads=job.n_heads)
    settings = TrainSettings(epochs=job.epochs, max_steps=job.max_steps, minutes=job.minutes, batch_size=job.batch_size,
                             lr=job.lr, weight_decay=job.weight_decay, seed=job.seed)

    def on_epoch(row: dict[str, Any]) -> None:
        log(json.dumps(row))

    summary = train(fusion, experts, data, settings, dev=dev, out_dir=job.out, on_epoch=on_epoch,
                    meta={**job.data_meta(), "dev_examples": len(dev_ex)})
    summary.update(cache_s=round(cache_s, 1), dev_examples=len(dev_ex),
                   parameters=sum(p.numel() for p in fusion.parameters()))
    (job.out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (job.out / "job.json").write_text(job.model_dump_json(indent=2, exclude={"out", "cache_dir"}) + "\n")
    return summary
