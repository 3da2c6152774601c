"""Prompts of the routing methods (paraphrased from the published methods; only the answer
markers are exact, because parsing depends on them)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.answers import strip_reasoning

MC_INSTRUCTION = (
    'Think step by step, then finish your answer with "The answer is (X)" where X is the letter of the correct option.'
)

SKILL_EXAMPLES = (
    "psychology, virology, behavioral theory, microbiology, diplomacy, political science, property law, finance, business"
)


def expert_prompt(question_with_options: str, instruction: str = MC_INSTRUCTION) -> str:
    """Symbolic-MoE's expert / profiling prompt: the question, then reason and end with the marker."""
    return f"Question: {question_with_options}\n\n{instruction}".strip()


def keyword_prompt(question_with_options: str) -> str:
    """Symbolic-MoE's skill-tagging prompt: 2–5 comma-separated keywords after `Keywords:`."""
    return (
        f"Question: {question_with_options}\n\n"
        "What are the core knowledge areas, subjects or skills needed to answer this question? "
        "Give 2 to 5 keywords, separated by commas.\n"
        f"Examples of keywords: {SKILL_EXAMPLES}.\n"
        "Output only the keywords, in this format:\n"
        "Keywords: <keyword 1>, <keyword 2>, ..."
    )


def aggregator_prompt(question_with_options: str, responses: Sequence[str], answer_instruction: str = MC_INSTRUCTION) -> str:
    """The Mixture-of-Agents synthesis prompt Symbolic-MoE places in the user turn.

    Instruction first, then each candidate (reasoning before the last `</think>` removed), then
    the question with the same answer-format instruction the experts had."""
    blocks = "\n\n".join(
        f"### Model {i}'s response:\n{strip_reasoning(r).strip()}" for i, r in enumerate(responses, 1) if r.strip()
    )
    return (
        "You have been given responses from several models to the query below. Your task is to synthesise them "
        "into one high-quality response. Evaluate the information they give critically: some of it may be "
        "biased or wrong. Do not simply copy any one response; give a refined, accurate and comprehensive "
        "answer that is well structured and adheres to the requested format.\n\n"
        f"Responses from models:\n\n{blocks}\n\n"
        f"Question: {question_with_options}\n\n{answer_instruction}"
    ).strip()
