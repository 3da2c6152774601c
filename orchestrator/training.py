"""Training runs of the learned routers, wired to the orchestrator: the store for MoT's
checkpoint, the config's experts or recorded outputs behind a dispatcher for Router-R1.

    summary = run_training(MoTJob(...))                          # routers.mot.run
    version = await store_mot_checkpoint(config.store, job, summary)

    async with prepare_router_r1(config, RouterR1Sources(recorded=DIR), TrainConfig(out=OUT)) as run:
        print(run.policy_dir, run.callees, len(run.questions))
        summary = await run.train(progress=on_step)

Heavy modules (torch, the trainers) are imported inside the functions, so importing this
module for one router does not load the other's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from experts.registry import ExpertRegistry
from experts.spec import OrchestratorConfig
from orchestrator.dispatcher import Dispatcher

if TYPE_CHECKING:
    from evals.datasets import Question
    from routers.mot.run import MoTJob
    from routers.router_r1.training.trainer import StepRecord, TrainConfig


async def store_mot_checkpoint(store_url: str, job: MoTJob, summary: dict[str, Any]) -> int:
    """Save a trained MoT checkpoint as the store artefact `mot/default` (what `--router mot`
    loads when no checkpoint path is configured); returns the artefact's version."""
    from routers.mot.run import ARTEFACT_KIND
    from store.repository import Store

    payload = Path(summary["checkpoint"]).read_bytes()
    async with await Store.open(store_url) as store:
        return await store.save_artefact(ARTEFACT_KIND, "default", payload, {"experts": job.experts, **summary})


class RouterR1Sources(BaseModel):
    """Where a Router-R1 run takes its initial policy, its callees and its questions from."""

    policy: str | None = None  # a local expert of the config (default smollm2-135m)
    policy_path: Path | None = None  # or a checkpoint directory
    recorded: Path | None = None  # recorded outputs as callees (default: the shared MMLU-Pro recordings)
    live: bool = False  # the config's experts as callees instead
    pool: list[str] | None = None  # callee names
    data: Path | None = None  # MMLU-Pro JSONL


@dataclass
class RouterR1Run:
    """A prepared Router-R1 run: the policy, the callees behind a dispatcher, the questions."""

    config: TrainConfig
    policy_dir: Path
    callees: list[str]
    questions: list[Question]
    registry: ExpertRegistry
    dispatcher: Dispatcher

    async def train(self, *, progress: Callable[[int, int, StepRecord], None] | None = None) -> dict[str, Any]:
        """GRPO-train for `config.steps` steps; `progress(step, total, record)` after each."""
        from routers.router_r1.training.trainer import train

        return await train(self.config, self.policy_dir, self.registry, self.callees, self.questions,
                           self.dispatcher.submit_or_error, progress=progress)


@asynccontextmanager
async def prepare_router_r1(config: OrchestratorConfig, sources: RouterR1Sources, train_config: TrainConfig) -> AsyncIterator[RouterR1Run]:
    """Resolve the policy, open the callees (closed on exit) and pick the training questions."""
    from routers.router_r1.training import cli_support

    policy_dir = cli_support.policy_directory(config, policy=sources.policy, policy_path=sources.policy_path)
    registry, callees = cli_support.callee_registry(config, recorded=sources.recorded, pool=sources.pool,
                                                    live=sources.live, policy=sources.policy)
    try:
        questions = cli_support.training_questions(registry, callees, data=sources.data, max_chars=train_config.max_chars,
                                                   live=sources.live)
        async with Dispatcher(registry) as dispatcher:
            yield RouterR1Run(train_config, policy_dir, callees, questions, registry, dispatcher)
    finally:
        await registry.aclose()
