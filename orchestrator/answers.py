"""Answer extraction and matching.

Multiple choice, three published conventions:
  * `extract_mmlu_pro`: TIGER-Lab's MMLU-Pro evaluation order: `answer is (X)`, then
    `Answer: X`, then the last standalone capital letter in range; else None.
  * `extract_symbolic_moe`: Symbolic-MoE's order: the last `X)` in range, then the last
    occurrence anywhere of a letter in range (noisy by design: it can hit a capital inside a word).
  * `extract_gpqa`: the last `Answer: X` line (A–D), falling back to `answer is (X)`.
Short answers: `short_answer_match` compares normalised strings, numbers numerically.
"""

from __future__ import annotations

import re
from typing import Literal

LETTERS = "ABCDEFGHIJ"
Style = Literal["mmlu-pro", "symbolic-moe", "gpqa"]


def _letters(n_options: int) -> str:
    if not 1 <= n_options <= len(LETTERS):
        raise ValueError(f"n_options must be between 1 and {len(LETTERS)}, got {n_options}")
    return LETTERS[:n_options]


def strip_reasoning(text: str) -> str:
    """Everything after the last `</think>` (R1-style models put their final part there)."""
    idx = text.rfind("</think>")
    return text[idx + len("</think>") :] if idx >= 0 else text


def extract_mmlu_pro(text: str, n_options: int = 10) -> str | None:
    letters = _letters(n_options)
    cls = f"[{letters}]"
    m = re.search(rf"answer is \(?({cls})\)?", text)
    if m:
        return m.group(1)
    m = re.search(rf".*[aA]nswer:\s*\(?({cls})\)?", text)
    if m:
        return m.group(1)
    m = re.search(rf"\b({cls})\b(?!.*\b{cls}\b)", text, re.DOTALL)
    return m.group(1) if m else None


def extract_symbolic_moe(text: str, n_options: int = 10) -> str | None:
    letters = _letters(n_options)
    if not text:
        return None
    hits = re.findall(rf"([{letters}])\)", text)
    if hits:
        return hits[-1]
    for ch in reversed(text):
        if ch in letters:
            return ch
    return None


def extract_gpqa(text: str, n_options: int = 4) -> str | None:
    letters = _letters(n_options)
    hits = re.findall(rf"[aA]nswer\s*:\s*\$?\(?([{letters}])\)?", text)
    if hits:
        return hits[-1]
    m = re.findall(rf"answer is \(?([{letters}])\)?", text)
    return m[-1] if m else None


def extract_choice(text: str, n_options: int = 10, style: Style = "mmlu-pro") -> str | None:
    """The chosen option's letter, or None when the text gives none."""
    text = strip_reasoning(text or "")
    if style == "symbolic-moe":
        return extract_symbolic_moe(text, n_options)
    if style == "gpqa":
        return extract_gpqa(text, n_options)
    return extract_mmlu_pro(text, n_options)


_ARTICLES = re.compile(r"\b(a|an|the)\b", re.I)
_BOXED = re.compile(r"\\boxed\{(.*)\}", re.S)


def normalize_short_answer(text: str) -> str:
    """Lowercase; unwrap `\\boxed{}` and `$`; drop articles, punctuation at the ends, extra spaces."""
    t = strip_reasoning(text).strip()
    m = _BOXED.search(t)
    if m:
        t = m.group(1)
    t = t.replace("$", "").strip()
    t = re.sub(r"^(the )?(final )?answer( is)?\s*[:\-]?\s*", "", t, flags=re.I)
    t = _ARTICLES.sub(" ", t.lower())
    t = re.sub(r"\s+", " ", t).strip(" .,;:!?\"'()[]")
    return t


def _as_number(s: str) -> float | None:
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def short_answer_match(pred: str | None, gold: str) -> bool:
    """Exact match after normalisation; numbers compare by value ("1.0" == "1", "1,000" == "1000")."""
    if pred is None:
        return False
    a, b = normalize_short_answer(pred), normalize_short_answer(gold)
    if a == b:
        return True
    na, nb = _as_number(a), _as_number(b)
    return na is not None and nb is not None and abs(na - nb) <= 1e-9 * max(1.0, abs(nb))
