"""Wire models of the gateway's REST API, shared by the gateway and its client.

Names and fields follow the OpenAI API. Importing this module costs pydantic only (no server
code), so `orchestrator.client` can use the very models the gateway validates and serialises.
Request models refuse fields they do not know, as OpenAI does: the gateway answers 400 naming
them (`unsupported_parameter`), never dropping a field silently.

    body = ChatCompletionRequest(model="all-vote", messages=[{"role": "user", "content": "..."}])
    reply = ChatCompletionResponse.model_validate_json(response.content)
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from evals.answers import LETTERS
from experts.spec import SECRET_NAME, ExpertSpec, Price

MAX_MESSAGES = 256
MAX_TOKENS_LIMIT = 32768


class OpenAIBaseModel(BaseModel):
    """Refuses fields it does not know: a request's every field is honoured or refused, never
    dropped (OpenAI answers an unknown parameter with a 400 naming it; so does the gateway)."""

    model_config = ConfigDict(extra="forbid")


# OpenAI chat parameters the gateway cannot honour, accepted only at the value that changes
# nothing (clients such as LangChain may send the default explicitly).
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "store": (False,),
    "service_tier": ("auto", "default"),
}


# ------------------------------------------------------------------ chat (`/v1/chat/completions`)
class ChatMessageIn(OpenAIBaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)
    # tool use (OpenAI's shapes, passed to tool-capable experts unchanged)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, max_length=256)

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if isinstance(p, dict) and p.get("type") == "text")
        return ""


class RequestMetadata(BaseModel):
    """`metadata` of a chat request: which benchmark question it is (recorded experts replay it)
    and its options (multiple-choice aggregation); any other keys are kept as given."""

    model_config = ConfigDict(extra="allow")

    question_id: str | int | None = Field(default=None, description="a benchmark question's id (recorded experts answer by it)")
    # the one option alphabet (evals.answers.LETTERS): more options could not be answered by letter
    choices: list[str] | None = Field(default=None, max_length=len(LETTERS), description=f"the options, at most {len(LETTERS)}")
    category: str | None = Field(default=None, max_length=256)
    # A checkable answer (an option letter, or a short answer): the trace keeps it, and learning
    # from traffic scores every expert's answer against it (no feedback needed). Routers never see it.
    answer: str | None = Field(default=None, min_length=1, max_length=256, description="the question's checkable answer, for learning")


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
    metadata: RequestMetadata | None = None
    # Tools and structured output: passed unchanged to ONE expert that supports them.
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    # Accepted only at their neutral value (NEUTRAL_VALUES); anything else is a 400.
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator(*NEUTRAL_VALUES)
    @classmethod
    def _neutral_only(cls, v: Any, info: ValidationInfo) -> Any:
        allowed = NEUTRAL_VALUES[info.field_name or ""]
        if v is not None and v not in allowed:
            raise ValueError(f"not supported by this gateway (only {' or '.join(map(repr, allowed))})")
        return v

    def passthrough(self) -> dict[str, Any] | None:
        """The fields only a tool-capable expert can honour, as its server receives them."""
        fields = {k: v for k in ("tools", "tool_choice", "parallel_tool_calls", "response_format") if (v := getattr(self, k)) is not None}
        if fields.get("response_format") == {"type": "text"}:
            del fields["response_format"]  # plain text is what every expert answers anyway
        if fields.get("tools") == [] and len(fields) == 1:
            return None  # `tools: []` asks for nothing
        return fields or None

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
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


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
    tool_calls: list[dict[str, Any]] | None = None


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


# ------------------------------------------------------------------ passed through (`/v1/completions`, `/v1/embeddings`)
class PassthroughRequest(BaseModel):
    """A request the gateway forwards to ONE expert's OpenAI-compatible server: `model` names
    the expert (no router answers these), every other field reaches the server unchanged."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)


class CompletionRequest(PassthroughRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: Literal[False] = Field(default=False, description="not supported on /v1/completions")


class EmbeddingRequest(PassthroughRequest):
    input: str | list[str] | list[int] | list[list[int]]


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


# ------------------------------------------------------------------ files (`/v1/files`)
# OpenAI's Files API, for batch input: upload a JSONL file with purpose "batch", then create a
# batch from its id. A finished batch's results are files too (`output_file_id`, `error_file_id`).

MAX_FILE_BYTES = 64 * 1024 * 1024  # the default upload limit (ORCHESTRATOR_MAX_FILE_BYTES)
FilePurpose = Literal["batch", "batch_output"]


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


# ------------------------------------------------------------------ batches (`/v1/batches`)
# Names and fields follow OpenAI's Batch API. Two input shapes:
#
#     POST /v1/batches {"input_file_id": "file-...", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
#
# (the SDK's `client.batches.create`; the file holds one request per line), or the requests inline:
#
#     POST /v1/batches
#     {"requests": [{"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
#                    "body": {"model": "all-vote", "messages": [{"role": "user", "content": "..."}]}}],
#      "metadata": {"purpose": "nightly eval"}}
#
# `body` is a chat completion request (`stream` must be false). `body.metadata` may carry
# `question_id`, `choices` and `category` so benchmark questions reach recorded experts and
# multiple-choice aggregation. A request that cannot be answered (an unknown model, a router not
# fitted, a bad line of the file) fails alone: its result is an error, the others are answered.
# Results come back in the shape of OpenAI's batch output lines, through `output_file_id` and
# `error_file_id` once the batch is finished, or page by page (`GET /v1/batches/{id}/results`).

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
    input_file_id: str | None = Field(default=None, max_length=128)
    requests: list[BatchRequestItem] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_REQUESTS)
    endpoint: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)

    @model_validator(mode="after")
    def _one_input(self) -> "BatchCreate":
        if (self.input_file_id is None) == (self.requests is None):
            raise ValueError("give exactly one of input_file_id (an uploaded file, purpose 'batch') or requests (inline)")
        return self

    @model_validator(mode="after")
    def _unique_custom_ids(self) -> "BatchCreate":
        seen: set[str] = set()
        for r in self.requests or ():
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
    completion_window: str = "24h"
    input_file_id: str | None = None  # None for an inline batch
    status: BatchStatus
    created_at: int
    in_progress_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelled_at: int | None = None
    # JSONL results once the batch is finished: successes, and failures (None when there are none)
    output_file_id: str | None = None
    error_file_id: str | None = None
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


