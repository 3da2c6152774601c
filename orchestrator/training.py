"""Training runs of the learned routers, wired to the orchestrator: the store for MoT's
checkpoint, the config's experts or recorded outputs behind a dispatcher for Router-R1.

    summary = run_training(MoTJob(...))                          # routers.mot.run
    version = await store_mot_checkpoint(config.store, job, summary)

    async with prepare_router_r1(config, RouterR1Sources(recorded=DIR), TrainJob(out=OUT, warmup=384)) as run:
        print(run.job.base_model, run.data.pool, len(run.data.fit), len(run.data.eval))
        summary = await run.train(progress=on_step)   # warm-up, GRPO, evaluation as the job asks

Heavy modules (torch, the trainers) are imported inside the functions, so importing this
module for one router does not load the other's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from experts.spec import OrchestratorConfig
from orchestrator.dispatcher import Dispatcher

if TYPE_CHECKING:
    from routers.mot.run import MoTJob
    from routers.router_r1.training.trainer import Progress, TrainingData, TrainJob


async def store_mot_checkpoint(store_url: str, job: MoTJob, summary: dict[str, Any]) -> int:
    """Save a trained MoT checkpoint as the store artefact `mot/default` (what `--router mot`
    loads when no checkpoint path is configured); returns the artefact's version."""
    from routers.mot.run import ARTEFACT_KIND
    from store.repository import Store

    payload = Path(summary["checkpoint"]).read_bytes()
    async with await Store.open(store_url) as store:
        return await store.save_artefact(ARTEFACT_KIND, "default", payload, {"experts": job.experts, **summary})


class RouterR1Sources(BaseModel):
    """Where a Router-R1 run takes its base policy, its callees, its questions and its split from."""

    policy: str | None = None  # a local expert of the config whose model is the base (default smollm2-135m)
    recorded: Path | None = None  # recorded outputs as callees (default: the shared MMLU-Pro recordings)
    live: bool = False  # the config's experts as callees instead
    pool: list[str] | None = None  # callee names
    data: Path | None = None  # MMLU-Pro JSONL
    fit_fraction: float = 0.3  # the bench's split: its evaluation side is never trained on
    split_seed: int = 0
    warmup_models: list[str] | None = None  # recorded models the warm-up's other pools draw from (None: the default list)


@dataclass
class RouterR1Run:
    """A prepared Router-R1 run: the job (its base model resolved), the split, the callees behind a dispatcher."""

    job: TrainJob
    data: TrainingData
    dispatcher: Dispatcher

    async def train(self, *, progress: Progress | None = None) -> dict[str, Any]:
        """Warm-up, GRPO and evaluation as far as the job asks; `progress(stage, step, total, record)`."""
        from routers.router_r1.training.trainer import run_training

        return await run_training(self.job, self.data, self.dispatcher.submit_or_error, progress=progress)


@asynccontextmanager
async def prepare_router_r1(config: OrchestratorConfig, sources: RouterR1Sources, job: TrainJob) -> AsyncIterator[RouterR1Run]:
    """Resolve the base model, check the starting checkpoint, open the callees (closed on exit)
    and split the questions."""
    from routers.router_r1.training import cli_support

    cli_support.check_policy_path(job.policy_path)
    job = job.model_copy(update={"base_model": cli_support.base_model(config, policy=sources.policy)})
    # Only the warm-up reads other models' outputs (each recorded table costs memory).
    extra = sources.warmup_models if job.warmup else []
    data = cli_support.training_data(config, recorded=sources.recorded, pool=sources.pool, live=sources.live,
                                     policy=sources.policy, data=sources.data, fit_fraction=sources.fit_fraction,
                                     seed=sources.split_seed, extra_models=extra)
    try:
        async with Dispatcher(data.registry) as dispatcher:
            yield RouterR1Run(job, data, dispatcher)
    finally:
        await data.registry.aclose()
