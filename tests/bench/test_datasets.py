"""Dataset loaders on the real shared data (MMLU-Pro JSONL, GPQA's encrypted zip).

GPQA's questions must never reach the disk in plain text: the last tests watch every file write
the process makes while loading (an audit hook, plus patched writers) and the files around it.
"""

from __future__ import annotations

import builtins
import collections
import io
import json
import os
import pathlib
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from experts.errors import ConfigError
from evals.datasets import (
    DATA_DIR_ENV,
    GPQA_PASSWORD_ENV,
    GPQA_SIZES,
    DatasetError,
    Question,
    WrongPasswordError,
    default_gpqa_zip,
    default_mmlu_pro_paths,
    load_gpqa,
    load_mmlu_pro,
    load_mmlu_pro_split,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
MMLU_TEST = SHARED_DATA / "mmlu_pro" / "test.jsonl"
MMLU_VAL = SHARED_DATA / "mmlu_pro" / "validation.jsonl"
GPQA_ZIP = SHARED_DATA / "gpqa" / "dataset.zip"

# Per-category counts of the test split, from ../shared/data/README.md.
MMLU_PRO_TEST_COUNTS = {
    "biology": 717, "business": 789, "chemistry": 1132, "computer science": 410, "economics": 844,
    "engineering": 969, "health": 818, "history": 381, "law": 1101, "math": 1351, "other": 924,
    "philosophy": 499, "physics": 1299, "psychology": 798,
}


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (DATA_DIR_ENV, GPQA_PASSWORD_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def mmlu_test() -> list[Question]:
    assert MMLU_TEST.is_file(), f"MMLU-Pro data missing at {MMLU_TEST}: shared/ must sit beside the repository"
    return load_mmlu_pro(MMLU_TEST)


@pytest.fixture(scope="module")
def diamond() -> list[Question]:
    assert GPQA_ZIP.is_file(), f"GPQA zip missing at {GPQA_ZIP}: shared/ must sit beside the repository"
    return load_gpqa(GPQA_ZIP, "diamond")


# ----------------------------------------------------------------------------- MMLU-Pro


def test_default_paths_find_the_shared_data() -> None:
    paths = default_mmlu_pro_paths()
    assert paths["test"].resolve() == MMLU_TEST.resolve()
    assert paths["validation"].resolve() == MMLU_VAL.resolve()
    assert default_gpqa_zip() is not None and default_gpqa_zip().resolve() == GPQA_ZIP.resolve()  # type: ignore[union-attr]


def test_mmlu_pro_test_split(mmlu_test: list[Question]) -> None:
    assert len(mmlu_test) == 12_032
    assert collections.Counter(q.category for q in mmlu_test) == MMLU_PRO_TEST_COUNTS
    assert len({q.id for q in mmlu_test}) == 12_032
    assert all(q.dataset == "mmlu-pro" and q.cot_content == "" for q in mmlu_test)
    assert all(3 <= len(q.options) <= 10 and "N/A" not in q.options for q in mmlu_test)
    assert all("ABCDEFGHIJ"[q.answer_index] == q.answer for q in mmlu_test)
    assert sum(len(q.options) == 10 for q in mmlu_test) == 9_981
    assert mmlu_test[0].id == "70" and mmlu_test[0].src  # original order, id as a string


def test_mmlu_pro_validation_drops_na_and_keeps_the_key() -> None:
    val = load_mmlu_pro(MMLU_VAL)
    assert len(val) == 70
    assert collections.Counter(q.category for q in val) == {c: 5 for c in MMLU_PRO_TEST_COUNTS}
    raw = [json.loads(line) for line in MMLU_VAL.read_text(encoding="utf-8").splitlines()]
    assert sum("N/A" in r["options"] for r in raw) > 0  # the file really is padded
    for q, r in zip(val, raw, strict=True):
        assert q.id == str(r["question_id"])
        assert q.options == [o for o in r["options"] if o != "N/A"]
        assert q.correct_option == r["options"][r["answer_index"]]  # same option text after dropping
        assert q.answer == "ABCDEFGHIJ"[q.answer_index]
        assert q.cot_content.startswith("A: Let's think step by step.")


def test_load_mmlu_pro_split_prefers_local_files() -> None:
    assert len(load_mmlu_pro_split("validation")) == 70


def _row(**over: Any) -> str:
    row = {"question_id": 1, "question": "q?", "options": ["a", "b", "N/A"], "answer": "B", "answer_index": 1, "cot_content": "", "category": "math", "src": "x"}
    row.update(over)
    return json.dumps(row)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"question_id": 2}', "missing field"),
        (_row(question_id=2, answer="C"), "does not match answer_index"),
        (_row(question_id=2, answer_index=7, answer="H"), "answer_index"),
        (_row(question_id=2, answer_index=True), "answer_index"),
        (_row(question_id=2, options="abc"), "'options' must be a list"),
        (_row(question_id=2, answer_index=2, answer="C"), "'N/A' padding"),
        (_row(question_id=2, question=None), "question"),
        (_row(question_id=1), "duplicate question id '1'"),
    ],
)
def test_malformed_mmlu_pro_rows_name_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(_row() + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=message) as err:
        load_mmlu_pro(p)
    assert "bad.jsonl" in str(err.value)
    if "duplicate" not in message:
        assert "line 2" in str(err.value)
    assert isinstance(err.value, ConfigError)  # callers that catch ConfigError keep working


