"""Settings from the environment, and the embedded default configuration.

With no `--config`, the orchestrator runs on the embedded default: SQLite in the working
directory and in-process experts on tiny real models from packaged weights."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from experts.spec import OrchestratorConfig, load_config, parse_config

DEFAULT_CONFIG = {
    "store": "sqlite+aiosqlite:///./orchestrator.db",
    "default_router": "single",
    "experts": [
        {
            "name": "smollm2-135m",
            "backend": "local",
            "model": "smollm2-135m-instruct",
            "description": "SmolLM2-135M-Instruct (HuggingFaceTB), a tiny general chat model; CPU, in-process",
            "params_b": 0.135,
            "max_batch_size": 8,
            "max_concurrency": 1,
            "max_new_tokens": 256,
            "timeout_s": 600,
        },
        {
            "name": "gemma-3-270m",
            "backend": "local",
            "model": "gemma-3-270m",
            "description": "gemma-3-270m base model (Google), a tiny pretrained model prompted few-shot; CPU, in-process",
            "params_b": 0.27,
            "chat_template": False,
            "max_batch_size": 8,
            "max_concurrency": 1,
            "max_new_tokens": 256,
            "timeout_s": 600,
        },
    ],
}


class Settings(BaseSettings):
    """Environment: ORCHESTRATOR_CONFIG (a YAML file), ORCHESTRATOR_STORE (a database URL)."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")

    config: Path | None = None
    store: str | None = None


def resolve_config(path: Path | None, settings: Settings | None = None) -> OrchestratorConfig:
    settings = settings or Settings()
    path = path or settings.config
    config = load_config(path) if path is not None else parse_config(DEFAULT_CONFIG, "<embedded default>")
    if settings.store:
        config = config.model_copy(update={"store": settings.store})
    return config
