"""Async Python client of the orchestrator gateway.

    from orchestrator.client import AsyncOrchestratorClient

    async with AsyncOrchestratorClient("http://127.0.0.1:8000", api_key=key) as client:
        reply = await client.chat("all-vote", "Which enzyme unwinds DNA?")
"""

from orchestrator.client._client import AsyncOrchestratorClient
from orchestrator.client._exceptions import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BatchTimeout,
    ClientError,
    GatewayTimeoutError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    UnprocessableEntityError,
    UpstreamError,
)
from orchestrator.client._models import (
    BatchObject,
    BatchRequestItem,
    BatchResultItem,
    ChatCompletion,
    ChatCompletionChunk,
    ExpertDeleted,
    ExpertInfo,
    ExpertSpec,
    ModelCard,
    Readiness,
    TraceRecord,
)

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "AsyncOrchestratorClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchObject",
    "BatchRequestItem",
    "BatchResultItem",
    "BatchTimeout",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ClientError",
    "ExpertDeleted",
    "ExpertInfo",
    "ExpertSpec",
    "GatewayTimeoutError",
    "InternalServerError",
    "ModelCard",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "Readiness",
    "ServiceUnavailableError",
    "StreamError",
    "TraceRecord",
    "UnprocessableEntityError",
    "UpstreamError",
]
