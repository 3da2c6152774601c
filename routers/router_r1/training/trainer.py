"""`orchestrator train router-r1`: GRPO on CPU (or GPU) with real callees, logged and checkpointed.

    cfg = TrainConfig(out=Path("runs/r1"), steps=20)
    summary = await train(cfg, policy_dir, callee_registry, callee_pool, questions)

Each step samples `questions_per_step` questions, rolls out `group_size` episodes for each
(sampling at T=1.0, top-p 0.95, as the reference's training), scores them with the reward
(format gate, letter/EM outcome, rolling-percentile cost term, α), and takes one GRPO step.
Every step is appended to `metrics.jsonl`; `reward.png` plots the curve; checkpoints
(`checkpoint-N/`, `checkpoint-final/`) are plain transformers directories, loadable as the
router's policy with `policy_path=`. Scaling up is configuration: a bigger policy directory, a
GPU (the model moves to CUDA when present), larger groups and batches.

Callees: by default recorded experts (real MMLU-Pro outputs of real models, replayed), because a
live 7B callee per route is far beyond a CPU budget. A recorded callee answers the *original*
question (its recorded response, keyed by question id) whatever sub-question the policy wrote;
`--live` uses the config's experts instead, which do read the sub-question. Data: MMLU-Pro
multiple choice (the only local data; the reference trains on NQ + HotpotQA short answers), kept
to short questions to bound sequence length on CPU.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.datasets import Question
from routers.router_r1.descriptors import ExpertDescriptor
from routers.router_r1.parsing import resolve_expert
from routers.router_r1.prompts import policy_prompt
from routers.router_r1.reward import CostNormaliser, total_reward
from routers.router_r1.training.grpo import build_batch, group_advantages, grpo_step
from routers.router_r1.training.rollout import SamplingConfig, run_rollouts


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path
    steps: int = Field(default=20, ge=1)
    group_size: int = Field(default=4, ge=2)
    questions_per_step: int = Field(default=1, ge=1)
    max_turns: int = Field(default=4, ge=1)
    max_new_tokens: int = Field(default=64, ge=8)
    obs_tokens: int = Field(default=128, ge=8)
    callee_max_tokens: int = Field(default=512, ge=1)
    lr: float = Field(default=1e-6, gt=0)
    beta: float = Field(default=0.001, ge=0)
    alpha: float = Field(default=0.0, ge=0, le=1)
    clip_eps: float = Field(default=0.2, gt=0)
    micro_batch: int = Field(default=2, ge=1)
    save_every: int = Field(default=10, ge=1)
    seed: int = 0
    threads: int = Field(default=2, ge=1)
    descriptors: str = "full"
    prefill: str = ""
    max_chars: int = 500


@dataclass
class StepRecord:
    step: int
    reward_mean: float
    reward_std: float
    format_ok: float
    accuracy: float
    answered: float
    routes_mean: float
    cost_mean: float
    loss: float
    kl: float
    grad_norm: float
    policy_tokens: int
    seconds: float


def load_policy(policy_dir: Path, threads: int) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(str(policy_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(policy_dir), dtype=torch.float32).to(device)
    model.eval()
    return model, tok


def prompt_ids(tok: Any, question: Question, names: Sequence[str], descriptions: Sequence[str]) -> list[int]:
    text = policy_prompt(question.question, names=names, descriptions=descriptions, choices=question.options)
    rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return tok(rendered, add_special_tokens=False)["input_ids"]


def plot_curve(records: Sequence[StepRecord], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r.step for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r.reward_mean for r in records], marker="o", label="mean reward")
    ax.plot(steps, [r.format_ok for r in records], linestyle="--", label="format ok (share)")
    ax.plot(steps, [r.accuracy for r in records], linestyle=":", label="correct (share)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("per-step value")
    ax.set_title("Router-R1 policy training")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def train(
    cfg: TrainConfig,
    policy_dir: Path,
    registry: Any,
    pool: Sequence[str],
    questions: Sequence[Question],
    submit: Callable[[str, Any], Any],
    progress: Callable[[int, int, StepRecord], None] | None = None,
) -> dict[str, Any]:
    """Run the GRPO loop; `submit(expert, request)` makes a callee call (a dispatcher's)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    model, tok = await asyncio.to_thread(load_policy, policy_dir, cfg.threads)
    ref_model = copy.deepcopy(model).eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    descs = [ExpertDescriptor(name=s.name, description=s.description, price_out_per_mtok=s.price_per_mtok.output)
             for s in (registry.spec(p) for p in pool)]
    lines = [d.render(cfg.descriptors) for d in descs]  # type: ignore[arg-type]
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, max_turns=cfg.max_turns, obs_tokens=cfg.obs_tokens,
                              callee_max_tokens=cfg.callee_max_tokens, prefill=cfg.prefill)
    normaliser = CostNormaliser()
    rng = random.Random(cfg.seed)

    def resolve(name: str) -> str | None:
        return resolve_expert(name, registry, pool)

    def is_valid(name: str) -> bool:
        return resolve(name) is not None

    metrics_path = cfg.out / "metrics.jsonl"
    metrics_path.write_text("")
    records: list[StepRecord] = []
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        qs = rng.sample(list(questions), cfg.questions_per_step)
        group = [q for q in qs for _ in range(cfg.group_size)]
        prompts = [prompt_ids(tok, q, pool, lines) for q in group]
        rollouts = await run_rollouts(
            model, tok, prompts, question_ids=[q.id for q in group], resolve=resolve, submit=submit,
            price_of=lambda e: registry.spec(e).price_per_mtok.output, cfg=sampling, seed=cfg.seed * 100_003 + step,
        )
        scored = [
            total_reward(r.episode.transcript, gold=q.answer, raw_cost=r.episode.cost, alpha=cfg.alpha, normaliser=normaliser,
                         is_valid_name=is_valid, n_options=q.n_options, choices=q.options)
            for r, q in zip(rollouts, group, strict=True)
        ]
        rewards = [s.reward for s in scored]
        adv = group_advantages(rewards, cfg.group_size)
        batch = build_batch(rollouts, tok.pad_token_id)
        stats = await asyncio.to_thread(grpo_step, model, ref_model, optimizer, batch, adv, beta=cfg.beta,
                                        clip_eps=cfg.clip_eps, micro_batch=cfg.micro_batch)
        rec = StepRecord(
            step=step, reward_mean=statistics.fmean(rewards), reward_std=statistics.pstdev(rewards),
            format_ok=sum(s.format_score == 0 for s in scored) / len(scored),
            accuracy=sum(s.outcome > 0 for s in scored) / len(scored),
            answered=sum(s.answer is not None for s in scored) / len(scored),
            routes_mean=statistics.fmean(r.episode.routes_executed for r in rollouts),
            cost_mean=statistics.fmean(r.episode.cost for r in rollouts), loss=stats.loss, kl=stats.kl,
            grad_norm=stats.grad_norm, policy_tokens=stats.tokens, seconds=round(time.perf_counter() - t0, 2),
        )
        records.append(rec)
        with metrics_path.open("a") as f:
            f.write(json.dumps({**rec.__dict__, "questions": [q.id for q in qs],
                                "sample": rollouts[0].episode.transcript[:600]}) + "\n")
        plot_curve(records, cfg.out / "reward.png")
        if progress:
            progress(step, cfg.steps, rec)
        if step % cfg.save_every == 0 and step != cfg.steps:
            await asyncio.to_thread(_save, model, tok, cfg.out / f"checkpoint-{step}")
    final = cfg.out / "checkpoint-final"
    await asyncio.to_thread(_save, model, tok, final)
    k = min(5, len(records))
    summary = {
        "steps": len(records), "checkpoint": str(final), "metrics": str(metrics_path), "plot": str(cfg.out / "reward.png"),
        "reward_first": records[0].reward_mean, "reward_last": records[-1].reward_mean,
        f"reward_mean_first_{k}": statistics.fmean(r.reward_mean for r in records[:k]),
        f"reward_mean_last_{k}": statistics.fmean(r.reward_mean for r in records[-k:]),
        "seconds_total": round(sum(r.seconds for r in records), 1), "config": json.loads(cfg.model_dump_json()),
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _save(model: Any, tok: Any, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
