"""A chat completion request as the query routers and experts see.

    query = query_from(ChatCompletionRequest(model="coe", messages=[...]), default_max_tokens=256)

Used by the chat endpoint and by batch jobs, so both read a request the same way.
"""

from __future__ import annotations

from experts.types import ChatMessage
from orchestrator.gateway import errors as E
from orchestrator.gateway.protocol import ChatCompletionRequest
from routers.base import Query


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
