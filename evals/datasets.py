"""Benchmark datasets: MMLU-Pro (JSONL in the original layout) and GPQA (the authors' zip).

Usage::

    from evals.datasets import default_mmlu_pro_paths, load_gpqa, load_mmlu_pro

    test = load_mmlu_pro(default_mmlu_pro_paths()["test"])   # 12,032 questions, 14 categories
    diamond = load_gpqa(subset="diamond", seed=0)             # 198 questions, options shuffled

Data is looked up in ``$ORCHESTRATOR_DATA_DIR`` when set, else in ``../shared/data`` beside the
repository or beside the working directory (the layout CI uses).

GPQA is read from the password-protected ``dataset.zip`` in memory only: no extracted file, no
temporary copy, nothing in plain text on disk (the authors ask that the questions stay out of
crawlable text). The raw CSV lists the correct answer first, so the four options are shuffled
with a permutation derived from ``(seed, Record ID)`` by SHA-256: stable across processes,
Python versions and row order.

Errors (both are `experts.errors.ConfigError`, which callers already handle)::

    ConfigError
    └── DatasetError            a data file is missing or unreadable, or a row is malformed
        │                       (the message names the file and the line)
        └── WrongPasswordError  GPQA's zip did not decrypt with the password given
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, ValidationError, model_validator

from evals.answers import LETTERS
from experts.errors import ConfigError

__all__ = [
    "DATA_DIR_ENV",
    "GPQA_PASSWORD_ENV",
    "GPQA_PUBLIC_PASSWORD",
    "GPQA_SIZES",
    "GPQA_SUBSETS",
    "LETTERS",
    "MMLU_PRO_HUB_ID",
    "DatasetError",
    "GpqaSubset",
    "Question",
    "WrongPasswordError",
    "default_gpqa_zip",
    "default_mmlu_pro_paths",
    "load_gpqa",
    "load_mmlu_pro",
    "load_mmlu_pro_split",
    "shared_data_dir",
]

DATA_DIR_ENV = "ORCHESTRATOR_DATA_DIR"
MMLU_PRO_HUB_ID = "TIGER-Lab/MMLU-Pro"
_NA = "N/A"  # the padding option of MMLU-Pro's validation rows (dropped, as the authors do)

GpqaSubset = Literal["main", "diamond", "extended"]
GPQA_SUBSETS: tuple[GpqaSubset, ...] = get_args(GpqaSubset)
GPQA_SIZES: dict[str, int] = {"main": 448, "diamond": 198, "extended": 546}
GPQA_PASSWORD_ENV = "GPQA_PASSWORD"
# Printed by the GPQA authors in their README (github.com/idavidrein/gpqa), so that anyone can open
# the archive while its contents stay out of crawlable plain text.
GPQA_PUBLIC_PASSWORD = "deserted-untie-orchid"
_GPQA_COLUMNS = ("Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "High-level domain")


class DatasetError(ConfigError):
    """Raised when a data file is missing or unreadable, or holds a malformed row."""


class WrongPasswordError(DatasetError):
    """Raised when GPQA's zip does not decrypt with the password given."""


class Question(BaseModel):
    """One multiple-choice question; ``answer`` is the letter of ``options[answer_index]``."""

    id: str
    dataset: str
    question: str
    options: list[str] = Field(min_length=2, max_length=len(LETTERS))
    answer: str
    answer_index: int
    category: str = ""
    cot_content: str = ""
    src: str = ""
    subcategory: str = ""  # GPQA's "Subdomain"; empty for MMLU-Pro

    @model_validator(mode="after")
    def _answer_matches_index(self) -> Question:
        if not 0 <= self.answer_index < len(self.options):
            raise ValueError(f"answer_index {self.answer_index} is out of range for {len(self.options)} options")
        if self.answer != LETTERS[self.answer_index]:
            raise ValueError(f"answer {self.answer!r} is not the letter of answer_index {self.answer_index} ({LETTERS[self.answer_index]!r})")
        return self

    @property
    def n_options(self) -> int:
        return len(self.options)

    @property
    def correct_option(self) -> str:
        return self.options[self.answer_index]


# ----------------------------------------------------------------------------- locations


def _candidate_data_dirs() -> list[Path]:
    repo = Path(__file__).resolve().parents[1]
    cwd = Path.cwd()
    seen: list[Path] = []
    for c in (repo.parent / "shared" / "data", cwd.parent / "shared" / "data", cwd / "shared" / "data"):
        if c not in seen:
            seen.append(c)
    return seen


def shared_data_dir() -> Path | None:
    """``$ORCHESTRATOR_DATA_DIR`` when set (it must exist), else the first existing
    ``shared/data`` beside the repository or the working directory, else None."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DatasetError(f"{DATA_DIR_ENV}={env}: no such directory")
        return p
    return next((c for c in _candidate_data_dirs() if c.is_dir()), None)


def default_mmlu_pro_paths() -> dict[str, Path]:
    """The MMLU-Pro files found locally, keyed ``"test"`` / ``"validation"`` (possibly empty)."""
    base = shared_data_dir()
    if base is None:
        return {}
    return {k: p for k in ("test", "validation") if (p := base / "mmlu_pro" / f"{k}.jsonl").is_file()}


def default_gpqa_zip() -> Path | None:
    """GPQA's ``dataset.zip`` in the shared data directory, if present."""
    base = shared_data_dir()
    p = base / "gpqa" / "dataset.zip" if base else None
    return p if p is not None and p.is_file() else None


