"""`orchestrator train router-r1` and `ask --router router-r1`: user mistakes are one-line errors."""

import json
from pathlib import Path

from typer.testing import CliRunner

from conftest import POOL3, RECORDED
from orchestrator.cli import app
from orchestrator.cli._common import EXIT_UNDECIDED  # a router that cannot route (unfitted, no checkpoint) exits 4
from routers.router_r1.checkpoint import read_checkpoint

runner = CliRunner()


def test_train_with_a_bad_policy_path_is_a_short_error(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "router-r1", "--out", str(tmp_path / "run"), "--steps", "1", "--policy-path", str(tmp_path)])
    assert r.exit_code == 2 and "not a model directory" in r.output and "Traceback" not in r.output


def test_train_with_an_unknown_callee_names_the_available_ones(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "router-r1", "--out", str(tmp_path / "run"), "--warmup", "8", "--recorded", str(RECORDED), "--pool", "gpt-9"])
    assert r.exit_code == 2 and "gpt-9" in r.output and POOL3[0] in r.output


def test_train_with_nothing_to_do_says_so(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "router-r1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "nothing to do" in r.output and "Traceback" not in r.output


def test_ask_router_r1_with_an_unregistered_policy_expert_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'c.db'}\nexperts:\n"
                   f"  - {{name: yi, backend: recorded, path: {RECORDED}, model: Yi-34B}}\n"
                   "routers:\n  router-r1: {policy: smollm2-135m}\n")
    r = runner.invoke(app, ["ask", "hi", "--router", "router-r1", "--config", str(cfg)])
    assert r.exit_code == EXIT_UNDECIDED and "policy expert 'smollm2-135m' is not registered" in r.output


POOL = ["Llama-2-7b-hf", "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"]


def tiny_config(tmp_path: Path, tiny_policy_dir: Path) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: sqlite+aiosqlite:///{tmp_path / 'c.db'}\nexperts:\n"
                   f"  - {{name: tiny, backend: local, model: {tiny_policy_dir}}}\n")
    return cfg


def test_train_warms_up_runs_grpo_and_evaluates_a_tiny_policy(tmp_path: Path, tiny_policy_dir: Path) -> None:
    """The command that trained the shipped policy, end to end on a tiny real model: warm-up on
    demonstrations, a GRPO step from its checkpoint, greedy evaluation on held-out questions."""
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "router-r1", "--config", str(tiny_config(tmp_path, tiny_policy_dir)), "--policy", "tiny",
                            "--out", str(out), "--recorded", str(RECORDED), "--pool", ",".join(POOL), "--warmup-models", "Yi-34B",
                            "--warmup", "4", "--steps", "1", "--evaluate", "3", "--group-size", "2", "--questions-per-step", "1",
                            "--max-turns", "1", "--max-new-tokens", "8"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warmup"]["steps"] == 1 and summary["grpo"]["steps"] == 1 and summary["evaluation"]["questions"] == 3
    assert len((out / "metrics-warmup.jsonl").read_text().splitlines()) == 1
    step = json.loads((out / "metrics.jsonl").read_text())
    assert step["step"] == 1 and step["policy_tokens"] >= 0 and len(step["questions"]) == 1
    assert (out / "reward.png").stat().st_size > 0 and (out / "eval.json").is_file()
    final = read_checkpoint(out / "checkpoint-final")
    assert final is not None and final.stage == "grpo" and final.pool == POOL and len(final.descriptor_lines) == 3
    assert final.parent == str(out / "checkpoint-warmup") and final.split.fit_fraction == 0.3
    assert (out / "checkpoint-final" / "adapter_config.json").is_file()
    assert "orchestrator train router-r1" in (final.command or "")


def tiny_checkpoint(tmp_path: Path, tiny_policy_dir: Path) -> Path:
    """A LoRA checkpoint of the tiny policy whose prefill holds a whole route to the 70B expert:
    every episode routes there whatever the untrained weights write."""
    import torch

    from routers.router_r1.checkpoint import PolicyCheckpoint, SplitRecord, write_checkpoint
    from routers.router_r1.training.engine import LoraSettings, Policy

    path = tmp_path / "ckpt"
    policy = Policy.load(str(tiny_policy_dir), lora=LoraSettings(rank=2, alpha=4), dtype=torch.float32)
    policy.save(path)
    write_checkpoint(path, PolicyCheckpoint(
        base_model=str(tiny_policy_dir), stage="grpo", pool=POOL, descriptor_lines=[f"- {m}: trained-on line" for m in POOL],
        prefill="<think>I will ask an LLM.</think>\n<search> Meta-Llama-3.1-70B-Instruct:which? </search>",
        max_turns=1, max_tokens=8, obs_tokens=24, split=SplitRecord(fit_fraction=0.3, seed=0, fit_questions=1, eval_questions=1,
                                                                   trained_questions=1)))
    return path


def test_bench_scores_a_checkpoint_beside_random_and_best_single(tmp_path: Path, tiny_policy_dir: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path, tiny_policy_dir)
    r = runner.invoke(app, ["bench", "--config", str(tiny_config(tmp_path, tiny_policy_dir)), "--recorded", str(RECORDED),
                            "--pool", ",".join(POOL), "--router", "router-r1", "--router", "random", "--router", "best-single",
                            "--limit", "4", "--router-opt", f"router-r1.policy_path={ckpt}", "--router-opt", "router-r1.policy_dtype=float32",
                            "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout[r.stdout.index("{"):])
    routers = report["routers"]
    assert set(routers) == {"router-r1", "random", "best-single"} and all(v["n"] == 4 for v in routers.values())
    r1 = routers["router-r1"]
    assert r1["expert_usage"] == {"Meta-Llama-3.1-70B-Instruct": 4} and r1["expert_calls_per_question"] == 1.0
    cost = "cost_usd" if report["cost_axis"] == "usd" else "cost_units"  # recorded MMLU-Pro: price units (#17)
    assert r1[cost] > 0 and r1["errors"] == 0


async def test_router_uses_the_checkpoints_descriptor_lines_and_settings(tmp_path: Path, tiny_policy_dir: Path) -> None:
    from experts import ExpertRegistry
    from routers.router_r1.router import RouterR1Router
    from routers.types import Query, RouterContext

    from conftest import recorded_specs

    ckpt = tiny_checkpoint(tmp_path, tiny_policy_dir)
    reg = ExpertRegistry.from_specs(recorded_specs(list(reversed(POOL))))
    router = RouterR1Router(RouterContext(pool=list(reversed(POOL)), registry=reg), policy_path=str(ckpt))
    assert router.callee_pool == POOL  # the order it was trained on
    assert (router.opts.max_turns, router.opts.max_tokens, router.opts.obs_tokens) == (1, 8, 24)
    prompt = await router.prompt_for(Query(text="Which?", choices=("a", "b")))
    assert "- Meta-Llama-3.1-70B-Instruct: trained-on line" in prompt
    other = RouterR1Router(RouterContext(pool=POOL[:2], registry=reg), policy_path=str(ckpt), obs_tokens=99)
    assert other.opts.obs_tokens == 99 and "trained-on line" not in await other.prompt_for(Query(text="Which?"))
    await reg.aclose()
