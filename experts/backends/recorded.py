"""Replay of real recorded model outputs (the RouterBench method of offline routing evaluation).

Two layouts of a recorded-outputs directory are read:

* `responses/<model>.jsonl.gz` (our reshaping of TIGER-Lab's MMLU-Pro runs): one JSON object
  per line with `model, question_id, category, pred, correct, response`;
* the generic outcomes format (bring your own pool): `outcomes.jsonl` or `outcomes.jsonl.gz`,
  one row per (model, question) with `model, question_id, score` (0..1) and optionally
  `pred, response, cost_usd, input_tokens, output_tokens, latency_s` (the directory's
  `queries.jsonl` and `models.json` are read by `evals.recorded_pool`).

A `RecordedBackend` answers a question it has a row for with that row's `response` (and the
run's own parsed answer `pred`); any other question is an `UnknownQuestion` error, never an
invented answer. Token counts missing upstream are estimated as characters / 4 and flagged
`tokens_estimated`; a recorded dollar cost is passed on as the call's cost.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experts.backends.base import ExpertBackend
from experts.errors import ConfigError, UnknownQuestion
from experts.spec import ExpertSpec
from experts.types import GenerationRequest, GenerationResult, HealthStatus

CHARS_PER_TOKEN = 4
OUTCOME_FILES = ("outcomes.jsonl", "outcomes.jsonl.gz")


@dataclass(frozen=True, slots=True)
class RecordedRow:
    """One recorded output. `score` is its quality in [0, 1] (1/0 for right/wrong answers,
    a partial score such as F1 or a test pass rate otherwise); `correct` is `score >= 0.5`."""

    question_id: str
    category: str
    pred: str | None
    correct: bool
    response: str
    score: float = 0.0
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None


def recorded_file(directory: Path, model: str) -> Path:
    return Path(directory) / "responses" / f"{model}.jsonl.gz"


def outcomes_file(directory: Path) -> Path | None:
    """The generic format's outcomes file, or None when the directory uses `responses/`."""
    return next((p for name in OUTCOME_FILES if (p := Path(directory) / name).is_file()), None)


def _open(path: Path):  # type: ignore[no-untyped-def]
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def available_models(directory: Path) -> list[str]:
    """The models a directory has outputs for (either layout), sorted."""
    directory = Path(directory)
    if outcomes_file(directory) is not None:
        return sorted(RecordedLibrary().tables(directory))
    resp = directory / "responses"
    return sorted(p.name.removesuffix(".jsonl.gz") for p in resp.glob("*.jsonl.gz"))


def _optional(d: dict[str, Any], key: str, kind: type, where: str) -> Any:
    v = d.get(key)
    if v is None:
        return None
    if kind is float and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
        return float(v)
    if kind is int and isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if kind is str and isinstance(v, str):
        return v
    raise ValueError(f"{where}: {key!r} must be a non-negative {kind.__name__}, got {v!r}")


