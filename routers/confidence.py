"""Response-level confidence: how likely one expert's answer is right, read off the response itself.

    model = ResponseConfidence().fit(examples)                  # fit split only
    p = model.predict("Yi-34B", response, "C", choices, router_score=0.61)
    weight = vote_weight(p, n_options=10)                       # log((K-1) p / (1-p))

One logistic regression per expert (scikit-learn), fitted on the fit questions' recorded or live
outputs, on features of the response: whether it states a final answer ("the answer is (X)") and
whether it states several different ones, its length and how much follows the answer (base
models run on into an invented next question), hedging words, how many option letters it
mentions, whether its reasoning matches the chosen option's text (word and number overlap) better
than any other option's, the chosen letter and its position, and the router's own score for the
expert on this query (its fit accuracy on the query's category or skills, as log-odds). On live
experts whose backend returns the answer letter's log-probability it is one more feature.

The weight `vote_weight` turns a probability into the weighted-majority vote of independent voters
with known accuracy over K options (Nitzan and Paroush): an answer's score is the sum of its
supporters' log((K−1)·p/(1−p)).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evals.answers import LETTERS

_ANSWER = re.compile(r"answer is \(?([A-J])\)?")
_HEDGE = re.compile(r"\b(not sure|i think|might|possibly|perhaps|unclear|cannot be determined|none of the|approximately|assume|guess|likely)\b", re.I)
_RUNAWAY = re.compile(r"\n\s*(Question|Q):")
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
MAX_CHARS = 20_000  # features read at most this much of a response

FEATURES = (
    "has_answer", "states_answer", "several_answers", "log_length", "log_after_answer", "runaway", "hedging",
    "letters_mentioned", "last_statement_is_answer", "starts_with_answer", "digit_share",
    "option_match", "option_margin", "option_is_best", "option_word_overlap", "option_number_overlap",
    "letter_position", "option_relative_length",
    *(f"letter_{c}" for c in LETTERS), "router_log_odds", "answer_logprob", "has_logprob",
)


def _words(text: str) -> set[str]:
    return {t for t in _WORD.findall(text.lower()) if len(t) > 1 or t.isdigit()}


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def response_features(text: str, answer: str | None, choices: Sequence[str] | None, router_score: float,
                      answer_logprob: float | None = None) -> np.ndarray:
    """The feature vector (`FEATURES`) of one response."""
    r = (text or "")[:MAX_CHARS]
    stated = _ANSWER.findall(r)
    first = _ANSWER.search(r)
    after = r[first.end():] if first else ""
    n = len(r)
    head = [
        1.0 if answer else 0.0,
        1.0 if stated else 0.0,
        float(len(set(stated)) > 1),
        math.log1p(n),
        math.log1p(len(after)),
        1.0 if _RUNAWAY.search(after if first else r) else 0.0,
        min(len(_HEDGE.findall(r)), 5) / 5,
        min(len(set(re.findall(r"\(([A-J])\)", r))), 10) / 10,
        1.0 if (stated and answer and stated[-1] == answer) else 0.0,
        float(r.strip().startswith("The answer is")),
        sum(c.isdigit() for c in r) / max(n, 1),
    ]
    option = [0.0] * 7
    if choices and answer and answer in LETTERS[: len(choices)]:
        body = r[: first.start()] if first else r
        words, numbers = _words(body), set(_NUMBER.findall(body))
        overlap, number_overlap = [], []
        for c in choices:
            cw, cn = _words(c), set(_NUMBER.findall(c))
            overlap.append(len(cw & words) / max(len(cw), 1))
            number_overlap.append(len(cn & numbers) / len(cn) if cn else 0.0)
        match = np.array(overlap) + np.array(number_overlap)
        j = LETTERS.index(answer)
        others = np.delete(match, j)
        mean_len = max(float(np.mean([len(c) for c in choices])), 1.0)
        option = [float(match[j]), float(match[j] - (others.max() if len(others) else 0.0)),
                  float(match.argmax() == j and match.max() > 0), overlap[j], number_overlap[j],
                  j / max(len(choices) - 1, 1), len(choices[j]) / mean_len]
    letter = [1.0 if answer == c else 0.0 for c in LETTERS]
    tail = [_logit(router_score), answer_logprob if answer_logprob is not None else 0.0, float(answer_logprob is not None)]
    return np.asarray(head + option + letter + tail, dtype=np.float64)


def vote_weight(p: float, n_options: int) -> float:
    """log((K−1)·p/(1−p)): the weight of an independent voter of accuracy p over K options."""
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(max(n_options - 1, 1) * p / (1 - p))


@dataclass
class Example:
    """One fit output: the response, its answer, the query's options, the router's score, and
    whether it was right (or its partial score)."""

    text: str
    answer: str | None
    choices: Sequence[str] | None
    router_score: float
    quality: float
    answer_logprob: float | None = None


@dataclass
class _Linear:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


class ResponseConfidence:
    """P(correct | response, router score) per expert; see the module docstring."""

    def __init__(self, *, regularisation: float = 1.0, min_examples: int = 30) -> None:
        self.regularisation = regularisation
        self.min_examples = min_examples
        self.models: dict[str, _Linear] = {}
        self.base_rate: dict[str, float] = {}

    def fit(self, examples: Mapping[str, Sequence[Example]]) -> "ResponseConfidence":
        matrices = {}
        for expert, rows in examples.items():
            x = (np.stack([response_features(r.text, r.answer, r.choices, r.router_score, r.answer_logprob) for r in rows])
                 if rows else np.zeros((0, len(FEATURES))))
            matrices[expert] = (x, np.array([r.quality >= 0.5 for r in rows], dtype=bool))
        return self.fit_features(matrices)

    def fit_features(self, matrices: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> "ResponseConfidence":
        """Fit from precomputed feature rows (`response_features`) and right/wrong labels per expert."""
        from sklearn.linear_model import LogisticRegression

        for expert, (x, y) in matrices.items():
            self.base_rate[expert] = float((y.sum() + 1) / (len(y) + 2))
            self.models.pop(expert, None)
            if len(y) < self.min_examples or y.all() or not y.any():
                continue  # too few, or one class only: the base rate answers
            mean, scale = x.mean(axis=0), x.std(axis=0)
            scale[scale == 0] = 1.0
            clf = LogisticRegression(C=self.regularisation, max_iter=3000).fit((x - mean) / scale, y)
            self.models[expert] = _Linear(mean, scale, clf.coef_[0].astype(np.float64), float(clf.intercept_[0]))
        return self

    def predict_features(self, expert: str, x: np.ndarray) -> np.ndarray:
        """P(right) for rows of precomputed features."""
        model = self.models.get(expert)
        if model is None:
            return np.full(len(x), self.base_rate.get(expert, 0.5))
        return model.predict(x)

    def predict(self, expert: str, text: str, answer: str | None, choices: Sequence[str] | None, router_score: float,
                answer_logprob: float | None = None) -> float:
        model = self.models.get(expert)
        if model is None:
            return self.base_rate.get(expert, 0.5)
        x = response_features(text, answer, choices, router_score, answer_logprob)
        return float(model.predict(x[None, :])[0])

    # ------------------------------------------------------------------ persistence (plain JSON)
    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES), "base_rate": self.base_rate,
            "models": {e: {"mean": m.mean.tolist(), "scale": m.scale.tolist(), "coef": m.coef.tolist(), "intercept": m.intercept}
                       for e, m in self.models.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ResponseConfidence":
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("stored confidence model was fitted on other features; refit the router")
        out = cls()
        out.base_rate = dict(data["base_rate"])
        out.models = {e: _Linear(np.array(m["mean"]), np.array(m["scale"]), np.array(m["coef"]), float(m["intercept"]))
                      for e, m in data["models"].items()}
        return out