# ----------------------------------------------------------------------------- MMLU-Pro


def _mmlu_pro_question(row: Any, where: str, dataset: str) -> Question:
    """One row of the original layout; "N/A" options dropped, the key re-pointed."""
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in ("question_id", "question", "options", "answer", "answer_index") if k not in row]
    if missing:
        raise DatasetError(f"{where}: missing field(s) {', '.join(missing)}")
    options, idx, answer = row["options"], row["answer_index"], row["answer"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise DatasetError(f"{where}: 'options' must be a list of strings")
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(options):
        raise DatasetError(f"{where}: 'answer_index' must be an integer in [0, {len(options)}), got {idx!r}")
    if idx >= len(LETTERS) or answer != LETTERS[idx]:
        raise DatasetError(f"{where}: 'answer' {answer!r} does not match answer_index {idx}")
    if options[idx] == _NA:
        raise DatasetError(f"{where}: the correct option is the {_NA!r} padding")
    kept = [i for i, o in enumerate(options) if o != _NA]
    new_idx = kept.index(idx)
    try:
        return Question(
            id=str(row["question_id"]), dataset=dataset, question=row["question"], options=[options[i] for i in kept],
            answer=LETTERS[new_idx], answer_index=new_idx, category=row.get("category") or "",
            cot_content=row.get("cot_content") or "", src=row.get("src") or "",
        )
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "row"
        raise DatasetError(f"{where}: {loc}: {err['msg']}") from None


def _check_unique(questions: list[Question], where: str) -> None:
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise DatasetError(f"{where}: duplicate question id {q.id!r}")
        seen.add(q.id)


def load_mmlu_pro(path: Path | str, *, dataset: str = "mmlu-pro") -> list[Question]:
    """Rows of a JSONL file in the original layout (``question_id, question, options, answer,
    answer_index, cot_content, category, src``), in file order.

    "N/A" padding options are dropped and ``answer``/``answer_index`` re-pointed at the same
    option text. A malformed row raises `DatasetError` naming the file and the line.
    """
    path = Path(path)
    out: list[Question] = []
    lineno = 0
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{path}: line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
                out.append(_mmlu_pro_question(row, f"{path}: line {lineno}", dataset))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: line {lineno + 1}: not UTF-8 ({e.reason})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None
    _check_unique(out, str(path))
    return out


def load_mmlu_pro_split(split: Literal["test", "validation"] = "test") -> list[Question]:
    """A split from the local shared data; else from the Hugging Face Hub (``TIGER-Lab/MMLU-Pro``)
    when the ``datasets`` package is installed; else a `DatasetError` saying where it looked."""
    if split not in ("test", "validation"):
        raise DatasetError(f"MMLU-Pro split must be 'test' or 'validation', got {split!r}")
    path = default_mmlu_pro_paths().get(split)
    if path is not None:
        return load_mmlu_pro(path)
    try:
        import datasets as hf_datasets  # optional dependency (the Hugging Face library)
    except ImportError:
        looked = os.environ.get(DATA_DIR_ENV) or ", ".join(str(p) for p in _candidate_data_dirs())
        raise DatasetError(
            f"MMLU-Pro {split}.jsonl not found (looked in {looked}) and the 'datasets' package is not installed "
            f"to fetch {MMLU_PRO_HUB_ID}: set {DATA_DIR_ENV} or pass the file explicitly"
        ) from None
    try:  # pragma: no cover - needs the network or a warm Hugging Face cache
        rows = hf_datasets.load_dataset(MMLU_PRO_HUB_ID, split=split)
    except Exception as e:  # pragma: no cover
        raise DatasetError(f"{MMLU_PRO_HUB_ID}[{split}]: could not load ({type(e).__name__}: {e})") from e
    out = [_mmlu_pro_question(dict(r), f"{MMLU_PRO_HUB_ID}[{split}]: row {i}", "mmlu-pro") for i, r in enumerate(rows, 1)]  # pragma: no cover
    _check_unique(out, f"{MMLU_PRO_HUB_ID}[{split}]")  # pragma: no cover
    return out  # pragma: no cover


# ----------------------------------------------------------------------------- GPQA


def _resolve_gpqa_password(password: str | bytes | None) -> tuple[bytes, str]:
    """The password and where it came from (for error messages; the value is never shown)."""
    if password is not None:
        return (password if isinstance(password, bytes) else password.encode()), "the password argument"
    env = os.environ.get(GPQA_PASSWORD_ENV)
    if env:
        return env.encode(), f"${GPQA_PASSWORD_ENV}"
    return GPQA_PUBLIC_PASSWORD.encode(), "the built-in published password"


def _read_encrypted_member(zip_path: Path, member: str, pwd: bytes, pwd_source: str) -> bytes:
    """One member's bytes, decrypted in memory (``ZipFile.read``: nothing touches the disk)."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise DatasetError(f"{zip_path}: no such file") from None
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{zip_path}: not a zip archive ({e})") from None
    except OSError as e:
        raise DatasetError(f"{zip_path}: cannot read ({e.strerror or e})") from None
    with zf:
        try:
            zf.getinfo(member)
        except KeyError:
            raise DatasetError(f"{zip_path}: no member {member} (is this GPQA's dataset.zip?)") from None
        wrong = (
            f"{zip_path}: wrong password for {member} (from {pwd_source}); GPQA's password is printed in the "
            f"README of github.com/idavidrein/gpqa: pass it as password= or set ${GPQA_PASSWORD_ENV}"
        )
        try:
            return zf.read(member, pwd=pwd)
        except RuntimeError as e:
            if "password" in str(e).lower():
                raise WrongPasswordError(wrong) from None
            raise DatasetError(f"{zip_path}: cannot read {member} ({e})") from None
        except NotImplementedError as e:  # e.g. AES encryption, which the standard library cannot decrypt
            raise DatasetError(f"{zip_path}: cannot decrypt {member} with the standard library ({e})") from None
        except (zipfile.BadZipFile, zlib.error) as e:
            # ZipCrypto checks only one byte of the key: about 1 wrong password in 256 passes that
            # check and then fails here, while inflating or on the CRC.
            raise WrongPasswordError(f"{wrong} [or the archive is damaged: {e}]") from None


def _gpqa_order(seed: int, record_id: str) -> list[int]:
    """A permutation of the 4 options from SHA-256 of (seed, record id): not Python's `hash()`
    (salted per process) nor `random` (its algorithms may change between versions)."""
    return sorted(range(4), key=lambda i: hashlib.sha256(f"gpqa\x1f{seed}\x1f{record_id}\x1f{i}".encode()).digest())


def load_gpqa(
    zip_path: Path | str | None = None,
    subset: GpqaSubset = "diamond",
    *,
    password: str | bytes | None = None,
    seed: int = 0,
) -> list[Question]:
    """GPQA main (448), diamond (198) or extended (546), decrypted in memory, in file order.

    ``zip_path`` defaults to the shared data's ``gpqa/dataset.zip``; ``password`` to
    ``$GPQA_PASSWORD``, else the authors' published one. Options (stripped of surrounding
    whitespace) are shuffled per question from ``(seed, Record ID)`` and lettered A–D;
    ``category`` is the high-level domain, ``subcategory`` the subdomain.
    """
    if subset not in GPQA_SUBSETS:
        raise DatasetError(f"GPQA subset must be one of {', '.join(GPQA_SUBSETS)}, got {subset!r}")
    if zip_path is None:
        zip_path = default_gpqa_zip()
        if zip_path is None:
            looked = os.environ.get(DATA_DIR_ENV) or ", ".join(str(p) for p in _candidate_data_dirs())
            raise DatasetError(f"GPQA dataset.zip not found (looked for gpqa/dataset.zip in {looked}): pass its path")
    zip_path = Path(zip_path)
    member = f"dataset/gpqa_{subset}.csv"
    pwd, pwd_source = _resolve_gpqa_password(password)
    raw = _read_encrypted_member(zip_path, member, pwd, pwd_source)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{zip_path}: {member}: not UTF-8 ({e.reason})") from None
    del raw
    return _gpqa_questions(csv.DictReader(io.StringIO(text, newline="")), f"{zip_path}: {member}", subset, seed)


def _gpqa_questions(reader: csv.DictReader[str], where: str, subset: str, seed: int) -> list[Question]:
    missing = [c for c in _GPQA_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{where}: missing column(s) {', '.join(missing)}")
    out: list[Question] = []
    for row in reader:
        at = f"{where}: line {reader.line_num}"  # the CSV line where this record ends
        rid = (row["Record ID"] or "").strip()
        options = [(row[c] or "").strip() for c in ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")]
        if not rid:
            raise DatasetError(f"{at}: empty 'Record ID'")
        if not all(options):
            raise DatasetError(f"{at}: record {rid}: an answer option is empty")
        order = _gpqa_order(seed, rid)
        idx = order.index(0)  # the correct answer is column 0 before the shuffle
        try:
            q = Question(
                id=rid, dataset=f"gpqa-{subset}", question=(row["Question"] or "").strip(),
                options=[options[i] for i in order], answer=LETTERS[idx], answer_index=idx,
                category=(row["High-level domain"] or "").strip(), subcategory=(row.get("Subdomain") or "").strip(),
                src=f"gpqa_{subset}.csv",
            )
        except ValidationError as e:
            raise DatasetError(f"{at}: record {rid}: {e.errors()[0]['msg']}") from None
        out.append(q)
    _check_unique(out, where)
    return out

