"""CoE step 1: a category classifier over frozen MiniLM sentence embeddings.

Two scikit-learn heads are trained (k-nearest neighbours, as in SambaNova's productised router,
and logistic regression); the one with the better accuracy on a held-out validation split is
kept, then refitted on all training data."""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier


@dataclass
class CategoryClassifier:
    model: Any = None
    labels: list[str] = field(default_factory=list)
    chosen: str = ""
    validation: dict[str, float] = field(default_factory=dict)

    def fit(self, x: np.ndarray, y: Sequence[str], *, seed: int = 0) -> "CategoryClassifier":
        y = np.asarray(y)
        counts = {c: int((y == c).sum()) for c in set(y)}
        stratify = y if min(counts.values()) >= 2 and len(counts) > 1 else None
        x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=stratify)
        candidates = {
            "knn": KNeighborsClassifier(n_neighbors=min(15, max(1, len(y_tr) // 10)), weights="distance", metric="cosine"),
            "logreg": LogisticRegression(C=4.0, max_iter=2000),
        }
        for name, clf in candidates.items():
            clf.fit(x_tr, y_tr)
            self.validation[name] = float((clf.predict(x_va) == y_va).mean())
        self.chosen = max(candidates, key=lambda n: (self.validation[n], n == "logreg"))
        self.model = candidates[self.chosen].fit(x, y)
        self.labels = [str(c) for c in self.model.classes_]
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)

    def predict(self, x: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(category, confidence = max probability) per row."""
        return self.top_category(self.predict_proba(x))

    def top_category(self, probs: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(category, confidence) per row of `predict_proba`'s output."""
        idx = probs.argmax(axis=1)
        return [self.labels[i] for i in idx], probs[np.arange(len(idx)), idx]

    def dumps(self) -> bytes:
        buf = io.BytesIO()
        pickle.dump({"model": self.model, "labels": self.labels, "chosen": self.chosen, "validation": self.validation}, buf)
        return buf.getvalue()

    @classmethod
    def loads(cls, data: bytes) -> "CategoryClassifier":
        # Only artefacts this system wrote to its own store are loaded (pickle runs code).
        d = pickle.loads(data)  # noqa: S301
        return cls(model=d["model"], labels=d["labels"], chosen=d["chosen"], validation=d["validation"])
