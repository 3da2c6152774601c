"""Wire types between the orchestrator and expert backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from experts.errors import ERROR_KINDS, ExpertError


class ChatMessage(BaseModel):
    """One chat turn. `tool_calls` (an assistant's calls), `tool_call_id` (a tool's reply) and
    `name` are OpenAI's fields, kept unchanged for experts that support tools."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[dict[str, Any], ...] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    def openai(self) -> dict[str, Any]:
        """The message as an OpenAI chat request holds it (an assistant turn that only calls
        tools has `content: null`)."""
        d = self.model_dump(exclude_none=True)
        if self.tool_calls is not None:
            d["tool_calls"] = list(self.tool_calls)
            if not self.content:
                d["content"] = None
        return d


class GenerationRequest(BaseModel):
    """One generation asked of an expert.

    Either `messages` (chat, sent through the model's chat template) or `prompt` (plain text
    completion) is set. `question_id` lets a recorded expert find its recorded output.
    `continue_final_message` continues the last assistant message instead of opening a new turn
    (Router-R1 appends observations inside one assistant turn).
    """

    model_config = ConfigDict(frozen=True)

    messages: tuple[ChatMessage, ...] | None = None
    prompt: str | None = None
    max_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    seed: int | None = None
    question_id: str | None = None
    continue_final_message: bool = False
    # OpenAI request fields sent to the expert unchanged (`tools`, `tool_choice`,
    # `response_format`, `parallel_tool_calls`); only experts with `supports_tools` get any.
    passthrough: dict[str, Any] | None = None

    def model_post_init(self, __context: Any) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a GenerationRequest needs exactly one of `messages` or `prompt`")

    @classmethod
    def chat(cls, content: str, **kwargs: Any) -> "GenerationRequest":
        return cls(messages=(ChatMessage(role="user", content=content),), **kwargs)

    def tool_fields(self) -> list[str]:
        """What only a tool-capable expert can honour: the passthrough fields, and a conversation
        that carries tool calls or tool results."""
        fields = sorted(self.passthrough or {})
        if any(m.role == "tool" or m.tool_calls for m in self.messages or ()):
            fields.append("tool messages")
        return fields

    def prompt_text(self) -> str:
        """The request as plain text (for logging, hashing and token estimates)."""
        if self.prompt is not None:
            return self.prompt
        return "\n".join(f"{m.role}: {m.content}" for m in self.messages or ())


class ErrorInfo(BaseModel):
    """A typed error carried in a result instead of being raised (one bad request in a batch
    must not fail the others)."""

    kind: str
    message: str
    retryable: bool = False
    retry_after_s: float | None = None
    status_code: int | None = None

    @classmethod
    def from_exception(cls, exc: ExpertError) -> "ErrorInfo":
        return cls(
            kind=exc.kind,
            message=exc.message,
            retryable=exc.retryable,
            retry_after_s=getattr(exc, "retry_after_s", None),
            status_code=getattr(exc, "status_code", None),
        )

    def to_exception(self, expert: str | None = None) -> ExpertError:
        cls = ERROR_KINDS.get(self.kind, ExpertError)
        exc = cls.__new__(cls)
        ExpertError.__init__(exc, self.message, expert=expert)
        if self.retry_after_s is not None:
            exc.retry_after_s = self.retry_after_s  # type: ignore[attr-defined]
        if self.status_code is not None:
            exc.status_code = self.status_code  # type: ignore[attr-defined]
        return exc


class GenerationResult(BaseModel):
    """The outcome of one request: text and usage, or `error`."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # True when token counts are estimates (recorded outputs carry no token counts upstream).
    tokens_estimated: bool = False
    latency_s: float = 0.0
    finish_reason: str | None = None
    # The stop string generation ended on (servers strip it from `text`); None when it ended on
    # end-of-sequence, the token limit, or a server that does not say (`finish_reason` "stop"
    # covers both a stop string and end-of-sequence).
    stop_string: str | None = None
    error: ErrorInfo | None = None
    attempts: int = 1
    # An answer the backend already parsed (recorded outputs carry the run's own extraction);
    # `answer_parsed` says the backend's parse is final, even when it found no answer.
    answer: str | None = None
    answer_parsed: bool = False
    # The expert's tool calls, exactly as its server sent them (OpenAI's `message.tool_calls`).
    tool_calls: list[dict[str, Any]] | None = None
    # What the call cost when the backend knows it (recorded outputs with a logged dollar cost);
    # None: priced from the tokens and the expert's price per Mtok.
    cost_usd: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, exc: ExpertError, *, latency_s: float = 0.0, attempts: int = 1) -> "GenerationResult":
        return cls(error=ErrorInfo.from_exception(exc), latency_s=latency_s, attempts=attempts)


@dataclass(frozen=True, slots=True)
class GenerationDelta:
    """A piece of an answer as a streaming backend produces it: new text, and/or tool-call
    deltas exactly as the expert's server streamed them (OpenAI's `delta.tool_calls`)."""

    text: str = ""
    tool_calls: list[dict[str, Any]] | None = None


DeltaHandler = Callable[[GenerationDelta], Awaitable[None]]


class HealthStatus(BaseModel):
    """Health of one expert, as `experts check` and `/v1/experts` show it."""

    name: str
    backend: str
    healthy: bool
    detail: str = ""
    latency_ms: float | None = None