# ------------------------------------------------------------------ experts (`/v1/experts`)
class ExpertCreate(BaseModel):
    """`POST /v1/experts` (admin keys): an `openai` expert whose `base_url` host is on the server's
    allow-list (`ORCHESTRATOR_API_EXPERT_HOSTS`). Its credentials are named, never given:
    `api_key_secret` is a name under the config file's `secrets:`. Local and recorded experts, a
    caller-chosen `api_key_env` and file paths exist only in the server's configuration file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    backend: Literal["openai"] = "openai"
    model: str = Field(min_length=1, max_length=512)
    base_url: str = Field(min_length=1, max_length=2048, description="http(s)://host[:port]/v1 on the allow-list")
    api_key_secret: str | None = Field(default=None, pattern=SECRET_NAME, description="a name under the server's secrets:")
    api_key_env: None = Field(default=None, description="refused: name a secret (api_key_secret) instead")
    path: None = Field(default=None, description="refused: recorded experts come from the configuration file")
    aliases: list[str] = Field(default_factory=list, max_length=16)
    price_per_mtok: Price = Price()
    description: str = Field(default="", max_length=2000)
    params_b: float | None = Field(default=None, gt=0)
    max_batch_size: int = Field(default=16, ge=1, le=4096)
    max_concurrency: int = Field(default=4, ge=1, le=1024)
    max_queue: int = Field(default=1024, ge=1, le=100_000)
    max_wait_ms: float = Field(default=5.0, ge=0.0, le=10_000)
    timeout_s: float = Field(default=120.0, gt=0.0, le=3600)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_new_tokens: int = Field(default=512, ge=1, le=MAX_TOKENS_LIMIT)
    supports_tools: bool = Field(default=False, description="the server honours tools, tool_choice and response_format")
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown_s: float = Field(default=30.0, gt=0.0, le=3600)

    @field_validator("backend", mode="before")
    @classmethod
    def _only_openai(cls, v: object) -> object:
        if v in ("local", "recorded"):
            raise ValueError(f"{v} experts can only be defined in the server's configuration file")
        return v

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _no_env(cls, v: object) -> object:
        if v is not None:
            raise ValueError("not accepted over the API: name a secret the operator mapped (api_key_secret)")
        return v

    @field_validator("path", mode="before")
    @classmethod
    def _no_path(cls, v: object) -> object:
        if v is not None:
            raise ValueError("not accepted over the API: file paths come from the server's configuration file")
        return v

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, v: list[str]) -> list[str]:
        for a in v:
            if not 1 <= len(a) <= 128:
                raise ValueError("each alias has 1 to 128 characters")
        return v

    def to_spec(self) -> ExpertSpec:
        """The registry's spec (validated again: ExpertSpec checks the URL's shape)."""
        return ExpertSpec.model_validate(self.model_dump(exclude={"api_key_env", "path"}))


# ------------------------------------------------------------------ API keys (`/v1/keys`)
class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="a label for the key")
    role: Literal["admin", "user"] = "user"


class KeyObject(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    role: Literal["admin", "user"]
    created_at: int = 0
    revoked: bool = False
    key: str | None = Field(default=None, description="the secret key: only in the answer that created it")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyObject]


# ------------------------------------------------------------------ feedback (`/v1/feedback`)
class FeedbackCreate(OpenAIBaseModel):
    """A rating of one answered request: a key may rate its own traces (an admin key any)."""

    trace_id: str = Field(min_length=1, max_length=64, description="the `trace_id` a chat completion returned")
    score: float = Field(ge=-1.0, le=1.0, description="-1 (bad) to 1 (good); thumbs down / up are -1 / 1")
    comment: str | None = Field(default=None, max_length=4000)
    call_seq: int | None = Field(default=None, ge=0, le=10_000, description="rate one expert call of the trace (its `seq`), not the answer")


class FeedbackObject(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    trace_id: str
    score: float
    comment: str | None = None
    created_at: int = 0
    call_seq: int | None = None
