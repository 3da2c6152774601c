"""Router-R1's two prompts: the policy's single user message and the callee's helper-agent prompt.

    text = policy_prompt(question, names=["smollm2-135m"], descriptions=["smollm2-135m: a tiny model"])
    sub = agent_prompt("Which enzyme unwinds DNA?")

Both are paraphrases of the released templates (reference §1.1 and §1.2); only the tags and the
`Name:query` route syntax are exact, because parsing and the format reward depend on them.
"""

from __future__ import annotations

from collections.abc import Sequence

from evals.answers import LETTERS

ROUTE_OPEN, ROUTE_CLOSE = "<search>", "</search>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
STOP_STRINGS = (ROUTE_CLOSE, ANSWER_CLOSE)

# The Llama template adds one rule (reference §1.1): write the reasoning inside the tags.
LLAMA_EXTRA_RULE = "Do not print the think tags on their own: put your reasoning inside <think> and </think>.\n"


def preprocess_question(question: str) -> str:
    """Strip whitespace and end with "?" (the reference's preprocessing)."""
    q = question.strip()
    return q if q.endswith("?") else q + "?"


def policy_prompt(
    question: str,
    *,
    names: Sequence[str],
    descriptions: Sequence[str],
    family: str = "qwen",
    choices: Sequence[str] | None = None,
) -> str:
    """The one user message the policy gets: rules, the pool, one description per expert, the question.

    `choices` (multiple choice, not in the reference, which is short-answer QA only) are listed
    after the question and the answer is asked as the option letter. The text is the rules
    block (`prompt_head`, the same for every question of a pool) followed by `question_block`,
    so training computes the rules' keys and values once per batch.
    """
    return prompt_head(names=names, descriptions=descriptions, family=family, multiple_choice=bool(choices)) + question_block(question, choices)


def prompt_head(*, names: Sequence[str], descriptions: Sequence[str], family: str = "qwen", multiple_choice: bool = False) -> str:
    """Everything before the question: the reference template's rules, each kept, in fewer words
    (every policy turn re-reads the prompt, and on a CPU each token of it costs)."""
    pool = ", ".join(names)
    extra = LLAMA_EXTRA_RULE if family == "llama" else ""
    desc = "\n".join(descriptions)
    if multiple_choice:
        answer_hint = "the letter of the correct option, for example <answer> B </answer>"
    else:
        answer_hint = "a short answer without explanation, for example <answer> Beijing </answer>"
    return (
        "Answer the given question. Every time you receive new information, first reason inside <think> and </think>.\n"
        f"{extra}"
        "If you lack knowledge, call a specialised LLM by writing <search> LLM-Name:Your-Query </search>, where "
        f"LLM-Name is exactly one of [{pool}] and Your-Query is a concrete question that helps answer the original one "
        "(never the descriptions, never the placeholder text). Before each call, reason inside <think> about why you "
        "need it and which LLM suits it best. The reply comes back between <information> and </information>. "
        "Calling different LLMs, or one LLM several times, is allowed.\n"
        f"LLMs:\n{desc}\n"
        f"When you need no more information, give the final answer inside <answer> and </answer>: {answer_hint}. "
        "Never write empty answer tags.\n"
    )


def question_block(question: str, choices: Sequence[str] | None = None) -> str:
    q = preprocess_question(question)
    if choices:
        q += "\nOptions:\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return f"Question: {q}\n"


def agent_prompt(sub_question: str) -> str:
    """The helper-agent prompt a callee receives (one user message)."""
    return (
        "You are a helpful assistant in a multi-agent process: a base model delegates sub-questions "
        "to you. Do your best either to answer directly with a brief explanation, or to give relevant "
        "context or background even if you cannot fully answer. If you cannot help at all, say so and "
        "tell the base model to consult other LLMs. Be concise (preferably under 512 tokens) and stay "
        "on topic.\n\n"
        f"Sub-question: {sub_question}"
    )


def information_block(reply: str) -> str:
    """The observation appended after a route: blank line, tagged reply, blank line (training layout)."""
    return f"\n\n{INFO_OPEN}{reply.strip()}{INFO_CLOSE}\n\n"


NONE_OBSERVATION = information_block("None")
