"""A chat completion request as the query routers and experts see, and its outcome as an error.

    query = query_from(ChatCompletionRequest(model="coe", messages=[...]), default_max_tokens=256)
    router, options = resolve_model(registry, body.model)
    err = failure_error(result)        # None when some expert answered
    body = chat_completion(result, requested_model="coe")

Used by the chat endpoint and by batch jobs, so both read a request, answer it and map a failure
the same way.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import orjson

from experts.types import ChatMessage
from orchestrator.gateway import errors as E
from orchestrator.protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessageIn,
    ChatMessageOut,
    Usage,
    completion_id,
)
from routers.types import Query
from routers.registry import router_names

logger = logging.getLogger("orchestrator.gateway")

if TYPE_CHECKING:
    from experts.registry import ExpertRegistry
    from orchestrator.pipeline import QueryResult


def query_from(body: ChatCompletionRequest, default_max_tokens: int) -> Query:
    """The query a chat body asks; `body.metadata` may name a benchmark question (recorded experts).

    Raises `E.BadRequest` naming the field at fault."""
    try:
        text = body.question()
    except ValueError as e:
        raise E.BadRequest(str(e), param="messages") from None
    if not text.strip():
        raise E.BadRequest("the last user message is empty", param="messages")
    msgs = tuple(_message(i, m) for i, m in enumerate(body.messages))
    meta = body.metadata  # typed: choices are strings, at most one per option letter
    if meta is None:  # most requests: no empty RequestMetadata validated just to read its defaults
        return Query(text=text, messages=msgs, max_tokens=body.token_limit(default_max_tokens), temperature=body.temperature,
                     top_p=body.top_p, stop=tuple(body.stop or ()), seed=body.seed, passthrough=body.passthrough())
    return Query(
        text=text, messages=msgs, max_tokens=body.token_limit(default_max_tokens), temperature=body.temperature,
        top_p=body.top_p, stop=tuple(body.stop or ()), seed=body.seed,
        question_id=None if meta.question_id is None else str(meta.question_id),
        choices=tuple(meta.choices) if meta.choices else None, category=meta.category,
        passthrough=body.passthrough(), metadata={"answer": meta.answer} if meta.answer else {},
    )


_ROLES = {"system": "system", "developer": "system", "assistant": "assistant", "tool": "tool"}


def _message(i: int, m: ChatMessageIn) -> ChatMessage:
    """One message as experts receive it; content parts other than text are refused, not dropped."""
    if isinstance(m.content, list):
        for j, part in enumerate(m.content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise E.BadRequest(f"messages[{i}].content[{j}]: content of type {kind!r} is not supported; only text",
                                   param=f"messages.{i}.content.{j}.type", code="unsupported_content")
    return ChatMessage(role=_ROLES.get(m.role, "user"), content=m.text(),  # type: ignore[arg-type]
                       tool_calls=tuple(m.tool_calls) if m.tool_calls else None, tool_call_id=m.tool_call_id, name=m.name)


def resolve_model(registry: "ExpertRegistry", model: str) -> tuple[str, dict[str, Any] | None]:
    """`model` as (router name, router options): a router answers itself; an expert is a direct call."""
    if model in router_names():
        return model, None
    if registry.find(model) is not None:
        return "single", {"expert": registry.resolve(model)}
    raise E.NotFound(
        f"unknown model {model!r}; routers: {', '.join(router_names())}; experts: {', '.join(registry.names)}",
        param="model", code="model_not_found",
    )


# What a client is told of a failed expert call: a fixed phrase per error kind. The call's own
# message can hold an upstream's error body or its address; that goes to the trace and the log.
FAILURE_PHRASES = {
    "unavailable": "could not be reached",
    "timeout": "timed out",
    "rate_limited": "was rate limited by its server",
    "server_error": "its server failed",
    "bad_response": "sent a malformed answer",
    "rejected": "its server rejected the request",
    "overloaded": "is overloaded (its queue is full)",
    "circuit_open": "is failing repeatedly (circuit open)",
    "unknown_question": "has no recorded output for this question (recorded experts answer benchmark questions: metadata.question_id)",
}
# how the openai backend words a refusal: "expert 'x' answered 400: ..." (map_status_parts)
_ANSWERED = re.compile(r" answered (\d{3}):")


def failure_error(result: "QueryResult") -> E.APIError | None:
    """The error a failed answer maps to, or None when some expert answered. Its message names
    each failed expert and what kind of failure it was, and the trace that holds the details."""
    if result.ok:
        return None
    failed = [c for c in result.answer_calls if c.error_kind]
    kinds = {c.error_kind for c in failed}
    logger.warning("trace %s: no expert answered: %s", result.trace_id,
                   "; ".join(f"{c.expert}: {c.error_kind}: {c.error_message}" for c in failed)[:2000])
    summary = "; ".join(f"{c.expert} {FAILURE_PHRASES.get(c.error_kind or '', c.error_kind or 'failed')}" for c in failed)[:1000]
    detail = f"{summary}; trace {result.trace_id} has the details"
    if kinds and kinds <= {"timeout"}:
        return E.UpstreamTimeout(f"every expert timed out: {detail}", code="upstream_timeout")
    if kinds and kinds <= {"overloaded", "rate_limited", "circuit_open"}:
        return E.ServiceUnavailable(f"experts are overloaded: {detail}", code="overloaded", retry_after=1)
    statuses = {m.group(1) for c in failed if (m := _ANSWERED.search(c.error_message or ""))}
    if kinds == {"rejected"} and statuses and statuses <= {"400", "422"}:
        # the expert refused what the client asked (e.g. an invalid response_format schema): the
        # client's error; what its server said stays in the trace (the caller may read it there)
        return E.BadRequest(f"the expert refused the request ({', '.join(sorted(statuses))}): {detail}", code="upstream_rejected")
    return E.UpstreamFailed(f"no expert answered: {detail}", code="upstream_failed")


FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter")


def finish_reason(result: "QueryResult") -> str:
    """The chosen answer's finish reason in OpenAI's vocabulary (a server's own values, such as
    vLLM's "abort", become "stop")."""
    reason = result.finish_reason
    return reason if reason in FINISH_REASONS else "stop"


def usage(result: "QueryResult") -> Usage:
    # The answer's calls: exploration's shadow calls are the operator's, in the trace and /metrics.
    calls = result.answer_calls
    prompt, completion = sum(c.prompt_tokens for c in calls), sum(c.completion_tokens for c in calls)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def chat_completion(result: "QueryResult", requested_model: str) -> ChatCompletionResponse:
    """The chat.completion body of an answer: the chosen output's text, tool calls (unchanged)
    and finish reason; usage over every call; the experts, router and trace id."""
    calls = result.final.tool_calls
    message = ChatMessageOut(content=result.final.text if result.final.text or not calls else None, tool_calls=calls)
    return ChatCompletionResponse(
        model=",".join(result.experts_used) or requested_model,
        choices=[ChatChoice(message=message, finish_reason=finish_reason(result))],
        usage=usage(result), experts=result.experts_used, router=result.router, trace_id=result.trace_id,
    )


def chat_completion_json(result: "QueryResult", requested_model: str) -> bytes:
    """`chat_completion(result, requested_model).model_dump_json()`, field for field, without
    building the five response models: every non-streamed chat request answers through this
    (tests/gateway/test_chat_json.py holds the two to the same output)."""
    calls = result.final.tool_calls
    experts = result.experts_used
    answer_calls = result.answer_calls  # as `usage`: shadow calls are not the caller's
    prompt = sum(c.prompt_tokens for c in answer_calls)
    completion = sum(c.completion_tokens for c in answer_calls)
    return orjson.dumps({
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()),
        "model": ",".join(experts) or requested_model,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": result.final.text if result.final.text or not calls else None,
                                 "tool_calls": calls},
                     "finish_reason": finish_reason(result), "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "experts": experts, "router": result.router, "trace_id": result.trace_id,
    })
