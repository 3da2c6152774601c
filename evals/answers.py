"""Answer extraction and matching: pure functions, no I/O.

Usage::

    from evals.answers import extract_choice, short_answer_match

    extract_choice("... so the answer is (C).", 10)                 # 'C'
    extract_choice("<think>A?</think>Answer: B", 4, style="gpqa")   # 'B'
    short_answer_match("\\boxed{1.0}", "1")                         # True

Multiple choice follows one of three published conventions (`style`):

* ``"mmlu-pro"`` (`extract_mmlu_pro`), the MMLU-Pro authors' order: the *first*
  ``answer is (X)``; else ``Answer: X`` (their ``.*[aA]nswer:\\s*X`` regex, applied with
  ``re.search`` and no DOTALL, i.e. the last hit on the first line that has one); else the last
  standalone capital letter (``\\bX\\b``); else None.
* ``"symbolic-moe"`` (`extract_symbolic_moe`), Symbolic-MoE's order: the last ``X)``; else the
  last occurrence *anywhere* of a letter in range. The fallback is noisy by design (it can hit a
  capital inside an ordinary word); keep it only for parity with the published numbers.
* ``"gpqa"`` (`extract_gpqa`), the usual zero-shot GPQA convention: the last ``Answer: X``
  line, falling back to the last ``answer is (X)``.

Letters are restricted to the first ``n_options`` letters (A–J). A missing answer is ``None``;
how to score it (wrong, or the MMLU-Pro authors' seeded random guess) is the caller's choice.

Short (non multiple-choice) answers: `normalize_short_answer` and `short_answer_match` compare
normalised strings, and numbers by value ("1.0" == "1", "1,000" == "1000", "1/2" == "0.5").
"""

from __future__ import annotations

import re
from typing import Literal, get_args

__all__ = [
    "LETTERS",
    "STYLES",
    "Style",
    "extract_boxed",
    "extract_choice",
    "extract_gpqa",
    "extract_mmlu_pro",
    "extract_symbolic_moe",
    "normalize_short_answer",
    "option_letters",
    "short_answer_match",
    "strip_reasoning",
]

LETTERS = "ABCDEFGHIJ"
Style = Literal["mmlu-pro", "symbolic-moe", "gpqa"]
STYLES: tuple[Style, ...] = get_args(Style)

_THINK_END = "</think>"


def option_letters(n_options: int) -> str:
    """The option letters in range: ``option_letters(4) == "ABCD"``."""
    if not 1 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options must be between 1 and {len(LETTERS)}, got {n_options}")
    return LETTERS[:n_options]


def strip_reasoning(text: str) -> str:
    """Drop everything up to and including the last ``</think>`` (R1-style reasoning).

    Text without ``</think>`` is returned unchanged, so a response cut off mid-reasoning keeps
    all of its text.
    """
    idx = text.rfind(_THINK_END)
    return text[idx + len(_THINK_END) :] if idx >= 0 else text


# ----------------------------------------------------------------------------- multiple choice


def extract_mmlu_pro(text: str, n_options: int = 10) -> str | None:
    """The MMLU-Pro authors' extraction order (TIGER-AI-Lab/MMLU-Pro ``extract_answer``).

    1. the first match of ``answer is \\(?X\\)?``;
    2. else ``.*[aA]nswer:\\s*X`` (``re.search``, no DOTALL, as the authors wrote it);
    3. else the last standalone capital letter (``\\bX\\b``; "I pick H" gives H, "DNA" gives
       nothing);
    4. else None.
    """
    cls = f"[{option_letters(n_options)}]"
    if m := re.search(rf"answer is \(?({cls})\)?", text):
        return m.group(1)
    if (letter := _first_line_last_answer_colon(text, cls)) is not None:
        return letter
    # The authors' `\bX\b(?!.*\bX\b)` with DOTALL is the last non-overlapping standalone letter.
    hits = re.findall(rf"\b{cls}\b", text)
    return hits[-1] if hits else None


