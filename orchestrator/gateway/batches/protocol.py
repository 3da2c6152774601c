"""Wire models of `/v1/batches` (names and fields follow OpenAI's Batch API where they apply).

Input shape: the requests inline, each one line of an OpenAI batch input file:

    POST /v1/batches
    {"requests": [{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "all-vote", "messages": [{"role": "user", "content": "..."}]}}],
     "metadata": {"purpose": "nightly eval"}}

`body` is a chat completion request (`stream` must be false). `body.metadata` may carry
`question_id`, `choices` and `category` so benchmark questions reach recorded experts and
multiple-choice aggregation. Results come back in the shape of OpenAI's batch output lines.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from orchestrator.gateway.protocol import ChatCompletionRequest, ErrorInfo, OpenAIBaseModel

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