def parse_outcome_row(d: Any, where: str) -> tuple[str, RecordedRow]:
    """(model, row) of one line of the generic format; ValueError names what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for key in ("model", "question_id", "score"):
        if d.get(key) is None:
            raise ValueError(f"{where}: missing {key!r}")
    score = d["score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
        raise ValueError(f"{where}: 'score' must be a number within [0, 1], got {score!r}")
    pred = _optional(d, "pred", str, where)
    row = RecordedRow(
        question_id=str(d["question_id"]), category=str(d.get("category") or ""), pred=pred or None,
        correct=float(score) >= 0.5, response=_optional(d, "response", str, where) or "", score=float(score),
        cost_usd=_optional(d, "cost_usd", float, where), input_tokens=_optional(d, "input_tokens", int, where),
        output_tokens=_optional(d, "output_tokens", int, where), latency_s=_optional(d, "latency_s", float, where),
    )
    return str(d["model"]), row


class RecordedLibrary:
    """Loads and caches recorded-output files; shared by all recorded experts of a registry."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], dict[str, RecordedRow]] = {}
        self._outcome_dirs: set[str] = set()
        self._lock = threading.Lock()

    def table(self, directory: Path | str, model: str) -> dict[str, RecordedRow]:
        """`question_id → row` of one model."""
        directory = Path(directory)
        key = (str(directory.resolve()), model)
        with self._lock:
            if key not in self._tables:
                if outcomes_file(directory) is not None:
                    self._load_outcomes(directory)
                    if key not in self._tables:
                        models = sorted(m for d, m in self._tables if d == key[0])
                        raise ConfigError(f"{outcomes_file(directory)}: no outcomes for model {model!r}; available: {', '.join(models)}")
                else:
                    self._tables[key] = self._read(directory, model)
            return self._tables[key]

    def tables(self, directory: Path | str) -> dict[str, dict[str, RecordedRow]]:
        """Every model's table of a generic-format directory."""
        directory = Path(directory)
        root = str(directory.resolve())
        with self._lock:
            self._load_outcomes(directory)
            return {m: t for (d, m), t in self._tables.items() if d == root}

    def _load_outcomes(self, directory: Path) -> None:
        """Read the whole outcomes file once (all models); the lock is held by the caller."""
        root = str(directory.resolve())
        if root in self._outcome_dirs:
            return
        path = outcomes_file(directory)
        if path is None:
            raise ConfigError(f"{directory}: no outcomes.jsonl or outcomes.jsonl.gz")
        tables: dict[str, dict[str, RecordedRow]] = {}
        with _open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    model, row = parse_outcome_row(json.loads(line), f"{path}: line {n}")
                except ValueError as e:  # json.JSONDecodeError is a ValueError
                    raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: line {n}: {e}") from None
                rows = tables.setdefault(model, {})
                if row.question_id in rows:
                    raise ConfigError(f"{path}: line {n}: a second outcome of {model!r} for question {row.question_id!r}")
                rows[row.question_id] = row
        for model, rows in tables.items():
            self._tables[(root, model)] = rows
        self._outcome_dirs.add(root)

    @staticmethod
    def _read(directory: Path, model: str) -> dict[str, RecordedRow]:
        path = recorded_file(directory, model)
        if not path.exists():
            if not (directory / "responses").is_dir():
                raise ConfigError(f"{directory}: not a recorded-outputs directory (no responses/ folder and no outcomes.jsonl)")
            models = available_models(directory)
            raise ConfigError(f"{path}: no recorded outputs for model {model!r}; available: {', '.join(models)}")
        rows: dict[str, RecordedRow] = {}
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    qid = str(d["question_id"])
                    correct = bool(d.get("correct"))
                    rows[qid] = RecordedRow(
                        question_id=qid,
                        category=str(d.get("category") or ""),
                        pred=d.get("pred") or None,
                        correct=correct,
                        response=str(d.get("response") or ""),
                        score=1.0 if correct else 0.0,
                    )
                except (ValueError, KeyError, TypeError) as e:
                    raise ConfigError(f"{path}: line {n}: malformed recorded row ({e})") from None
        return rows


class RecordedBackend(ExpertBackend):
    """Replays one model's recorded outputs. Requests must carry `question_id`."""

    def __init__(self, spec: ExpertSpec, library: RecordedLibrary | None = None) -> None:
        super().__init__(spec)
        self._library = library or RecordedLibrary()
        self._rows: dict[str, RecordedRow] | None = None

    @property
    def directory(self) -> Path:
        assert self.spec.path is not None  # validated by ExpertSpec
        return Path(self.spec.path)

    def rows(self) -> dict[str, RecordedRow]:
        if self._rows is None:
            self._rows = self._library.table(self.directory, self.spec.model)
        return self._rows

    @property
    def is_loaded(self) -> bool:
        return self._rows is not None

    async def load(self) -> None:
        if self._rows is None:
            await asyncio.to_thread(self.rows)

    async def unload(self) -> None:
        # The table stays in the shared library; dropping our reference is enough.
        self._rows = None

    def covers(self, question_ids: list[str]) -> tuple[int, list[str]]:
        rows = self.rows()
        missing = [q for q in question_ids if q not in rows]
        return len(question_ids) - len(missing), missing

    def _answer(self, req: GenerationRequest) -> GenerationResult:
        if req.question_id is None:
            return GenerationResult.failed(
                UnknownQuestion(
                    f"recorded expert {self.name!r} can only replay benchmark questions; the request has no question_id",
                    expert=self.name,
                )
            )
        row = self.rows().get(str(req.question_id))
        if row is None:
            return GenerationResult.failed(
                UnknownQuestion(
                    f"recorded expert {self.name!r} has no recorded output for question {req.question_id}", expert=self.name
                )
            )
        estimated = row.input_tokens is None or row.output_tokens is None
        return GenerationResult(
            text=row.response,
            answer=row.pred,
            answer_parsed=True,
            prompt_tokens=row.input_tokens if row.input_tokens is not None else max(1, len(req.prompt_text()) // CHARS_PER_TOKEN),
            completion_tokens=row.output_tokens if row.output_tokens is not None else max(1, len(row.response) // CHARS_PER_TOKEN),
            tokens_estimated=estimated,
            cost_usd=row.cost_usd,
            latency_s=row.latency_s or 0.0,
            finish_reason="stop",
        )

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if self._rows is None:
            try:
                await self.load()
            except ConfigError as e:
                return [GenerationResult.failed(UnknownQuestion(str(e), expert=self.name)) for _ in requests]
        return [self._answer(r) for r in requests]

    async def health(self) -> HealthStatus:
        path = outcomes_file(self.directory) or recorded_file(self.directory, self.spec.model)
        if path.exists():
            return HealthStatus(name=self.name, backend="recorded", healthy=True, detail=f"replaying {path}")
        return HealthStatus(name=self.name, backend="recorded", healthy=False, detail=f"missing {path}")