def _first_line_last_answer_colon(text: str, cls: str) -> str | None:
    """What ``re.search(r".*[aA]nswer:\\s*X", text)`` returns, in linear time.

    That regex (the authors') is quadratic on long lines: ``.*`` cannot cross a newline, so the
    match starts on the first line holding an ``answer:`` followed by the letter, and greedy
    backtracking picks the last such ``answer:`` on that line (``\\s*`` may still run on into
    the next lines). A zero-width lookahead also finds overlapping candidates.
    """
    hits = [(m.start(), m.group(1)) for m in re.finditer(rf"(?=[aA]nswer:\s*({cls}))", text)]
    if not hits:
        return None
    line_end = text.find("\n", hits[0][0])
    line_end = len(text) if line_end < 0 else line_end
    return [letter for start, letter in hits if start < line_end][-1]


def extract_symbolic_moe(text: str, n_options: int = 10) -> str | None:
    """Symbolic-MoE's extraction: the last ``X)``; else the last letter in range anywhere.

    Symbolic-MoE returns "N/A" for empty text; this returns None.
    """
    letters = option_letters(n_options)
    if not text:
        return None
    if hits := re.findall(rf"([{letters}])\)", text):
        return hits[-1]
    for ch in reversed(text):
        if ch in letters:
            return ch
    return None


def extract_gpqa(text: str, n_options: int = 4) -> str | None:
    """The last ``Answer: X`` (also ``**Answer:** X``, ``Answer: $X$``, ``Answer: (X)``),
    falling back to the last ``answer is (X)``. The letter must not start a longer word."""
    cls = f"[{option_letters(n_options)}]"
    end = r"(?![A-Za-z0-9])"
    if hits := re.findall(rf"(?i:answer)[ \t]*\**[ \t]*:[ \t]*\**[ \t]*\$?\(?({cls}){end}", text):
        return hits[-1]
    if hits := re.findall(rf"answer is[ \t]*\(?({cls}){end}", text):
        return hits[-1]
    return None


def extract_choice(text: str | None, n_options: int = 10, style: Style = "mmlu-pro", *, strip_think: bool = True) -> str | None:
    """The chosen option's letter, or None when the text gives none.

    With ``strip_think`` (the default), text before the last ``</think>`` is ignored, so a
    reasoning model's thinking does not count as its answer.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    text = text or ""
    if strip_think:
        text = strip_reasoning(text)
    if style == "symbolic-moe":
        return extract_symbolic_moe(text, n_options)
    if style == "gpqa":
        return extract_gpqa(text, n_options)
    return extract_mmlu_pro(text, n_options)


# ----------------------------------------------------------------------------- short answers


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; else None."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: the box was cut off


_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:\-]?\s*", re.I)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_EDGE_PUNCT = " \t\n.,;:!?\"'`()[]*"


def normalize_short_answer(text: str) -> str:
    """Lowercase; keep the last ``\\boxed{}`` if any; drop ``$``, ``\\(``/``\\)``, an
    "answer is" prefix, the articles a/an/the, surrounding punctuation and extra spaces."""
    t = strip_reasoning(text).strip()
    boxed = extract_boxed(t)
    if boxed is not None:
        t = boxed
    for token in ("$", "\\(", "\\)", "\\[", "\\]", "\\!"):
        t = t.replace(token, "")
    t = _LATEX_WRAPPERS.sub(r"\1", t).replace("\\%", "%").strip()
    t = t.strip(_EDGE_PUNCT)
    t = _ANSWER_PREFIX.sub("", t) or t  # a bare "answer" stays itself
    t = _ARTICLES.sub(" ", t.lower())
    return re.sub(r"\s+", " ", t).strip(_EDGE_PUNCT)


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")


def _as_number(s: str) -> float | None:
    s = s.replace(" ", "").removesuffix("%")
    if m := _FRAC.fullmatch(s):
        s = f"{m.group(1)}/{m.group(2)}"
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if "/" in s:
        num, _, den = s.partition("/")
        a, b = _as_number(num), _as_number(den)
        return a / b if a is not None and b not in (None, 0.0) else None
    return float(s) if _NUMBER.fullmatch(s) else None


def short_answer_match(pred: str | None, gold: str) -> bool:
    """Exact match after `normalize_short_answer`; numbers compare by value.

    ``"1.0" == "1"``, ``"1,000" == "1000"``, ``"\\frac{1}{2}" == "0.5"``, ``"50%" == "50"``.
    A missing prediction never matches.
    """
    if pred is None:
        return False
    a, b = normalize_short_answer(pred), normalize_short_answer(gold)
    if a == b:
        return True
    na, nb = _as_number(a), _as_number(b)
    return na is not None and nb is not None and abs(na - nb) <= 1e-9 * max(1.0, abs(nb))
