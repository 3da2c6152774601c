import builtins
import collections
import io
import os
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, SHARED
from experts import ConfigError
from orchestrator.bench.datasets import default_gpqa_zip, default_mmlu_pro_paths, load_gpqa, load_mmlu_pro

GPQA_ZIP = SHARED / "data" / "gpqa" / "dataset.zip"


def test_mmlu_pro_test_and_validation() -> None:
    paths = default_mmlu_pro_paths()
    test = load_mmlu_pro(paths["test"])
    assert len(test) == 12032 and len({q.category for q in test}) == 14
    val = load_mmlu_pro(paths["validation"])
    assert len(val) == 70
    for q in val:
        assert "N/A" not in q.options
        assert q.options[q.answer_index] and "ABCDEFGHIJ"[q.answer_index] == q.answer
    assert collections.Counter(q.category for q in val) == {c: 5 for c in {q.category for q in test}}


def test_malformed_mmlu_row_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question_id": 1, "question": "q", "options": ["a", "b"], "answer": "A", "answer_index": 0}\n{"question_id": 2}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl: line 2"):
        load_mmlu_pro(p)


@pytest.mark.parametrize(("subset", "n"), [("diamond", 198), ("main", 448), ("extended", 546)])
def test_gpqa_counts_and_shuffled_answers(subset: str, n: int) -> None:
    qs = load_gpqa(GPQA_ZIP, subset)
    assert len(qs) == n
    assert all(len(q.options) == 4 and q.answer in "ABCD" for q in qs)
    counts = collections.Counter(q.answer for q in qs)
    assert len(counts) == 4 and max(counts.values()) < 0.4 * n  # not always A: options were shuffled


def test_gpqa_shuffle_is_seeded() -> None:
    a, b, c = load_gpqa(GPQA_ZIP, seed=0), load_gpqa(GPQA_ZIP, seed=0), load_gpqa(GPQA_ZIP, seed=1)
    assert [q.options for q in a] == [q.options for q in b]
    assert [q.options for q in a] != [q.options for q in c]
    assert [q.options[q.answer_index] for q in a] == [q.options[q.answer_index] for q in c]  # same correct text


def test_gpqa_wrong_password_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="wrong password"):
        load_gpqa(GPQA_ZIP, password="not-the-password")


def _snapshot(*roots: Path) -> dict[str, float]:
    out = {}
    for root in roots:
        for dirpath, _, files in os.walk(root):
            if ".venv" in dirpath or ".git" in dirpath:
                continue
            for f in files:
                p = os.path.join(dirpath, f)
                try:
                    out[p] = os.stat(p).st_mtime
                except FileNotFoundError:
                    pass
    return out


def test_gpqa_is_read_in_memory_without_writing_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    writes: list[str] = []
    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(m in mode for m in "wax+"):
            writes.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def no_extract(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("GPQA must not be extracted to disk")

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(zipfile.ZipFile, "extract", no_extract)
    monkeypatch.setattr(zipfile.ZipFile, "extractall", no_extract)
    before = _snapshot(tmp_path, REPO, Path("/tmp"))
    qs = load_gpqa(default_gpqa_zip() or GPQA_ZIP, "diamond")
    after = _snapshot(tmp_path, REPO, Path("/tmp"))
    assert len(qs) == 198
    assert writes == []
    new_or_changed = {p for p in after if before.get(p) != after[p]}
    # No file anywhere in those trees holds a question's text.
    probe = qs[0].question[:60]
    for p in new_or_changed:
        with real_open(p, "rb") as f:
            assert probe.encode() not in f.read(), p
