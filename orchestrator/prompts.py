"""Prompts of the routing methods, for code outside the benchmark harness.

One source of truth: the wording lives in `orchestrator.bench.prompts` (paraphrased from the
published methods; only the answer markers are exact, because parsing depends on them)."""

from orchestrator.bench.prompts import (
    AGGREGATOR_INSTRUCTION,
    MC_ANSWER_INSTRUCTION,
    SKILL_EXAMPLES,
    aggregator_prompt,
    expert_prompt,
    keyword_prompt,
)

__all__ = [
    "AGGREGATOR_INSTRUCTION",
    "MC_ANSWER_INSTRUCTION",
    "SKILL_EXAMPLES",
    "aggregator_prompt",
    "expert_prompt",
    "keyword_prompt",
]
