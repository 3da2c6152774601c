"""Experts: specifications, the registry, and the backends that generate text."""

from experts.backends.base import ExpertBackend
from experts.backends.recorded import RecordedBackend, RecordedLibrary
from experts.errors import (
    ConfigError,
    ExpertBadResponse,
    ExpertError,
    ExpertOverloaded,
    ExpertRateLimited,
    ExpertRequestRejected,
    ExpertServerError,
    ExpertTimeout,
    ExpertUnavailable,
    OrchestratorError,
    UnknownQuestion,
)
from experts.registry import ExpertRegistry, UnknownExpert, build_backend
from experts.spec import BackendKind, ExpertSpec, OrchestratorConfig, Price, load_config, parse_config
from experts.types import ChatMessage, ErrorInfo, GenerationRequest, GenerationResult, HealthStatus

__all__ = [
    "BackendKind",
    "ChatMessage",
    "ConfigError",
    "ErrorInfo",
    "ExpertBackend",
    "ExpertBadResponse",
    "ExpertError",
    "ExpertOverloaded",
    "ExpertRateLimited",
    "ExpertRegistry",
    "ExpertRequestRejected",
    "ExpertServerError",
    "ExpertSpec",
    "ExpertTimeout",
    "ExpertUnavailable",
    "GenerationRequest",
    "GenerationResult",
    "HealthStatus",
    "OrchestratorConfig",
    "OrchestratorError",
    "Price",
    "RecordedBackend",
    "RecordedLibrary",
    "UnknownExpert",
    "UnknownQuestion",
    "build_backend",
    "load_config",
    "parse_config",
]
