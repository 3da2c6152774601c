"""Expert specifications and the YAML configuration file.

    config = load_config(Path("experts.yaml"))
    for spec in config.experts: ...

An invalid file raises `ConfigError` whose message names the file and the offending field, e.g.
``experts.yaml: experts[1].max_batch_size: Input should be greater than or equal to 1``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from experts.errors import ConfigError


SECRET_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class BackendKind(StrEnum):
    OPENAI = "openai"
    LOCAL = "local"
    RECORDED = "recorded"


class Price(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(default=0.0, ge=0.0)
    output: float = Field(default=0.0, ge=0.0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


class ExpertSpec(BaseModel):
    """One registered expert. `name` is how routers, the CLI and the gateway refer to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    backend: BackendKind
    model: str = Field(min_length=1)
    base_url: str | None = None
    path: str | None = None
    # The upstream's API key: `api_key_secret` names an entry of the config's `secrets:` (the way
    # experts registered over the API refer to credentials); `api_key_env` names an environment
    # variable directly (config files only: the gateway refuses it from API callers).
    api_key_secret: str | None = Field(default=None, pattern=SECRET_NAME)
    api_key_env: str | None = None
    aliases: tuple[str, ...] = ()
    price_per_mtok: Price = Price()
    description: str = ""
    params_b: float | None = Field(default=None, gt=0, description="parameters in billions (CoE budget)")
    max_batch_size: int = Field(default=16, ge=1, le=4096)
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    max_queue: int = Field(default=1024, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0.0, le=10_000)
    timeout_s: float = Field(default=120.0, gt=0.0)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_new_tokens: int = Field(default=512, ge=1)
    chat_template: bool = Field(default=True, description="local: wrap prompts in the model's chat template")
    supports_tools: bool = Field(default=False, description="openai: the server honours tools, tool_choice and response_format")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="local: weights and compute dtype (auto: bfloat16 on CUDA, float32 on CPU)"
    )
    # circuit breaker (orchestrator/circuit.py): open after N consecutive failures, probe after the cool-down
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown_s: float = Field(default=30.0, gt=0.0, le=3600)

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as e:
            raise ValueError(f"not a valid URL ({e})") from None
        if not parts.hostname:
            raise ValueError("has no host")
        if "@" in parts.netloc:
            # credentials in a URL end up in logs and error messages; secrets: keeps them out
            raise ValueError("must not carry credentials (user:password@); set api_key_secret (or api_key_env) instead")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _check_backend_fields(self) -> "ExpertSpec":
        if self.backend is BackendKind.OPENAI and not self.base_url:
            raise ValueError("base_url is required for backend 'openai'")
        if self.backend is BackendKind.RECORDED and not self.path:
            raise ValueError("path (a recorded-outputs directory) is required for backend 'recorded'")
        if self.supports_tools and self.backend is not BackendKind.OPENAI:
            # only an OpenAI-compatible server receives the fields unchanged; others would drop them
            raise ValueError("supports_tools needs backend 'openai' (tools are passed to the server unchanged)")
        return self

    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class ExactCacheConfig(BaseModel):
    """The gateway's exact response cache (off unless `enabled`): a temperature-0 chat request
    identical to one the same API key asked within `ttl_s` gets that answer again."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ttl_s: float = Field(default=300.0, gt=0.0, le=86_400.0)
    max_entries: int = Field(default=10_000, ge=1, le=1_000_000)


class SemanticRouterCache(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # cosine similarity of the question embeddings at or above which a stored answer is served
    threshold: float = Field(default=0.97, gt=0.0, le=1.0)


class SemanticCacheConfig(BaseModel):
    """The gateway's semantic cache, per router (none unless listed): a temperature-0 question
    whose embedding is at least `threshold` similar to one the same API key asked that router
    within `ttl_s` gets that answer. `max_entries` bounds each (key, router) bucket, `max_buckets`
    the buckets kept (least recently used dropped)."""

    model_config = ConfigDict(extra="forbid")

    routers: dict[str, SemanticRouterCache] = Field(default_factory=dict)
    ttl_s: float = Field(default=300.0, gt=0.0, le=86_400.0)
    max_entries: int = Field(default=1_000, ge=1, le=100_000)
    max_buckets: int = Field(default=1_000, ge=1, le=100_000)


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exact: ExactCacheConfig = Field(default_factory=ExactCacheConfig)
    semantic: SemanticCacheConfig = Field(default_factory=SemanticCacheConfig)


class OrchestratorConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid")

    store: str = "sqlite+aiosqlite:///./orchestrator.db"
    experts: list[ExpertSpec] = Field(default_factory=list)
    # Credentials experts may use, by a name the operator chooses -> the environment variable that
    # holds the value (`secrets: {fleet: VLLM_FLEET_KEY}`; experts say `api_key_secret: fleet`).
    # API callers can name a secret, never read it, and never pick an arbitrary variable.
    secrets: dict[Annotated[str, StringConstraints(pattern=SECRET_NAME)], Annotated[str, StringConstraints(pattern=ENV_VAR_NAME)]] = Field(default_factory=dict)
    # Router-specific constructor arguments keyed by router name.
    routers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    default_router: str = "single"
    # Named expert pools (e.g. recorded model names) that `bench --pool NAME` accepts.
    pools: dict[str, list[str]] = Field(default_factory=dict)
    # Opt-in response caches of the gateway (orchestrator/response_cache.py); both off by default.
    cache: CacheConfig = Field(default_factory=CacheConfig)
    # The routers' sentence embedder: torch (float, the reference) or onnx-int8 (several times
    # faster on CPU; exported by `orchestrator models prepare`). None: ORCHESTRATOR_EMBEDDER, else torch.
    embedder: Literal["torch", "onnx-int8"] | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> "OrchestratorConfig":
        seen: dict[str, str] = {}
        for spec in self.experts:
            for n in spec.all_names():
                key = n.lower()
                if key in seen:
                    raise ValueError(f"expert name or alias {n!r} is used twice ({seen[key]} and {spec.name})")
                seen[key] = spec.name
        for spec in self.experts:
            if spec.api_key_secret is not None and spec.api_key_secret not in self.secrets:
                raise ValueError(f"expert {spec.name!r}: api_key_secret {spec.api_key_secret!r} is not a name under secrets:")
        return self


def resolve_api_key(spec: ExpertSpec, secrets: Mapping[str, str]) -> str | None:
    """The value of the upstream API key `spec` refers to (None when it has none, or the variable
    is unset); `secrets` is the config's name -> environment variable mapping."""
    var = secrets.get(spec.api_key_secret) if spec.api_key_secret else spec.api_key_env
    if spec.api_key_secret and var is None:
        raise ConfigError(f"expert {spec.name!r}: api_key_secret {spec.api_key_secret!r} is not a name under secrets:")
    return (os.environ.get(var) or None) if var else None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = _format_loc(tuple(p for p in e["loc"] if p not in ("function-after",)))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def _resolve_relative_paths(data: dict[str, Any], base_dir: Path) -> None:
    """Paths inside a config file are relative to the file, not to the working directory."""
    for item in data.get("experts") or []:
        if isinstance(item, dict) and isinstance(item.get("path"), str):
            p = Path(item["path"]).expanduser()
            if not p.is_absolute():
                item["path"] = str((base_dir / p).resolve())


def parse_config(data: Any, source: str = "<config>", base_dir: Path | None = None) -> OrchestratorConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping with keys such as 'store' and 'experts'")
    if base_dir is not None:
        _resolve_relative_paths(data, base_dir)
    try:
        return OrchestratorConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def load_config(path: Path) -> OrchestratorConfig:
    """Read and validate a YAML configuration file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass an existing file with --config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the file ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_config(data, str(path), base_dir=path.parent)
