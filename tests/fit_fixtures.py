"""Fit data from real recorded outcomes, for the fit-version and learning-loop tests."""

import gzip
import json

from conftest import RECORDED, mmlu_questions
from routers.types import FitData, FitOutcome


def recorded_fit_data(pool: list[str], n: int, offset: int) -> FitData:
    """Real recorded outcomes of `pool` on n MMLU-Pro questions (those every model has)."""
    rows: dict[str, dict[str, dict]] = {}
    for m in pool:
        with gzip.open(RECORDED / "responses" / f"{m}.jsonl.gz", "rt") as f:
            rows[m] = {str(d["question_id"]): d for d in map(json.loads, f)}
    qs = [q for q in mmlu_questions(n * 3, offset=offset) if all(q.question_id in rows[m] for m in pool)][:n]
    outcomes = {m: {q.question_id: FitOutcome(rows[m][q.question_id]["correct"], rows[m][q.question_id]["pred"],
                                              rows[m][q.question_id]["response"]) for q in qs} for m in pool}
    return FitData(qs, outcomes, "recorded")