def test_mmlu_pro_na_padding_is_dropped_in_a_small_file(tmp_path: Path) -> None:
    p = tmp_path / "ok.jsonl"
    p.write_text(_row(options=["N/A", "a", "b"], answer="C", answer_index=2) + "\n\n", encoding="utf-8")
    (q,) = load_mmlu_pro(p)
    assert q.options == ["a", "b"] and q.answer == "B" and q.answer_index == 1 and q.id == "1"


def test_missing_mmlu_pro_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.jsonl: no such file"):
        load_mmlu_pro(tmp_path / "nope.jsonl")


def test_data_dir_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mmlu_pro").mkdir()
    (tmp_path / "mmlu_pro" / "test.jsonl").write_text(_row() + "\n", encoding="utf-8")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert default_mmlu_pro_paths() == {"test": tmp_path / "mmlu_pro" / "test.jsonl"}
    assert default_gpqa_zip() is None
    assert [q.id for q in load_mmlu_pro_split("test")] == ["1"]
    # No validation file here, and no `datasets` package to fetch it: a clear error.
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DatasetError, match="validation.jsonl not found.*'datasets' package"):
        load_mmlu_pro_split("validation")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match=f"{DATA_DIR_ENV}=.*no such directory"):
        default_mmlu_pro_paths()


def test_question_model_checks_its_key() -> None:
    with pytest.raises(ValueError, match="not the letter"):
        Question(id="1", dataset="x", question="q", options=["a", "b"], answer="A", answer_index=1)
    with pytest.raises(ValueError, match="out of range"):
        Question(id="1", dataset="x", question="q", options=["a", "b"], answer="C", answer_index=2)


# ----------------------------------------------------------------------------- GPQA


@pytest.mark.parametrize(("subset", "n"), sorted(GPQA_SIZES.items()))
def test_gpqa_counts_and_shuffled_answers(subset: str, n: int) -> None:
    qs = load_gpqa(GPQA_ZIP, subset)  # type: ignore[arg-type]
    assert len(qs) == n and len({q.id for q in qs}) == n
    assert all(q.dataset == f"gpqa-{subset}" for q in qs)
    assert all(len(q.options) == 4 and all(o and o == o.strip() for o in q.options) for q in qs)
    assert all(q.question and q.question == q.question.strip() for q in qs)
    assert {q.category for q in qs} == {"Physics", "Chemistry", "Biology"}
    assert all(q.subcategory for q in qs)
    counts = collections.Counter(q.answer for q in qs)
    # Not always A (the raw CSV lists the correct answer first): each letter gets 15-35%.
    assert set(counts) == set("ABCD") and all(0.15 * n < c < 0.35 * n for c in counts.values()), counts


def test_gpqa_default_zip_and_password() -> None:
    qs = load_gpqa(subset="diamond")
    assert len(qs) == 198


def test_gpqa_shuffle_is_seeded_and_per_question(diamond: list[Question]) -> None:
    again = load_gpqa(GPQA_ZIP, "diamond", seed=0)
    other = load_gpqa(GPQA_ZIP, "diamond", seed=1)
    assert [q.options for q in again] == [q.options for q in diamond]
    assert [q.answer for q in again] == [q.answer for q in diamond]
    changed = sum(a.options != b.options for a, b in zip(diamond, other, strict=True))
    assert changed > 0.6 * len(diamond)  # a new seed reshuffles most questions (3/4 expected by chance)
    assert [q.correct_option for q in other] == [q.correct_option for q in diamond]  # same correct text
    assert [sorted(q.options) for q in other] == [sorted(q.options) for q in diamond]
    # The permutation depends on (seed, record id) only: the same record in another subset, with the
    # same texts, gets the same order.
    main = {q.id: q for q in load_gpqa(GPQA_ZIP, "main")}
    common = [q for q in diamond if q.id in main and sorted(main[q.id].options) == sorted(q.options)]
    assert len(common) > 50
    assert all(main[q.id].options == q.options for q in common)


def test_gpqa_wrong_password_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WrongPasswordError, match="wrong password.*password argument.*GPQA_PASSWORD") as err:
        load_gpqa(GPQA_ZIP, password="not-the-password")
    assert "not-the-password" not in str(err.value)
    assert isinstance(err.value, ConfigError)
    monkeypatch.setenv(GPQA_PASSWORD_ENV, "also-wrong")
    with pytest.raises(WrongPasswordError, match=r"\$GPQA_PASSWORD"):
        load_gpqa(GPQA_ZIP)


