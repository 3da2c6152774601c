"""`orchestrator train router-r1`: supervised warm-up, GRPO, and evaluation of the policy.

    data = cli_support.training_data(config, recorded=DIR, pool=[...])      # fit / evaluation split
    summary = await run_training(TrainJob(out=Path("runs/r1"), warmup=640, evaluate=200), data, submit)

Stages, each optional, in this order:

* **warm-up** (`warmup` demonstrations, `demos.py`): supervised steps on demonstrations built
  from the recorded outputs of the fit questions, a fresh LoRA adapter on the base model; half
  the batches (`warmup_target_share`) use the training pool, the others random pools of other
  recorded models in random order, so the policy learns to copy a name from the list it is
  given rather than three memorised names (it must route on pools it never saw, such as the
  embedded default's).
* **GRPO** (`steps`): from the warm-up checkpoint (`policy_path`, also the KL reference), groups
  of `group_size` rollouts per question sampled at T=1.0, top-p 0.95 (the reference's training),
  scored by the reward (format gate, letter match, rolling-percentile cost term weighted by α).
* **evaluation** (`evaluate` questions): greedy episodes (the reference's validation) on the
  evaluation side of the split, never trained on: shares of well-formed episodes and valid routes,
  accuracy with its Wilson interval, calls per expert.

Questions: `evals.splits.split_fit_eval` over the questions every pool model has a recorded
output for, the split `orchestrator bench` uses (same fraction and seed by default), so
`bench --router router-r1 --router-opt router-r1.policy_path=DIR` scores the checkpoint on
questions training never saw. Everything is logged to `metrics*.jsonl`; `reward.png` plots the
curve; checkpoints are LoRA adapters plus `router_r1.json` (checkpoint.py).

Callees: recorded experts (real MMLU-Pro outputs, replayed) by default: a recorded callee answers
the *original* question whatever sub-question the policy wrote, so only the expert choice and
the final answer are learned from them; `--live` uses the config's experts, which read it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.datasets import Question
from evals.metrics import wilson_interval
from routers.router_r1.checkpoint import PolicyCheckpoint, SplitRecord, read_checkpoint, write_checkpoint
from routers.router_r1.prompts import policy_prompt, prompt_head
from routers.router_r1.reward import CostNormaliser, format_score, total_reward
from routers.router_r1.training.demos import demonstration
from routers.router_r1.training.engine import LoraSettings, Policy, SamplingConfig, SharedPrefix, default_device
from routers.router_r1.training.grpo import grpo_step, group_advantages, sft_step
from routers.router_r1.training.rollout import Rollout, run_rollouts

Submit = Callable[[str, Any], Any]
Progress = Callable[[str, int, int, dict[str, Any]], None]  # (stage, step, total, record)


class TrainJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    out: Path
    base_model: str = "smollm2-135m-instruct"
    policy_path: Path | None = None  # continue from this checkpoint (GRPO: also the KL reference)
    # warm-up
    warmup: int = Field(default=0, ge=0)  # demonstrations
    warmup_batch: int = Field(default=8, ge=1)
    warmup_lr: float = Field(default=5e-4, gt=0)
    warmup_target_share: float = Field(default=0.5, ge=0, le=1)
    warmup_max_chars: int = Field(default=800, ge=50)
    # GRPO
    steps: int = Field(default=0, ge=0)
    group_size: int = Field(default=6, ge=2)
    questions_per_step: int = Field(default=2, ge=1)
    lr: float = Field(default=1e-4, gt=0)
    beta: float = Field(default=0.001, ge=0)
    alpha: float = Field(default=0.0, ge=0, le=1)
    clip_eps: float = Field(default=0.2, gt=0)
    grpo_max_chars: int = Field(default=500, ge=50)
    save_every: int = Field(default=25, ge=1)
    # episodes
    max_turns: int = Field(default=3, ge=1)
    max_new_tokens: int = Field(default=64, ge=8)
    obs_tokens: int = Field(default=48, ge=8)
    callee_max_tokens: int = Field(default=512, ge=1)
    prefill: str = ""
    # evaluation
    evaluate: int = Field(default=0, ge=0)
    eval_batch: int = Field(default=16, ge=1)
    # machine
    lora: LoraSettings = LoraSettings()
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    threads: int = Field(default=1, ge=1)
    seed: int = 0
    command: str | None = None


@dataclass
class TrainingData:
    """The pool, its recorded tables, and the split (fit side for training, evaluation side held out)."""

    registry: Any  # callees (recorded or live)
    pool: list[str]
    fit: list[Question]
    eval: list[Question]
    fit_fraction: float
    split_seed: int
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # recorded rows per model (pool and extra)
    specs: dict[str, Any] = field(default_factory=dict)  # ExpertSpec per model (pool and extra)
    extra_models: list[str] = field(default_factory=list)  # warm-up's other pools draw from these

    def descriptor_lines(self, pool: Sequence[str]) -> list[str]:
        """One line per expert: size and price from its spec, accuracy on the fit questions (never
        the evaluation ones) from its recorded outputs when there are any."""
        from routers.router_r1.descriptors import CategoryAccuracy, ExpertDescriptor

        fit_ids = {q.id for q in self.fit}
        lines = []
        for name in pool:
            spec = self.specs.get(name) or self.registry.spec(name)
            acc = {}
            table = self.tables.get(name)
            if table:
                rows = [table[i] for i in fit_ids if i in table]
                if rows:
                    acc["mmlu-pro"] = CategoryAccuracy(n=len(rows), accuracy=round(sum(r.correct for r in rows) / len(rows), 2))
            size = f"{spec.params_b:g}B parameters" if spec.params_b else spec.description
            lines.append(ExpertDescriptor(name=spec.name, description=size, price_out_per_mtok=spec.price_per_mtok.output,
                                          accuracy=acc).render("full"))
        return lines

    def covered(self, pool: Sequence[str], questions: Sequence[Question]) -> list[Question]:
        if not self.tables:
            return list(questions)
        return [q for q in questions if all(q.id in self.tables[m] for m in pool)]


def eval_sample(questions: Sequence[Question], n: int, seed: int) -> list[Question]:
    """The evaluation questions `orchestrator bench --limit n --seed seed` scores (same sample, same order)."""
    qs = list(questions)
    if n >= len(qs):
        return qs
    position = {q.id: i for i, q in enumerate(qs)}
    return sorted(random.Random(seed).sample(qs, n), key=lambda q: position[q.id])


def _dtype(job: TrainJob) -> torch.dtype:
    return torch.bfloat16 if job.dtype == "bfloat16" else torch.float32


def _split_record(job: TrainJob, data: TrainingData, trained: int) -> SplitRecord:
    return SplitRecord(fit_fraction=data.fit_fraction, seed=data.split_seed, fit_questions=len(data.fit),
                       eval_questions=len(data.eval), trained_questions=trained)


def _meta(job: TrainJob, data: TrainingData, policy: Policy, stage: str, lines: list[str], trained: int) -> PolicyCheckpoint:
    return PolicyCheckpoint(base_model=policy.base_model, stage=stage, pool=list(data.pool), descriptor_lines=lines,  # type: ignore[arg-type]
                            prefill=job.prefill, max_turns=job.max_turns, max_tokens=job.max_new_tokens, obs_tokens=job.obs_tokens,
                            alpha=job.alpha, split=_split_record(job, data, trained),
                            parent=str(job.policy_path) if job.policy_path else None, command=job.command)


def release_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise): a long CPU run's
    resident size then follows its live tensors, which matters on a machine shared under
    memory pressure (two runs here were killed by the OOM killer at 5-6 GB resident)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: nothing to do
        pass


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------- warm-up
def warmup(job: TrainJob, data: TrainingData, progress: Progress | None = None) -> dict[str, Any]:
    """Supervised steps on demonstrations; returns the summary and saves `checkpoint-warmup/`."""
    torch.set_num_threads(job.threads)
    rng = random.Random(job.seed)
    policy = (Policy.load(job.base_model, adapter=job.policy_path, dtype=_dtype(job)) if job.policy_path
              else Policy.load(job.base_model, lora=job.lora, dtype=_dtype(job)))
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=job.warmup_lr, weight_decay=0.0)
    fit = [q for q in data.fit if len(q.question) + sum(len(o) for o in q.options) <= job.warmup_max_chars]
    others = [m for m in data.extra_models if m not in data.pool]
    metrics = job.out / "metrics-warmup.jsonl"
    metrics.write_text("")
    n_steps = math.ceil(job.warmup / job.warmup_batch)
    used: set[str] = set()
    records = []
    for step in range(1, n_steps + 1):
        t0 = time.perf_counter()
        if others and rng.random() >= job.warmup_target_share:
            pool = rng.sample(others + data.pool, rng.randint(2, min(4, len(others) + len(data.pool))))
        else:
            pool = list(data.pool)
        lines = data.descriptor_lines(pool)
        candidates = data.covered(pool, fit)
        demos = []
        for q in rng.sample(candidates, min(len(candidates), 3 * job.warmup_batch)):
            d = demonstration(q, pool, data.tables, rng, policy.tok, obs_tokens=job.obs_tokens, max_turns=job.max_turns)
            if d is not None:
                demos.append(d)
            if len(demos) == job.warmup_batch:
                break
        head = prompt_head(names=pool, descriptions=lines, multiple_choice=True)
        prompts = [policy.render(policy_prompt(d.question.question, names=pool, descriptions=lines, choices=d.question.options))
                   for d in demos]
        rows = [policy.encode(p, d.episode.segments()) for p, d in zip(prompts, demos, strict=True)]
        prefix = policy.shared_prefix(prompts[0], head)
        stats = sft_step(policy, optimizer, rows, prefix=prefix)
        used.update(d.question.id for d in demos)
        rec = {"step": step, "loss": round(stats.loss, 5), "tokens": stats.tokens, "grad_norm": round(stats.grad_norm, 4),
               "pool": pool, "target_pool": pool == data.pool, "two_routes": sum(len(d.experts) > 1 for d in demos),
               "demos": len(demos), "seconds": round(time.perf_counter() - t0, 2)}
        records.append(rec)
        _append(metrics, rec)
        release_memory()
        if progress:
            progress("warmup", step, n_steps, rec)
    ckpt = job.out / "checkpoint-warmup"
    policy.save(ckpt)
    write_checkpoint(ckpt, _meta(job, data, policy, "warmup", data.descriptor_lines(data.pool), len(used)))
    _plot([r["loss"] for r in records], job.out / "loss-warmup.png", "warm-up step", "loss (NLL per policy token)", "Router-R1 warm-up")
    k = min(10, len(records))
    return {"checkpoint": str(ckpt), "steps": len(records), "demonstrations": sum(r["demos"] for r in records),
            "questions": len(used), "loss_first_10": statistics.fmean(r["loss"] for r in records[:k]),
            "loss_last_10": statistics.fmean(r["loss"] for r in records[-k:]),
            "seconds_total": round(sum(r["seconds"] for r in records), 1)}


# ---------------------------------------------------------------------- GRPO
def _prompts_for(policy: Policy, questions: Sequence[Question], pool: list[str], lines: list[str]) -> tuple[dict[str, str], SharedPrefix | None]:
    prompts = {q.id: policy.render(policy_prompt(q.question, names=pool, descriptions=lines, choices=q.options)) for q in questions}
    first = next(iter(prompts.values()), None)
    head = prompt_head(names=pool, descriptions=lines, multiple_choice=True)
    return prompts, (policy.shared_prefix(first, head) if first is not None else None)


def _reward_fn(data: TrainingData, alpha: float) -> Callable[[Rollout, Question], Any]:
    normaliser = CostNormaliser()

    def is_valid(name: str) -> bool:
        return data.registry.find(name) in data.pool

    def score(r: Rollout, q: Question) -> Any:
        return total_reward(r.episode.transcript, gold=q.answer, raw_cost=r.episode.cost, alpha=alpha, normaliser=normaliser,
                            is_valid_name=is_valid, n_options=q.n_options, choices=q.options)

    return score


def _resolver(data: TrainingData) -> Callable[[str], str | None]:
    from routers.router_r1.parsing import resolve_expert

    return lambda name: resolve_expert(name, data.registry, data.pool)


def _calls(rollouts: Sequence[Rollout]) -> Counter[str]:
    return Counter(s.call.expert for r in rollouts for s in r.episode.steps if s.call is not None and s.ok)


async def grpo(job: TrainJob, data: TrainingData, submit: Submit, progress: Progress | None = None) -> dict[str, Any]:
    """GRPO steps from `job.policy_path` (the warm-up checkpoint, also the reference)."""
    from experts.adapters import load_causal_lm

    if job.policy_path is None:
        raise ValueError("GRPO starts from a checkpoint: pass --policy-path (the warm-up's checkpoint)")
    torch.set_num_threads(job.threads)
    policy = await asyncio.to_thread(Policy.load, job.base_model, adapter=job.policy_path, dtype=_dtype(job))
    ref_model = await asyncio.to_thread(load_causal_lm, job.policy_path, _dtype(job))
    ref_model.to(default_device()).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=job.lr, weight_decay=0.0)
    start = read_checkpoint(job.policy_path)
    lines = list(start.descriptor_lines) if start and start.pool == data.pool else data.descriptor_lines(data.pool)
    questions = [q for q in data.fit if len(q.question) + sum(len(o) for o in q.options) <= job.grpo_max_chars]
    prompts, prefix = _prompts_for(policy, questions, data.pool, lines)
    ref_prefix = SharedPrefix(prefix.ids) if prefix else None  # the reference is frozen: its prefix is computed once
    sampling = SamplingConfig(max_new_tokens=job.max_new_tokens, max_turns=job.max_turns, obs_tokens=job.obs_tokens,
                              callee_max_tokens=job.callee_max_tokens, prefill=job.prefill)
    score, resolve = _reward_fn(data, job.alpha), _resolver(data)
    price = {m: data.registry.spec(m).price_per_mtok.output for m in data.pool}
    priciest = max(data.pool, key=lambda m: price[m])
    rng = random.Random(job.seed)
    metrics = job.out / "metrics.jsonl"
    metrics.write_text("")
    records: list[dict[str, Any]] = []
    used: set[str] = set()
    for step in range(1, job.steps + 1):
        t0 = time.perf_counter()
        qs = rng.sample(questions, job.questions_per_step)
        group = [q for q in qs for _ in range(job.group_size)]
        rollouts = await run_rollouts(policy, [prompts[q.id] for q in group], question_ids=[q.id for q in group], resolve=resolve,
                                      submit=submit, price_of=price.__getitem__, cfg=sampling, seed=job.seed * 100_003 + step,
                                      prefix=prefix)
        t_roll = time.perf_counter() - t0
        scored = [score(r, q) for r, q in zip(rollouts, group, strict=True)]
        rewards = [s.reward for s in scored]
        adv = group_advantages(rewards, job.group_size)
        rows = [policy.encode(r.prompt, r.segments()) for r in rollouts]
        stats = await asyncio.to_thread(grpo_step, policy, ref_model, optimizer, rows, adv, prefix=prefix, ref_prefix=ref_prefix,
                                        beta=job.beta, clip_eps=job.clip_eps)
        used.update(q.id for q in qs)
        calls = _calls(rollouts)
        n_calls = sum(calls.values())
        rec = {
            "step": step, "reward_mean": round(statistics.fmean(rewards), 4), "reward_std": round(statistics.pstdev(rewards), 4),
            "format_ok": sum(s.format_score == 0 for s in scored) / len(scored),
            "accuracy": sum(s.outcome > 0 for s in scored) / len(scored),
            "routes_mean": statistics.fmean(r.episode.routes_executed for r in rollouts),
            "calls": dict(calls), "priciest_share": round(calls[priciest] / n_calls, 4) if n_calls else 0.0,
            "cost_mean": round(statistics.fmean(r.episode.cost for r in rollouts), 3),
            "loss": round(stats.loss, 6), "kl": round(stats.kl, 6), "grad_norm": round(stats.grad_norm, 4),
            "policy_tokens": stats.tokens, "rollout_s": round(t_roll, 1), "seconds": round(time.perf_counter() - t0, 1),
            "questions": [q.id for q in qs], "sample": rollouts[0].episode.transcript[:700],
        }
        records.append(rec)
        _append(metrics, rec)
        _plot_grpo(records, job.out / "reward.png", priciest)
        del rollouts, rows, stats
        release_memory()
        if progress:
            progress("grpo", step, job.steps, rec)
        if step % job.save_every == 0 and step != job.steps:
            await asyncio.to_thread(_save, policy, job.out / f"checkpoint-{step}", _meta(job, data, policy, "grpo", lines, len(used)))
    final = job.out / "checkpoint-final"
    await asyncio.to_thread(_save, policy, final, _meta(job, data, policy, "grpo", lines, len(used)))
    k = min(10, len(records))
    return {
        "checkpoint": str(final), "steps": len(records), "questions": len(used), "priciest_expert": priciest,
        "reward_first": records[0]["reward_mean"], "reward_last": records[-1]["reward_mean"],
        f"reward_mean_first_{k}": round(statistics.fmean(r["reward_mean"] for r in records[:k]), 4),
        f"reward_mean_last_{k}": round(statistics.fmean(r["reward_mean"] for r in records[-k:]), 4),
        f"priciest_share_first_{k}": round(statistics.fmean(r["priciest_share"] for r in records[:k]), 4),
        f"priciest_share_last_{k}": round(statistics.fmean(r["priciest_share"] for r in records[-k:]), 4),
        "seconds_total": round(sum(r["seconds"] for r in records), 1),
    }


def _save(policy: Policy, path: Path, meta: PolicyCheckpoint) -> None:
    policy.save(path)
    write_checkpoint(path, meta)


# ---------------------------------------------------------------------- evaluation
async def evaluate(job: TrainJob, data: TrainingData, submit: Submit, checkpoint: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Greedy episodes on `job.evaluate` evaluation questions (the bench's sample for that limit and seed)."""
    torch.set_num_threads(job.threads)
    policy = await asyncio.to_thread(Policy.load, job.base_model, adapter=checkpoint, dtype=_dtype(job), trainable=False)
    meta = read_checkpoint(checkpoint)
    pool = list(data.pool)
    lines = list(meta.descriptor_lines) if meta and meta.pool == pool else data.descriptor_lines(pool)
    questions = eval_sample(data.eval, job.evaluate, data.split_seed)
    trained_on = {q.id for q in data.fit}
    assert not trained_on & {q.id for q in questions}, "an evaluation question is on the fit side"
    prompts, prefix = _prompts_for(policy, questions, pool, lines)
    sampling = SamplingConfig(max_new_tokens=meta.max_tokens if meta else job.max_new_tokens, temperature=0.0,
                              max_turns=meta.max_turns if meta else job.max_turns, obs_tokens=meta.obs_tokens if meta else job.obs_tokens,
                              callee_max_tokens=job.callee_max_tokens, prefill=meta.prefill if meta else job.prefill)
    score, resolve = _reward_fn(data, job.alpha), _resolver(data)
    price = {m: data.registry.spec(m).price_per_mtok.output for m in pool}
    ordered = sorted(questions, key=lambda q: len(prompts[q.id]))  # similar lengths batch with less padding
    rollouts: dict[str, Rollout] = {}
    t0 = time.perf_counter()
    for i in range(0, len(ordered), job.eval_batch):
        chunk = ordered[i : i + job.eval_batch]
        out = await run_rollouts(policy, [prompts[q.id] for q in chunk], question_ids=[q.id for q in chunk], resolve=resolve,
                                 submit=submit, price_of=price.__getitem__, cfg=sampling, prefix=prefix)
        rollouts.update((q.id, r) for q, r in zip(chunk, out, strict=True))
        release_memory()
        if progress:
            progress("evaluate", min(i + job.eval_batch, len(ordered)), len(ordered), {})
    episodes = []
    for q in questions:
        r = rollouts[q.id]
        s = score(r, q)
        episodes.append({"question_id": q.id, "category": q.category, "gold": q.answer, "answer": s.answer,
                         "correct": s.outcome > 0, "format_ok": s.format_score == 0,
                         "valid_route": r.episode.routes_executed > 0,
                         "experts": [st.call.expert for st in r.episode.steps if st.call is not None and st.ok],
                         "cost": r.episode.cost, "violations": list(s.violations), "transcript": r.episode.transcript})
    n = len(episodes)
    correct = sum(e["correct"] for e in episodes)
    lo, hi = wilson_interval(correct, n)
    calls = Counter(e for ep in episodes for e in ep["experts"])
    n_calls = sum(calls.values())
    priciest = max(pool, key=lambda m: price[m])
    summary = {
        "checkpoint": str(checkpoint), "questions": n, "split": f"evaluation side of split_fit_eval(fraction {data.fit_fraction}, seed {data.split_seed})",
        "format_ok": round(sum(e["format_ok"] for e in episodes) / n, 4),
        "valid_route": round(sum(e["valid_route"] for e in episodes) / n, 4),
        "answered": round(sum(e["answer"] is not None for e in episodes) / n, 4),
        "accuracy": round(correct / n, 4), "correct": correct, "ci95": [round(lo, 4), round(hi, 4)],
        "calls_per_question": round(n_calls / n, 3), "calls": dict(calls.most_common()),
        "priciest_expert": priciest, "priciest_share": round(calls[priciest] / n_calls, 4) if n_calls else 0.0,
        "cost_per_question_micro_usd": round(sum(e["cost"] for e in episodes) / n, 3),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (job.out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (job.out / "eval-episodes.jsonl").open("w") as f:
        for e in episodes:
            f.write(json.dumps(e) + "\n")
    return summary


# ---------------------------------------------------------------------- the job
async def run_training(job: TrainJob, data: TrainingData, submit: Submit, progress: Progress | None = None) -> dict[str, Any]:
    """Warm-up, then GRPO, then evaluation, as far as the job asks; writes summary.json."""
    job.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"pool": data.pool, "fit_questions": len(data.fit), "eval_questions": len(data.eval),
                               "config": json.loads(job.model_dump_json())}
    checkpoint = job.policy_path
    if job.warmup:
        summary["warmup"] = await asyncio.to_thread(warmup, job, data, progress)
        checkpoint = Path(summary["warmup"]["checkpoint"])
    if job.steps:
        summary["grpo"] = await grpo(job.model_copy(update={"policy_path": checkpoint}), data, submit, progress)
        checkpoint = Path(summary["grpo"]["checkpoint"])
    if job.evaluate:
        if checkpoint is None:
            raise ValueError("nothing to evaluate: train (--warmup / --steps) or pass --policy-path")
        summary["evaluation"] = await evaluate(job, data, submit, checkpoint, progress)
    (job.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------- plots
def _plot(values: Sequence[float], path: Path, xlabel: str, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(values) + 1), values, marker=".")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_grpo(records: Sequence[dict[str, Any]], path: Path, priciest: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    k = 5  # the per-step values are noisy (a few questions a step): a trailing mean shows the trend
    smooth = [statistics.fmean(r["reward_mean"] for r in records[max(0, i - k + 1) : i + 1]) for i in range(len(records))]
    ax.plot(steps, [r["reward_mean"] for r in records], marker=".", alpha=0.35, label="mean reward (per step)")
    ax.plot(steps, smooth, label=f"mean reward (trailing {k}-step mean)")
    ax.plot(steps, [statistics.fmean(x["priciest_share"] for x in records[max(0, i - k + 1) : i + 1]) for i in range(len(records))],
            linestyle="--", label=f"share of calls to {priciest} (trailing mean)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("per-step value")
    ax.set_title("Router-R1 GRPO")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
