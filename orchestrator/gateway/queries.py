"""A chat completion request as the query routers and experts see, and its outcome as an error.

    query = query_from(ChatCompletionRequest(model="coe", messages=[...]), default_max_tokens=256)
    router, options = resolve_model(registry, body.model)
    err = failure_error(result)        # None when some expert answered

Used by the chat endpoint and by batch jobs, so both read a request and map a failure the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from experts.types import ChatMessage
from orchestrator.gateway import errors as E
from orchestrator.protocol import ChatCompletionRequest
from routers.types import Query
from routers.registry import router_names

if TYPE_CHECKING:
    from experts.registry import ExpertRegistry
    from orchestrator.pipeline import QueryResult


def query_from(body: ChatCompletionRequest, default_max_tokens: int) -> Query:
    """The query a chat body asks; `body.metadata` may name a benchmark question (recorded experts).

    Raises `E.Unprocessable` naming the field at fault."""
    try:
        text = body.question()
    except ValueError as e:
        raise E.Unprocessable(str(e), param="messages") from None
    if not text.strip():
        raise E.Unprocessable("the last user message is empty", param="messages")
    roles = {"system": "system", "developer": "system", "assistant": "assistant"}
    msgs = tuple(ChatMessage(role=roles.get(m.role, "user"), content=m.text()) for m in body.messages if m.role != "tool")  # type: ignore[arg-type]
    meta = body.metadata or {}
    choices = meta.get("choices")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise E.Unprocessable("metadata.choices must be a list of strings", param="metadata.choices")
    qid = meta.get("question_id")
    return Query(
        text=text, messages=msgs, max_tokens=body.token_limit(default_max_tokens), temperature=body.temperature,
        stop=tuple(body.stop or ()), seed=body.seed, question_id=None if qid is None else str(qid),
        choices=tuple(choices) if choices else None, category=meta.get("category") if isinstance(meta.get("category"), str) else None,
    )


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


def failure_error(result: "QueryResult") -> E.APIError | None:
    """The error a failed answer maps to, or None when some expert answered."""
    if result.ok:
        return None
    kinds = {c.error_kind for c in result.calls if c.error_kind}
    detail = "; ".join(f"{c.expert}: {c.error_message}" for c in result.calls if c.error_kind)[:1000]
    if kinds and kinds <= {"timeout"}:
        return E.UpstreamTimeout(f"every expert timed out: {detail}", code="upstream_timeout")
    if kinds and kinds <= {"overloaded", "rate_limited", "circuit_open"}:
        return E.ServiceUnavailable(f"experts are overloaded: {detail}", code="overloaded", retry_after=1)
    return E.UpstreamFailed(f"no expert answered: {detail}", code="upstream_failed")