@pytest.mark.parametrize("password", ["wrong-920", "wrong-1482"])
def test_gpqa_wrong_password_that_passes_zipcrypto_check_byte(password: str) -> None:
    # ZipCrypto checks one byte of the key, so ~1 wrong password in 256 gets past it and only
    # fails while inflating: that must still be a WrongPasswordError, not a zlib error.
    with zipfile.ZipFile(GPQA_ZIP) as z:
        z.open("dataset/gpqa_diamond.csv", pwd=password.encode()).close()  # passes the check byte
    with pytest.raises(WrongPasswordError, match="wrong password"):
        load_gpqa(GPQA_ZIP, "diamond", password=password)


def test_gpqa_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="main, diamond, extended"):
        load_gpqa(GPQA_ZIP, "experts")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="no such file"):
        load_gpqa(tmp_path / "dataset.zip")
    (tmp_path / "fake.zip").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a zip archive"):
        load_gpqa(tmp_path / "fake.zip")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(DatasetError, match="no member dataset/gpqa_diamond.csv"):
        load_gpqa(tmp_path / "other.zip")


# ----------------------------------------------------------------------------- nothing on disk

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_FS_EVENTS = {
    "os.rename", "os.remove", "os.truncate", "os.mkdir", "os.link", "os.symlink", "os.utime",
    "shutil.copyfile", "shutil.copytree", "shutil.move", "tempfile.mkstemp", "tempfile.mkdtemp",
}
_watch: list[tuple[str, tuple[Any, ...]]] | None = None
_hook_installed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Audit hooks cannot be removed, so this one records only inside `_record_fs_writes`.
    log = _watch
    if log is None:
        return
    if event == "open":
        path, _mode, flags = args
        if isinstance(flags, int) and flags & _WRITE_FLAGS and "__pycache__" not in str(path):
            log.append((event, args))
    elif event in _FS_EVENTS:
        if "__pycache__" not in str(args[0] if args else ""):
            log.append((event, args))


@contextmanager
def _record_fs_writes() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Every open-for-writing / rename / remove / mkdir / temp file the process makes, even from
    C code paths (`sys.addaudithook`). Writes of compiled bytecode are ignored."""
    global _watch, _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)
        _hook_installed = True
    log: list[tuple[str, tuple[Any, ...]]] = []
    _watch = log
    try:
        yield log
    finally:
        _watch = None


def _snapshot(*roots: Path) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for root in roots:
        for dirpath, dirnames, files in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in {".venv", ".git", "__pycache__", "node_modules"}]
            for f in files:
                p = os.path.join(dirpath, f)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                out[p] = (st.st_mtime, st.st_size)
    return out


def _top_level(root: Path) -> dict[str, tuple[float, int]]:
    out: dict[str, tuple[float, int]] = {}
    for entry in os.scandir(root):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        out[entry.path] = (st.st_mtime, st.st_size)
    return out


def _fail(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"GPQA loading must not write to disk (called with {args!r:.200})")


def test_gpqa_is_read_in_memory_without_writing_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    real_open = builtins.open

    def guarded_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            _fail(file, mode)
        return real_open(file, mode, *args, **kwargs)

    real_os_open = os.open

    def guarded_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS:
            _fail(path, flags)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for name in ("write_text", "write_bytes", "touch", "mkdir"):
        monkeypatch.setattr(pathlib.Path, name, _fail)
    for name in ("extract", "extractall", "_extract_member"):
        monkeypatch.setattr(zipfile.ZipFile, name, _fail)
    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile", "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, _fail)

    tmp_root = Path(tempfile.gettempdir())
    before = _snapshot(tmp_path, REPO, SHARED_DATA)
    before_tmp = _top_level(tmp_root)
    with _record_fs_writes() as writes:
        loaded = {s: load_gpqa(GPQA_ZIP, s) for s in GPQA_SIZES}  # type: ignore[misc]
    after = _snapshot(tmp_path, REPO, SHARED_DATA)
    after_tmp = _top_level(tmp_root)
    monkeypatch.undo()

    assert {s: len(qs) for s, qs in loaded.items()} == GPQA_SIZES
    assert writes == [], writes
    assert list(tmp_path.iterdir()) == []  # nothing in the working directory
    # Other engineers may be writing files at the same time, so changed files are not an error by
    # themselves: none of them may hold GPQA text.
    probes = [q.question[:80].encode() for q in loaded["extended"][::50]] + [q.options[0].encode() for q in loaded["diamond"][:5] if len(q.options[0]) > 20]
    changed = [p for p, sig in {**after, **after_tmp}.items() if before.get(p, before_tmp.get(p)) != sig]
    for p in changed:
        if not os.path.isfile(p) or os.path.getsize(p) > 64 * 2**20:
            continue
        with real_open(p, "rb") as f:
            data = f.read()
        assert not any(probe in data for probe in probes), f"GPQA text found in {p}"


def test_the_write_watch_itself_sees_writes(tmp_path: Path) -> None:
    # Guard against a silently broken watcher: a real write must be recorded.
    with _record_fs_writes() as writes:
        (tmp_path / "x.txt").write_text("hello", encoding="utf-8")
    assert any(e == "open" and str(a[0]).endswith("x.txt") for e, a in writes)
