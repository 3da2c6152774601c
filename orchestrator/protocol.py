"""Wire models of the gateway's REST API, shared by the gateway and its client.

Names and fields follow the OpenAI API. Importing this module costs pydantic only (no server
code), so `orchestrator.client` can use the very models the gateway validates and serialises.

    body = ChatCompletionRequest(model="all-vote", messages=[{"role": "user", "content": "..."}])
    reply = ChatCompletionResponse.model_validate_json(response.content)
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

logger = logging.getLogger("orchestrator.gateway")

MAX_MESSAGES = 256
MAX_TOKENS_LIMIT = 32768


class OpenAIBaseModel(BaseModel):
    """Accepts fields it does not know (OpenAI clients send extras) and logs which it ignored."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extras(self) -> "OpenAIBaseModel":
        if self.model_extra:
            logger.debug("ignored fields in %s: %s", type(self).__name__, sorted(self.model_extra))
        return self


# ------------------------------------------------------------------ chat (`/v1/chat/completions`)
class ChatMessageIn(OpenAIBaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict) and p.get("type") == "text")
        return ""


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = False


class ChatCompletionRequest(OpenAIBaseModel):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="only n=1 is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        items = [v] if isinstance(v, str) else v
        if len(items) > 4:
            raise ValueError("at most 4 stop sequences")
        return items

    def token_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def question(self) -> str:
        """The text routed: the last user message (as RouteLLM does), with earlier turns as context."""
        users = [m.text() for m in self.messages if m.role == "user"]
        if not users:
            raise ValueError("messages must contain at least one user message")
        return users[-1]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: str | None = "stop"
    logprobs: None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    # Extensions: which experts answered and where the trace is.
    experts: list[str] = Field(default_factory=list)
    router: str | None = None
    trace_id: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


# ------------------------------------------------------------------ models (`/v1/models`)
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "llm-orchestrator"
    kind: Literal["router", "expert"] = "expert"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------ the error envelope
class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


# ------------------------------------------------------------------ batches (`/v1/batches`)
# Names and fields follow OpenAI's Batch API where they apply.
#
# Input shape: the requests inline, each one line of an OpenAI batch input file:
#
#     POST /v1/batches
#     {"requests": [{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
#                    "body": {"model": "all-vote", "messages": [{"role": "user", "content": "..."}]}}],
#      "metadata": {"purpose": "nightly eval"}}
#
# `body` is a chat completion request (`stream` must be false). `body.metadata` may carry
# `question_id`, `choices` and `category` so benchmark questions reach recorded experts and
# multiple-choice aggregation. Results come back in the shape of OpenAI's batch output lines.

MAX_BATCH_REQUESTS = 50_000

# Batch states (OpenAI's names; we never need `validating`, `finalizing` or `expired`):
BatchStatus = Literal[
    "in_progress",  # accepted; items are being answered (also after a restart, until resumed)
    "completed",  # every item has a result (successes and failures both count)
    "failed",  # the job itself broke (e.g. the store refused its results); `errors` says why
    "cancelling",  # cancel asked; stops at the next chunk boundary
    "cancelled",  # stopped before finishing; finished items stay available
]
ACTIVE_STATUSES = ("in_progress", "cancelling")


class BatchRequestItem(OpenAIBaseModel):
    custom_id: str | None = Field(default=None, max_length=256)
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    body: ChatCompletionRequest

    @model_validator(mode="after")
    def _no_stream(self) -> "BatchRequestItem":
        if self.body.stream:
            raise ValueError("body.stream must be false in a batch")
        return self


class BatchCreate(OpenAIBaseModel):
    requests: list[BatchRequestItem] = Field(min_length=1, max_length=MAX_BATCH_REQUESTS)
    endpoint: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    completion_window: str = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _unique_custom_ids(self) -> "BatchCreate":
        seen: set[str] = set()
        for r in self.requests:
            if r.custom_id is not None:
                if r.custom_id in seen:
                    raise ValueError(f"custom_id {r.custom_id!r} appears twice; custom ids must be unique")
                seen.add(r.custom_id)
        return self


class BatchRequestCounts(BaseModel):
    total: int = 0
    completed: int = 0  # answered successfully
    failed: int = 0  # answered with an error body


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str = "/v1/chat/completions"
    status: BatchStatus
    created_at: int
    completed_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    metadata: dict[str, str] | None = None
    errors: ErrorInfo | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    has_more: bool = False


class BatchResponse(BaseModel):
    status_code: int
    request_id: str | None = None  # the trace id (GET /v1/traces/{id})
    body: dict[str, Any]


class BatchItemError(BaseModel):
    code: str | None = None
    message: str


class BatchResultItem(BaseModel):
    """One line of the output: `response.body` is a chat.completion, or an error envelope."""

    id: str
    custom_id: str | None = None
    index: int
    response: BatchResponse
    error: BatchItemError | None = None


class BatchResults(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchResultItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
