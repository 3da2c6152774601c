"""Benchmark datasets: MMLU-Pro (JSONL in the original layout) and GPQA (the authors' zip).

GPQA is read from the password-protected `dataset.zip` in memory only: no extracted file, no
temporary copy, nothing in plain text on disk (the authors ask that the questions stay out of
crawlable text). Options are shuffled with a fixed per-question seed, as is usual for GPQA.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import zipfile
from pathlib import Path

from pydantic import BaseModel, Field

from experts.errors import ConfigError

LETTERS = "ABCDEFGHIJ"
GPQA_SUBSETS = ("main", "diamond", "extended")
# Published by the GPQA authors in their README, so that the archive can be opened by anyone
# while its contents stay out of crawlable plain text.
GPQA_PUBLIC_PASSWORD = "deserted-untie-orchid"


class Question(BaseModel):
    id: str
    dataset: str
    question: str
    options: list[str] = Field(min_length=2)
    answer: str
    answer_index: int
    category: str = ""
    cot_content: str = ""
    src: str = ""


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """`ORCHESTRATOR_DATA_DIR`, else `../shared/data` beside the repository or the working directory."""
    env = os.environ.get("ORCHESTRATOR_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates += [_repo_root().parent / "shared" / "data", Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


def default_mmlu_pro_paths() -> dict[str, Path]:
    base = shared_data_dir()
    if base is None:
        return {}
    return {k: base / "mmlu_pro" / f"{k}.jsonl" for k in ("test", "validation") if (base / "mmlu_pro" / f"{k}.jsonl").exists()}


def default_gpqa_zip() -> Path | None:
    base = shared_data_dir()
    p = base / "gpqa" / "dataset.zip" if base else None
    return p if p and p.exists() else None


def load_mmlu_pro(path: Path | str) -> list[Question]:
    """Rows in the original field layout; "N/A" padding options are dropped (the key is kept)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    out: list[Question] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                options = [str(o) for o in d["options"]]
                answer_index = int(d["answer_index"])
                correct = options[answer_index]
            except (ValueError, KeyError, TypeError, IndexError) as e:
                raise ConfigError(f"{path}: line {n}: not an MMLU-Pro row ({type(e).__name__}: {e})") from None
            kept = [o for o in options if o.strip() != "N/A"]
            new_index = [i for i, o in enumerate(options) if o.strip() != "N/A"].index(answer_index) if correct.strip() != "N/A" else -1
            if new_index < 0:
                raise ConfigError(f"{path}: line {n}: the correct option is 'N/A'")
            out.append(
                Question(
                    id=str(d["question_id"]), dataset="mmlu-pro", question=d["question"], options=kept,
                    answer=LETTERS[new_index], answer_index=new_index, category=d.get("category", ""),
                    cot_content=d.get("cot_content") or "", src=d.get("src") or "",
                )
            )
    return out


def _stable_seed(seed: int, record_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{record_id}".encode()).digest()[:8], "big")


def load_gpqa(zip_path: Path | str, subset: str = "diamond", password: str | None = None, seed: int = 0) -> list[Question]:
    """GPQA main (448), diamond (198) or extended (546), decrypted in memory."""
    if subset not in GPQA_SUBSETS:
        raise ConfigError(f"GPQA subset must be one of {', '.join(GPQA_SUBSETS)}, got {subset!r}")
    pwd = (password or os.environ.get("GPQA_PASSWORD") or GPQA_PUBLIC_PASSWORD).encode()
    member = f"dataset/gpqa_{subset}.csv"
    try:
        with zipfile.ZipFile(zip_path) as z:
            raw = z.read(member, pwd=pwd)  # bytes in memory; nothing is extracted
    except FileNotFoundError:
        raise ConfigError(f"{zip_path}: no such file") from None
    except KeyError:
        raise ConfigError(f"{zip_path}: no member {member} (is this GPQA's dataset.zip?)") from None
    except RuntimeError as e:
        if "password" in str(e).lower():
            raise ConfigError(f"{zip_path}: wrong password for GPQA's dataset.zip (set --gpqa-password or GPQA_PASSWORD)") from None
        raise
    except zipfile.BadZipFile as e:
        raise ConfigError(f"{zip_path}: not a zip file ({e})") from None
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
    out: list[Question] = []
    for row in reader:
        correct = row["Correct Answer"].strip()
        options = [correct] + [row[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
        rid = row["Record ID"].strip()
        order = list(range(4))
        random.Random(_stable_seed(seed, rid)).shuffle(order)
        shuffled = [options[i] for i in order]
        idx = order.index(0)
        out.append(
            Question(
                id=rid, dataset=f"gpqa-{subset}", question=row["Question"].strip(), options=shuffled,
                answer=LETTERS[idx], answer_index=idx, category=row.get("High-level domain", "").strip(),
                src=row.get("Subdomain", "").strip(),
            )
        )
    return out
