"""Hit rates of the response caches on a replay of recorded MMLU-Pro questions with verbatim repeats.

    python benchmarks/cache_replay.py --distinct 500 --requests 2000 --thresholds 0.9,0.95,0.97,0.99 [--json FILE]

The replay: `--distinct` MMLU-Pro test questions that the recorded model has an output for (drawn
with `--seed`), each asked once, plus `--requests - --distinct` verbatim repeats drawn uniformly
from them, shuffled (a repeat is the same text, options and question id: no paraphrase, since
none is recorded and none is invented). Each request goes through `Runtime.answer` (the gateway's
path: the `single` router over one recorded expert, traces in SQLite) with one cache
configuration at a time: exact, then semantic alone at each threshold.

Printed per configuration: hits, hit rate, the best possible (repeats / requests), hits served
from ANOTHER question (a semantic cache's false hits: near-duplicate MMLU-Pro questions), and the
accuracy of the served answers against the accuracy of the expert's own answers to the same
requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experts import parse_config  # noqa: E402
from experts.spec import CacheConfig  # noqa: E402
from orchestrator.pipeline import Runtime  # noqa: E402
from orchestrator.response_cache import ResponseCaches  # noqa: E402
from routers.types import Query  # noqa: E402

SHARED = REPO.parent / "shared" / "data"


def replay(model: str, distinct: int, requests: int, seed: int, recorded: Path) -> list[tuple[Query, str]]:
    """(query, gold letter) in replay order; see the module docstring."""
    with gzip.open(recorded / "responses" / f"{model}.jsonl.gz", "rt") as f:
        have = {str(json.loads(line)["question_id"]) for line in f}
    pool: list[tuple[Query, str]] = []
    with open(SHARED / "mmlu_pro" / "test.jsonl") as f:
        for line in f:
            d = json.loads(line)
            qid = str(d["question_id"])
            if qid in have:
                pool.append((Query(text=d["question"], choices=tuple(d["options"]), question_id=qid, category=d.get("category")),
                             d["answer"]))
    rng = random.Random(seed)
    chosen = rng.sample(pool, distinct)
    stream = chosen + [rng.choice(chosen) for _ in range(requests - distinct)]
    rng.shuffle(stream)
    return stream


async def run(cache: dict[str, Any], stream: list[tuple[Query, str]], model: str, recorded: Path, workdir: Path,
              label: str) -> dict[str, Any]:
    db = workdir / f"{label}.db"
    cfg = parse_config({"store": f"sqlite+aiosqlite:///{db}",
                        "experts": [{"name": model, "backend": "recorded", "path": str(recorded), "model": model}]})
    async with await Runtime.create(cfg) as rt:
        rt.response_cache = ResponseCaches(CacheConfig.model_validate(cache), services=rt.services)
        qid_of: dict[str, str] = {}
        hits = foreign = served_right = own_right = 0
        t0 = time.perf_counter()
        for query, gold in stream:
            result = await rt.answer(query, "single", options={"expert": model}, owner="replay")
            qid_of[result.trace_id] = query.question_id or ""
            if result.cache is None:
                continue
            hits += 1
            source = qid_of[result.steps[0].detail["source_trace_id"]]
            foreign += source != query.question_id
            served_right += result.final.answer == gold
            own = rt.registry.recorded_library.table(recorded, model)[query.question_id or ""]
            own_right += own.pred == gold
        wall = time.perf_counter() - t0
    n = len(stream)
    return {"config": label, "requests": n, "hits": hits, "hit_rate": round(hits / n, 4), "foreign_hits": foreign,
            "served_accuracy": round(served_right / hits, 4) if hits else None,
            "own_accuracy_same_requests": round(own_right / hits, 4) if hits else None, "wall_s": round(wall, 2)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="Meta-Llama-3.1-8B-Instruct")
    ap.add_argument("--recorded", type=Path, default=SHARED / "recorded" / "mmlu_pro_tiger")
    ap.add_argument("--distinct", type=int, default=500)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--thresholds", default="0.9,0.95,0.97,0.99")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    stream = replay(a.model, a.distinct, a.requests, a.seed, a.recorded)
    best = (a.requests - a.distinct) / a.requests
    big = {"ttl_s": 86_400, "max_entries": 100_000}
    configs = [("exact", {"exact": {"enabled": True, **big}})]
    configs += [(f"semantic@{t}", {"semantic": {"routers": {"single": {"threshold": float(t)}}, **big}})
                for t in a.thresholds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, cache in configs:
            rows.append(await run(cache, stream, a.model, a.recorded, Path(tmp), label))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\nreplay: {a.distinct} distinct questions of {a.model}'s recorded outputs, {a.requests} requests "
          f"({a.requests - a.distinct} verbatim repeats, seed {a.seed}); best possible hit rate {best:.4f}")
    print(f"{'config':<16}{'hits':>6}{'hit rate':>10}{'foreign':>9}{'served acc':>12}{'own acc':>9}")
    for r in rows:
        print(f"{r['config']:<16}{r['hits']:>6}{r['hit_rate']:>10.4f}{r['foreign_hits']:>9}"
              f"{r['served_accuracy'] if r['served_accuracy'] is not None else '-':>12}"
              f"{r['own_accuracy_same_requests'] if r['own_accuracy_same_requests'] is not None else '-':>9}")
    if a.json:
        a.json.write_text(json.dumps({"best_hit_rate": best, "distinct": a.distinct, "requests": a.requests, "seed": a.seed,
                                      "model": a.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
