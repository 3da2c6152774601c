"""What `orchestrator train router-r1` assembles: the base policy, the callees, the split.

    base = base_model(config, policy="smollm2-135m")             # a packaged model id or a directory
    data = training_data(config, recorded=DIR, pool=[...], fit_fraction=0.3, seed=0)
    data.fit, data.eval                                          # disjoint by question id

The split is `evals.splits.split_fit_eval` over the MMLU-Pro test questions every pool model has
a recorded output for: exactly the questions and the split `orchestrator bench --recorded DIR
--pool ...` uses (its default fit fraction 0.3 and seed 0), so the bench's evaluation questions
are never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evals.datasets import default_mmlu_pro_paths, load_mmlu_pro, shared_data_dir
from evals.splits import split_fit_eval
from experts.errors import ConfigError
from experts.spec import BackendKind, OrchestratorConfig
from routers.router_r1.training.trainer import TrainingData

# A real accuracy and price gap (MMLU-Pro, current key: 0.18 / 0.44 / 0.62; $0.14 / $0.16 / $1.40 per Mtok).
DEFAULT_RECORDED_POOL = ["Llama-2-7b-hf", "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"]
# Other recorded models the warm-up draws random pools from (names and orders the policy must read, not memorise).
WARMUP_EXTRA_MODELS = ["Phi-3-mini-4k-instruct", "Qwen1.5-7B-Chat", "Mistral-7B-Instruct-v0.2", "gemma-7b", "Yi-34B",
                       "Qwen1.5-72B-Chat", "Mixtral-8x7B-Instruct-v0.1", "Llama-2-13b-hf", "DeepSeek-V2-Chat", "Yi-6b-Chat"]


def base_model(config: OrchestratorConfig, *, policy: str | None) -> str:
    """The base the adapter trains on: a local expert's model id (packaged id or directory)."""
    name = policy or "smollm2-135m"
    spec = next((s for s in config.experts if name.lower() in (n.lower() for n in s.all_names())), None)
    if spec is None:
        raise ConfigError(f"--policy {name!r}: no such expert; configured: {', '.join(s.name for s in config.experts)}")
    if spec.backend is not BackendKind.LOCAL:
        raise ConfigError(f"--policy {name!r}: training needs an in-process (backend: local) policy, not {spec.backend.value}")
    return spec.model


def check_policy_path(path: Path | None) -> None:
    from experts.adapters import is_adapter_dir

    if path is not None and not is_adapter_dir(path):
        raise ConfigError(f"--policy-path {path}: not a model directory (no adapter_config.json); "
                          "pass a checkpoint saved by `orchestrator train router-r1`")


def default_recorded_dir() -> Path | None:
    base = shared_data_dir()
    d = base / "recorded" / "mmlu_pro_tiger" if base else None
    return d if d is not None and d.is_dir() else None


def training_data(config: OrchestratorConfig, *, recorded: Path | None, pool: Sequence[str] | None, live: bool, policy: str | None,
                  data: Path | None, fit_fraction: float, seed: int, extra_models: Sequence[str] | None = None) -> TrainingData:
    """Callees (recorded outputs, or the config's experts with `live`), their tables, and the split."""
    from experts.registry import ExpertRegistry

    path = data or default_mmlu_pro_paths().get("test")
    if path is None:
        raise ConfigError("no MMLU-Pro data found: pass --data FILE (MMLU-Pro test.jsonl)")
    questions = load_mmlu_pro(path)
    if live:
        names = list(pool) if pool else [s.name for s in config.experts if s.name != (policy or "smollm2-135m")] or [config.experts[0].name]
        reg = ExpertRegistry.from_specs(config.experts, secrets=config.secrets)
        names = [reg.resolve(n) for n in names]
        tables: dict = {}
        specs: dict = {}
        extra: list[str] = []
    else:
        from evals import recorded_pool

        directory = recorded or default_recorded_dir()
        if directory is None:
            raise ConfigError("no recorded outputs found: pass --recorded DIR (e.g. ../shared/data/recorded/mmlu_pro_tiger) or --live")
        directory = directory.resolve()
        names = recorded_pool.resolve_pool(directory, list(pool) if pool else DEFAULT_RECORDED_POOL)
        available = set(recorded_pool.resolve_pool(directory, None))
        extra = [m for m in (WARMUP_EXTRA_MODELS if extra_models is None else extra_models) if m in available and m not in names]
        all_specs = recorded_pool.recorded_specs(directory, names + extra)
        specs = {s.name: s for s in all_specs}
        reg = ExpertRegistry.from_specs([specs[n] for n in names])
        tables = {m: reg.recorded_library.table(directory, m) for m in names + extra}
        questions = [q for q in questions if all(q.id in tables[m] for m in names)]  # the bench's question set
    fit_ids, eval_ids = split_fit_eval([q.id for q in questions], fit_fraction, seed)
    return TrainingData(registry=reg, pool=names, fit=[q for q in questions if q.id in fit_ids],
                        eval=[q for q in questions if q.id in eval_ids], fit_fraction=fit_fraction, split_seed=seed,
                        tables=tables, specs=specs, extra_models=extra)
