"""What `orchestrator train router-r1` assembles: the policy directory, the callees, the questions.

    policy_dir = policy_directory(config, policy="smollm2-135m")
    registry, pool = callee_registry(config, recorded=DIR, pool=["Phi-3-mini-4k-instruct", ...])
    questions = training_questions(registry, pool, max_chars=600)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from experts.errors import ConfigError
from experts.spec import BackendKind, OrchestratorConfig
from evals.datasets import Question, default_mmlu_pro_paths, load_mmlu_pro, shared_data_dir

DEFAULT_RECORDED_POOL = ["Phi-3-mini-4k-instruct", "Meta-Llama-3.1-8B-Instruct", "Qwen1.5-72B-Chat"]


def policy_directory(config: OrchestratorConfig, *, policy: str | None, policy_path: Path | None) -> Path:
    """The transformers directory of the policy: a checkpoint, or a local expert's weights."""
    from experts.packaged_models import resolve_model_dir

    if policy_path is not None:
        if not (policy_path / "config.json").is_file():
            raise ConfigError(f"--policy-path {policy_path}: not a model directory (no config.json)")
        return policy_path
    name = policy or "smollm2-135m"
    spec = next((s for s in config.experts if name.lower() in (n.lower() for n in s.all_names())), None)
    if spec is None:
        raise ConfigError(f"--policy {name!r}: no such expert; configured: {', '.join(s.name for s in config.experts)}")
    if spec.backend is not BackendKind.LOCAL:
        raise ConfigError(f"--policy {name!r}: training needs an in-process (backend: local) policy, not {spec.backend.value}")
    return resolve_model_dir(spec.model)


def default_recorded_dir() -> Path | None:
    base = shared_data_dir()
    d = base / "recorded" / "mmlu_pro_tiger" if base else None
    return d if d is not None and d.is_dir() else None


def callee_registry(config: OrchestratorConfig, *, recorded: Path | None, pool: Sequence[str] | None, live: bool,
                    policy: str | None) -> tuple[Any, list[str]]:
    """Recorded experts (replayed real outputs: fast) or the config's experts (live) as callees."""
    from experts.registry import ExpertRegistry

    if live:
        names = list(pool) if pool else [s.name for s in config.experts if s.name != (policy or "smollm2-135m")] or [config.experts[0].name]
        reg = ExpertRegistry.from_specs(config.experts, secrets=config.secrets)
        return reg, [reg.resolve(n) for n in names]
    from evals import recorded_pool

    directory = recorded or default_recorded_dir()
    if directory is None:
        raise ConfigError("no recorded outputs found: pass --recorded DIR (e.g. ../shared/data/recorded/mmlu_pro_tiger) or --live")
    names = recorded_pool.resolve_pool(directory, list(pool) if pool else DEFAULT_RECORDED_POOL)
    return ExpertRegistry.from_specs(recorded_pool.recorded_specs(directory, names)), names


def training_questions(registry: Any, pool: Sequence[str], *, data: Path | None, max_chars: int, live: bool) -> list[Question]:
    """MMLU-Pro test questions every recorded callee answered, kept short to bound CPU time."""
    path = data or default_mmlu_pro_paths().get("test")
    if path is None:
        raise ConfigError("no MMLU-Pro data found: pass --data FILE (MMLU-Pro test.jsonl)")
    questions = load_mmlu_pro(path)
    if not live:
        tables = [registry.recorded_library.table(registry.spec(p).path, registry.spec(p).model) for p in pool]
        questions = [q for q in questions if all(q.id in t for t in tables)]
    short = [q for q in questions if len(q.question) + sum(len(o) for o in q.options) <= max_chars]
    if not short:
        raise ConfigError(f"no question of at most {max_chars} characters (with options): raise --max-chars")
    return short
