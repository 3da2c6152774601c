"""Partition a recorded-outputs directory into two disjoint ones (fit and evaluation), by question id.

    summary = split_recorded(Path("../shared/data/recorded/mmlu_pro_tiger"), Path("fit"), Path("eval"),
                             fit_fraction=0.5, seed=0, pool=NAMED_POOLS["small16"])

Nothing is generated: every output line of the source is copied unchanged into exactly one of
the two directories (or left out when a pool model lacks it). The ids are those every pool model
covers, split by `evals.splits.split_fit_eval` (the split `orchestrator bench` makes inside one
directory, so `bench --recorded EVAL --fit-recorded FIT` fits and evaluates on the same ids as
`bench --recorded SRC` with the same fraction and seed). A generic-format directory whose queries
carry `split` is partitioned by it instead (train → fit, test → evaluation). Each output directory
gets a `SPLIT.json` saying where its rows came from.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from evals import recorded_pool
from evals.splits import split_fit_eval
from experts.backends.recorded import RecordedLibrary, outcomes_file, recorded_file
from experts.errors import ConfigError


@dataclass
class SplitSummary:
    source: str
    layout: str
    pool: list[str]
    rule: str
    fit_dir: str
    eval_dir: str
    fit_questions: int
    eval_questions: int
    left_out_questions: int  # ids some pool model has no output for


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _prepare(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)


def split_recorded(source: Path, fit_out: Path, eval_out: Path, *, fit_fraction: float = 0.5, seed: int = 0,
                   pool: list[str] | None = None, ids: list[str] | None = None) -> SplitSummary:
    """Write the fit and evaluation parts of `source`; `ids` restricts the questions considered."""
    source = Path(source).resolve()
    if not 0.0 <= fit_fraction <= 1.0:
        raise ConfigError(f"--fit-fraction must be within [0, 1], got {fit_fraction}")
    kind = recorded_pool.layout(source)
    models = recorded_pool.resolve_pool(source, pool)
    library = RecordedLibrary()
    if kind == "outcomes":
        queries = recorded_pool.load_queries(source)
        candidates = [q.question_id for q in queries]
    else:
        candidates = sorted({q for m in models for q in library.table(source, m)}, key=_id_order)
    if ids is not None:
        wanted = set(ids)
        candidates = [q for q in candidates if q in wanted]
    covered = recorded_pool.covered_ids(library, source, models, candidates)
    split_of = {q.question_id: q.split for q in queries} if kind == "outcomes" else {}
    if split_of and None not in split_of.values():
        fit_ids = {q for q in covered if split_of[q] == "train"}
        eval_ids = {q for q in covered if split_of[q] == "test"}
        rule = "the queries' own split (train → fit, test → evaluation)"
    else:
        fit_ids, eval_ids = split_fit_eval(covered, fit_fraction, seed)
        rule = f"evals.splits.split_fit_eval over the ids every pool model covers: fit_fraction {fit_fraction}, seed {seed}"
    for out in (fit_out, eval_out):
        _prepare(Path(out))
    summary = SplitSummary(
        source=str(source), layout=kind, pool=models, rule=rule, fit_dir=str(Path(fit_out).resolve()),
        eval_dir=str(Path(eval_out).resolve()), fit_questions=len(fit_ids), eval_questions=len(eval_ids),
        left_out_questions=len(candidates) - len(covered),
    )
    for out, part, chosen in ((Path(fit_out), "fit", fit_ids), (Path(eval_out), "evaluation", eval_ids)):
        files = _write_part(source, out, kind, models, chosen)
        (out / "SPLIT.json").write_text(json.dumps({
            **asdict(summary), "this_part": part, "questions": len(chosen),
            "copied_from": files, "note": "every row is copied unchanged from the source files listed (sha256 of each)",
        }, indent=2) + "\n")
    return summary


def _id_order(q: str) -> tuple[int, int | str]:
    return (0, int(q)) if q.isdigit() else (1, q)


def _write_part(source: Path, out: Path, kind: str, models: list[str], chosen: set[str]) -> dict[str, str]:
    """Copy the rows of `chosen` ids (and the pool's models) line by line; {source file: sha256}."""
    copied: dict[str, str] = {}
    meta = source / "models.json"
    if meta.is_file():
        shutil.copyfile(meta, out / "models.json")
        copied[str(meta)] = _sha256(meta)
    if kind == "outcomes":
        qpath = source / "queries.jsonl"
        with qpath.open(encoding="utf-8") as src, (out / "queries.jsonl").open("w", encoding="utf-8") as dst:
            for line in src:
                if line.strip() and str(json.loads(line)["question_id"]) in chosen:
                    dst.write(line if line.endswith("\n") else line + "\n")
        copied[str(qpath)] = _sha256(qpath)
        opath = outcomes_file(source)
        assert opath is not None
        wanted = set(models)
        opener = gzip.open if opath.suffix == ".gz" else open
        with opener(opath, "rt", encoding="utf-8") as src, gzip.open(out / "outcomes.jsonl.gz", "wt", encoding="utf-8") as dst:
            for line in src:
                if not line.strip():
                    continue
                d = json.loads(line)
                if d.get("model") in wanted and str(d.get("question_id")) in chosen:
                    dst.write(line if line.endswith("\n") else line + "\n")
        copied[str(opath)] = _sha256(opath)
        return copied
    (out / "responses").mkdir()
    for m in models:
        path = recorded_file(source, m)
        with gzip.open(path, "rt", encoding="utf-8") as src, gzip.open(recorded_file(out, m), "wt", encoding="utf-8") as dst:
            for line in src:
                if line.strip() and str(json.loads(line)["question_id"]) in chosen:
                    dst.write(line if line.endswith("\n") else line + "\n")
        copied[str(path)] = _sha256(path)
    return copied
