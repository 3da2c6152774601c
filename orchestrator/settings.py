"""Settings from the environment (every one prefixed ORCHESTRATOR_), and the embedded default configuration.

    config = resolve_config(None, Settings())    # ORCHESTRATOR_CONFIG / ORCHESTRATOR_STORE
    app = create_app(config, GatewaySettings())  # ORCHESTRATOR_MAX_BODY_BYTES, ORCHESTRATOR_RATE_LIMIT_RPM, ...

With no `--config`, the orchestrator runs on the embedded default: SQLite in the working
directory and in-process experts on tiny real models from packaged weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from experts.spec import OrchestratorConfig, load_config, parse_config
from orchestrator.hosts import HostAllowList, is_loopback_host

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
    max_file_bytes: int = 64 * 1024 * 1024  # uploads to /v1/files (batch input files)
    # what one key may keep in /v1/files (uploads beyond either are a 400; delete files to make room)
    max_files_per_key: int = Field(default=1000, ge=1)
    max_file_storage_bytes: int = Field(default=1024 * 1024 * 1024, ge=1)
    rate_limit_rpm: int = 0  # per API key; 0 = off
    rate_limit_burst: int | None = None
    # --- security (README, "Security model")
    # True: every request needs a valid key, whatever the store holds. False: keys are needed once
    # any key has existed (revoking the last one never opens the gateway). None: True when `serve`
    # binds a non-loopback address, else False.
    require_api_key: bool | None = None
    key_cache_s: float = Field(default=5.0, ge=0.0, le=60.0)  # trust a key lookup this long: the revocation bound on other replicas
    key_cache_size: int = Field(default=10_000, ge=1)
    auth_failures_per_minute: int = Field(default=30, ge=1)  # per client address: unknown or malformed keys, before any store lookup
    auth_failures_burst: int = Field(default=10, ge=1)
    # Hosts (names, *.domain) and networks (CIDR) that experts registered over the API may point
    # at; empty = `POST /v1/experts` of openai experts is off. Comma-separated or a JSON list.
    api_expert_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    default_max_tokens: int = 256
    health_cache_s: float = 10.0
    request_timeout_s: float = 600.0
    batch_chunk_size: int = 32  # batch items answered (and stored) together
    batch_pause_s: float = 0.0  # pause between batch chunks, leaving room for interactive traffic
    # Where batch jobs run their expert groups: here, or on one Ray actor per expert for the job (README "Scaling out")
    batch_engine: Literal["in-process", "ray"] = "in-process"
    ray_address: str | None = None  # ray: the cluster to join ("auto", "ray://head:10001"); unset: a local Ray instance
    # Replicas sharing one store (README "Many replicas"): batch leases, the registry follower,
    # the trace journal and the store's statement timeout.
    replica_id: str | None = None  # default: <host>-<pid>-<random>, new at every start
    batch_lease_s: float = 30.0  # a job whose replica stopped renewing is taken over after this long
    batch_sweep_s: float = 5.0  # how often each replica looks for jobs with an expired lease
    batch_max_jobs: int = 4  # jobs one replica runs at once
    fit_poll_s: float = Field(default=2.0, gt=0.0, le=300.0)  # a fit version change (`profile use`, a refit) reaches routing within this
    # Learning from traffic (orchestrator/learning.py): routers refitted on feedback by a job any
    # replica runs, leased in the store; empty = no refits (ORCHESTRATOR_REFIT_ROUTERS=symbolic-moe,coe).
    refit_routers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    refit_threshold: int = Field(default=200, ge=1)  # new outcomes (feedback, checkable answers) that trigger a refit
    refit_check_s: float = Field(default=10.0, gt=0.0)  # how often each replica checks the trigger
    refit_lease_s: float = Field(default=300.0, gt=0.0)  # a refit whose replica died is retried after this long
    registry_poll_s: float = 2.0  # the registry follower's poll (Postgres is also notified at once)
    trace_journal_dir: Path | None = None  # default: ./trace-journal (replicas on one host may share it)
    trace_journal_replay_s: float = 60.0  # how often to look for journals of stopped replicas (and at start)
    store_command_timeout_s: float = 30.0  # asyncpg command_timeout: a statement taking longer fails (transient)
    # Set by `serve --workers N` for its workers: the directory of the tables they share (rate limits)
    shared_state_dir: Path | None = None
    gc_tuning: bool = True  # freeze start-up objects and collect young garbage less often (gateway/lifespan.py)

    @field_validator("shared_state_dir", mode="before")
    @classmethod
    def _unset_when_empty(cls, v: object) -> object:
        return None if v == "" else v  # compose sets every variable; empty means one worker, not "./"

    @field_validator("refit_routers", mode="before")
    @classmethod
    def _router_list(cls, v: object) -> object:
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, list):
            from routers.registry import router_class
            from routers.types import RoutingError

            for name in v:
                try:
                    cls_ = router_class(str(name))  # an unknown name fails at start, naming the routers
                except RoutingError as e:
                    raise ValueError(f"refit_routers: {e}") from None
                if getattr(cls_, "artefact_kind", None) is None:
                    raise ValueError(f"refit_routers: router {name!r} stores no fit, so it cannot be refitted")
        return v

    @field_validator("api_expert_hosts", mode="before")
    @classmethod
    def _host_list(cls, v: object) -> object:
        if isinstance(v, str):
            v = json.loads(v) if v.strip().startswith("[") else [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, list):
            HostAllowList.parse([str(x) for x in v])  # refuse a malformed entry at start, naming it
        return v

    def expert_hosts(self) -> HostAllowList:
        return HostAllowList.parse(self.api_expert_hosts)

    def for_bind(self, host: str) -> "GatewaySettings":
        """These settings for a server bound to `host`: an unset `require_api_key` becomes True
        unless `host` is loopback (a gateway reachable from the network never starts open)."""
        if self.require_api_key is not None:
            return self
        return self.model_copy(update={"require_api_key": not is_loopback_host(host)})


def resolve_config(path: Path | None, settings: Settings | None = None) -> OrchestratorConfig:
    settings = settings or Settings()
    path = path or settings.config
    config = load_config(path) if path is not None else parse_config(DEFAULT_CONFIG, "<embedded default>")
    if settings.store:
        config = config.model_copy(update={"store": settings.store})
    return config
