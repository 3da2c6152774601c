"""Replay of real recorded model outputs (the RouterBench method of offline routing evaluation).

A recorded-outputs directory holds `responses/<model>.jsonl.gz`, one JSON object per line with
`model, question_id, category, pred, correct, response`. A `RecordedBackend` answers a question
it has a row for with that row's `response` (and the run's own parsed letter `pred`); any other
question is an `UnknownQuestion` error, never an invented answer.

Token counts do not exist upstream: they are estimated as characters / 4 and flagged
`tokens_estimated`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from experts.backends.base import ExpertBackend
from experts.errors import ConfigError, UnknownQuestion
from experts.spec import ExpertSpec
from experts.types import GenerationRequest, GenerationResult, HealthStatus

CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class RecordedRow:
    question_id: str
    category: str
    pred: str | None
    correct: bool
    response: str


def recorded_file(directory: Path, model: str) -> Path:
    return Path(directory) / "responses" / f"{model}.jsonl.gz"


def available_models(directory: Path) -> list[str]:
    resp = Path(directory) / "responses"
    return sorted(p.name.removesuffix(".jsonl.gz") for p in resp.glob("*.jsonl.gz"))


class RecordedLibrary:
    """Loads and caches recorded-output files; shared by all recorded experts of a registry."""

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], dict[str, RecordedRow]] = {}
        self._lock = threading.Lock()

    def table(self, directory: Path | str, model: str) -> dict[str, RecordedRow]:
        key = (str(Path(directory).resolve()), model)
        with self._lock:
            if key not in self._tables:
                self._tables[key] = self._read(Path(directory), model)
            return self._tables[key]

    @staticmethod
    def _read(directory: Path, model: str) -> dict[str, RecordedRow]:
        path = recorded_file(directory, model)
        if not path.exists():
            if not (directory / "responses").is_dir():
                raise ConfigError(f"{directory}: not a recorded-outputs directory (no responses/ folder)")
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
                    rows[qid] = RecordedRow(
                        question_id=qid,
                        category=str(d.get("category") or ""),
                        pred=d.get("pred") or None,
                        correct=bool(d.get("correct")),
                        response=str(d.get("response") or ""),
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
        return GenerationResult(
            text=row.response,
            answer=row.pred,
            answer_parsed=True,
            prompt_tokens=max(1, len(req.prompt_text()) // CHARS_PER_TOKEN),
            completion_tokens=max(1, len(row.response) // CHARS_PER_TOKEN),
            tokens_estimated=True,
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
        path = recorded_file(self.directory, self.spec.model)
        if path.exists():
            return HealthStatus(name=self.name, backend="recorded", healthy=True, detail=f"replaying {path}")
        return HealthStatus(name=self.name, backend="recorded", healthy=False, detail=f"missing {path}")
