"""Settings from the environment (every one prefixed ORCHESTRATOR_), and the embedded default configuration.

    config = resolve_config(None, Settings())    # ORCHESTRATOR_CONFIG / ORCHESTRATOR_STORE
    app = create_app(config, GatewaySettings())  # ORCHESTRATOR_MAX_BODY_BYTES, ORCHESTRATOR_RATE_LIMIT_RPM, ...

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


class _FromEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", extra="ignore")


class Settings(_FromEnvironment):
    """What to run: ORCHESTRATOR_CONFIG (a YAML file), ORCHESTRATOR_STORE (a database URL)."""

    config: Path | None = None
    store: str | None = None


class GatewaySettings(_FromEnvironment):
    """How the gateway serves: ORCHESTRATOR_MAX_BODY_BYTES, ORCHESTRATOR_RATE_LIMIT_RPM, ORCHESTRATOR_REQUIRE_API_KEY, ..."""

    max_body_bytes: int = 1_048_576
    rate_limit_rpm: int = 0  # per API key; 0 = off
    rate_limit_burst: int | None = None
    require_api_key: bool = False  # also on whenever the store holds an active key
    default_max_tokens: int = 256
    health_cache_s: float = 10.0
    request_timeout_s: float = 600.0
    batch_chunk_size: int = 32  # batch items answered (and stored) together
    batch_pause_s: float = 0.0  # pause between batch chunks, leaving room for interactive traffic
    gc_tuning: bool = True  # freeze start-up objects and collect young garbage less often (gateway/lifespan.py)


def resolve_config(path: Path | None, settings: Settings | None = None) -> OrchestratorConfig:
    settings = settings or Settings()
    path = path or settings.config
    config = load_config(path) if path is not None else parse_config(DEFAULT_CONFIG, "<embedded default>")
    if settings.store:
        config = config.model_copy(update={"store": settings.store})
    return config
