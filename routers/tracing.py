"""Turning expert calls into trace records (tokens, cost, latency, errors): one function for every
execution path and every router that makes its own calls."""

from __future__ import annotations

from experts.registry import ExpertRegistry
from experts.types import GenerationResult
from store.records import ExpertCallRecord

OUTPUT_LIMIT_CHARS = 20_000


def call_record(
    registry: ExpertRegistry,
    expert: str,
    result: GenerationResult,
    *,
    role: str = "expert",
    answer: str | None = None,
    fallback_for: str | None = None,
    keep_output: bool = True,
) -> ExpertCallRecord:
    try:
        price = registry.spec(expert).price_per_mtok
        cost = price.cost(result.prompt_tokens, result.completion_tokens) if result.cost_usd is None else result.cost_usd
    except KeyError:
        cost = result.cost_usd or 0.0
    return ExpertCallRecord(
        expert=expert,
        role=role,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        tokens_estimated=result.tokens_estimated,
        cost_usd=cost,
        latency_s=result.latency_s,
        attempts=result.attempts,
        finish_reason=result.finish_reason,
        error_kind=result.error.kind if result.error else None,
        error_message=result.error.message if result.error else None,
        fallback_for=fallback_for,
        output=result.text[:OUTPUT_LIMIT_CHARS] if keep_output else None,
        answer=answer,
    )
