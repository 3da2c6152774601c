"""Benchmark and routing-method prompts.

Usage::

    from evals.prompts import exemplars_by_category, mmlu_pro_cot_prompt

    shots = exemplars_by_category(load_mmlu_pro(paths["validation"]))
    prompt = mmlu_pro_cot_prompt(q, shots[q.category])                 # the official 5-shot CoT
    prompt = mmlu_pro_cot_prompt(q, shots[q.category], token_counter=count_tokens)

* MMLU-Pro 5-shot chain of thought: the authors' format, byte for byte (header with the category
  twice, then ``Question:``/``Options:`` blocks, exemplar CoTs starting ``Answer: Let's think step
  by step.``, and the question left open on that same line).
* Zero-shot CoT for MMLU-Pro (ends with ``The answer is (X)``) and for GPQA (ends with a line
  ``Answer: $LETTER``).
* Symbolic-MoE's expert, skill-keyword and aggregator prompts. They are paraphrased: only the
  answer markers (``The answer is (X)``, ``Keywords:``, ``Responses from models:``,
  ``### Model i's response:``) are exact, because parsing depends on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from evals.answers import LETTERS, strip_reasoning
from evals.datasets import Question

__all__ = [
    "AGGREGATOR_INSTRUCTION",
    "BOXED_ANSWER_INSTRUCTION",
    "COT_START",
    "MC_ANSWER_INSTRUCTION",
    "MMLU_PRO_HEADER",
    "SKILL_EXAMPLES",
    "aggregator_prompt",
    "exemplars_by_category",
    "expert_prompt",
    "format_options",
    "format_question_with_options",
    "gpqa_zero_shot_prompt",
    "keyword_prompt",
    "mmlu_pro_cot_prompt",
    "mmlu_pro_short_prompt",
    "mmlu_pro_zero_shot_prompt",
]

# The MMLU-Pro authors' header (cot_prompt_lib/initial_prompt.txt), the category substituted twice.
MMLU_PRO_HEADER = (
    "You are an expert in {category}. Below is a series of example questions (with answers) about {category} "
    "for demonstration. You will be given a question at the end, after the examples, for you to answer. "
    "First give step-by-step reasoning about how to solve the question. Then output the answer."
)
COT_START = "Answer: Let's think step by step."
_EXEMPLAR_COT_START = "A: Let's think step by step."  # how validation `cot_content` begins

MC_ANSWER_INSTRUCTION = (
    'Reason step by step first, then write "The answer is (X)" at the end of your response, where X is the letter '
    "of the option you choose (a single capital letter)."
)
BOXED_ANSWER_INSTRUCTION = (
    'Reason step by step first, then write "The answer is \\boxed{X}" at the end of your response, where X is '
    "your final answer."
)
SKILL_EXAMPLES = "psychology, virology, behavioral theory, microbiology, diplomacy, political science, property law, finance, business"
AGGREGATOR_INSTRUCTION = (
    "You are given responses from several open-source models to the latest user query. Your job is to combine "
    "them into one high-quality response. Weigh the information in these responses critically, since some of it "
    "may be biased or wrong. Do not just repeat the given answers: give a refined, accurate and complete reply "
    "to the instruction, well organised, coherent, and held to the highest standards of accuracy and reliability."
)

OptionLayout = Literal["lines", "inline"]


# ----------------------------------------------------------------------------- formatting


def format_options(options: Sequence[str], *, layout: OptionLayout = "lines") -> str:
    """``lines``: one ``A. text`` per line (MMLU-Pro). ``inline``: ``(A) text (B) text``
    (the layout of Symbolic-MoE's question files)."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options are supported, got {len(options)}")
    if layout == "inline":
        return " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))


def format_question_with_options(q: Question, *, layout: OptionLayout = "lines") -> str:
    """``lines``: the question, ``Options:`` and one option per line.
    ``inline``: Symbolic-MoE's ``<question> The options are: (A) ... (D) ....``."""
    if layout == "inline":
        return f"{q.question} The options are: {format_options(q.options, layout='inline')}."
    return f"{q.question}\nOptions:\n{format_options(q.options)}"


def _question_text(question: Question | str, layout: OptionLayout) -> str:
    return question if isinstance(question, str) else format_question_with_options(question, layout=layout)


# ----------------------------------------------------------------------------- MMLU-Pro


def exemplars_by_category(validation: Iterable[Question]) -> dict[str, list[Question]]:
    """Validation questions grouped by category, in file order (the order exemplars are used)."""
    out: dict[str, list[Question]] = {}
    for v in validation:
        out.setdefault(v.category, []).append(v)
    return out


def _mmlu_pro_block(q: Question) -> str:
    return f"Question:\n{q.question}\nOptions:\n{format_options(q.options)}\n"


def _mmlu_pro_exemplar(e: Question) -> str:
    return _mmlu_pro_block(e) + e.cot_content.replace(_EXEMPLAR_COT_START, COT_START) + "\n\n"


def mmlu_pro_cot_prompt(
    question: Question,
    exemplars: Sequence[Question] | Mapping[str, Sequence[Question]],
    *,
    max_exemplars: int = 5,
    token_counter: Callable[[str], int] | None = None,
    max_prompt_tokens: int = 2048,
) -> str:
    """The MMLU-Pro authors' k-shot chain-of-thought prompt.

    Exemplars are the first ``max_exemplars`` of ``exemplars`` in the question's category (a
    mapping from `exemplars_by_category` is accepted too). With a ``token_counter``, exemplars
    are dropped from the end one by one until the prompt has *fewer than* ``max_prompt_tokens``
    tokens, as in the authors' code (4,096 context minus 2,048 generated). The question itself
    always stays, even if it alone is too long.
    """
    pool = exemplars.get(question.category, []) if isinstance(exemplars, Mapping) else exemplars
    shots = [e for e in pool if e.category == question.category and e.id != question.id][: max(0, max_exemplars)]
    head = MMLU_PRO_HEADER.format(category=question.category) + "\n"
    tail = _mmlu_pro_block(question) + COT_START
    while True:
        prompt = head + "".join(_mmlu_pro_exemplar(e) for e in shots) + tail
        if token_counter is None or not shots or token_counter(prompt) < max_prompt_tokens:
            return prompt
        shots.pop()


def mmlu_pro_zero_shot_prompt(question: Question) -> str:
    """Zero-shot chain of thought for a multiple-choice question, ending in ``The answer is (X)``."""
    about = f" about {question.category}" if question.category else ""
    return (
        f"The following is a multiple choice question{about}. Think it through step by step, then finish your "
        'answer with "The answer is (X)", where X is the letter of the correct option.\n\n'
        f"{_mmlu_pro_block(question)}{COT_START}"
    )


def mmlu_pro_short_prompt(question: Question) -> str:
    """The option letter only, no reasoning: for tiny models on CPU, where a chain of thought
    costs minutes per question and rarely helps. Not a published format; the CLI's default for
    in-process experts (`--prompt short`)."""
    about = f" about {question.category}" if question.category else ""
    return (
        f"The following is a multiple choice question{about}. Reply with the letter of the correct option only.\n\n"
        f"{_mmlu_pro_block(question)}Answer:"
    )


# ----------------------------------------------------------------------------- GPQA


def gpqa_zero_shot_prompt(question: Question) -> str:
    """The common zero-shot CoT format: think step by step, last line ``Answer: $LETTER``."""
    letters = LETTERS[: len(question.options)]
    options = "\n".join(f"{letters[i]}) {o}" for i, o in enumerate(question.options))
    return (
        "Answer the following multiple choice question. Think step by step before answering. The last line of "
        f"your response must have the form 'Answer: $LETTER' (without quotes), where LETTER is one of {letters}.\n\n"
        f"{question.question}\n\n{options}"
    )


# ----------------------------------------------------------------------------- Symbolic-MoE


def expert_prompt(question: Question | str, *, answer_instruction: str = MC_ANSWER_INSTRUCTION) -> str:
    """Symbolic-MoE's expert / profiling prompt: ``Question: <question with options>``, then
    reason step by step and end with ``The answer is (X)`` (or the given instruction).

    A `Question` is written in Symbolic-MoE's inline layout; a string is used as is."""
    return f"Question: {_question_text(question, 'inline')}\n{answer_instruction}"


def keyword_prompt(question: Question | str) -> str:
    """Symbolic-MoE's skill-tagging prompt: 2–5 comma-separated keywords after ``Keywords:``."""
    return (
        f"Question: {_question_text(question, 'inline')}\n"
        "Which core knowledge areas, subjects or skills does solving this problem require? "
        "List 2-5 keywords, separated by commas. "
        f"Example keywords: {SKILL_EXAMPLES}. "
        "Output only the keywords, with no other words or explanation. "
        "Use this format: Keywords: <keyword1>, <keyword2>..."
    )


def aggregator_prompt(
    question_text: Question | str,
    responses: Sequence[str | None],
    answer_instruction: str = MC_ANSWER_INSTRUCTION,
    *,
    keep_empty: bool = False,
) -> str:
    """The Mixture-of-Agents synthesis prompt that Symbolic-MoE puts in the user turn.

    Instruction, then ``Responses from models:`` and one ``### Model i's response:`` block per
    response given (missing or blank ones are skipped and the rest numbered 1, 2, ... in order,
    not shuffled), each with everything up to its last ``</think>`` removed; then
    ``Question: <question>`` and the same answer instruction the experts had. With
    `keep_empty` a blank response keeps its (empty) block: the paper's aggregator benchmark fills
    a missing right or wrong answer with an empty string and still shows three slots.
    """
    blocks = [strip_reasoning(r or "").strip() for r in responses if keep_empty or (r is not None and r.strip())]
    body = "".join(f"### Model {i}'s response:\n{r}\n\n" for i, r in enumerate(blocks, 1))
    return (
        f"{AGGREGATOR_INSTRUCTION}\n\nResponses from models:\n\n{body}"
        f"Question: {_question_text(question_text, 'inline')}\n{answer_instruction}"
    )
