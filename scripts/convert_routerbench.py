"""Convert RouterDC's RouterBench subset into the generic outcomes format (bring your own pool).

    python scripts/convert_routerbench.py ../shared/data/recorded/routerbench_subset_routerdc tests/fixtures/routerbench_routerdc

Input: the `prompts.jsonl` and `outcomes.jsonl` of `../shared/data/recorded/routerbench_subset_routerdc/`
(RouterDC's train/test splits of Martian's RouterBench 0-shot data: ARC-Challenge, MBPP, Winogrande,
11 models, logged dollar costs). Output, in the format `orchestrator bench --recorded DIR` reads:

* `queries.jsonl`: `question_id` (the sample id), `text` (the prompt's final question: the few-shot
  exemplars before it, identical for every question of a task, are dropped), `choices` (the
  question's lettered options, ARC and Winogrande), `category` (the task), `split` (RouterDC's).
* `outcomes.jsonl.gz`: `model, question_id, score, pred, response, cost_usd` as recorded; `pred` is
  the option letter the response starts with (ARC, Winogrande; None when it starts with none), so
  that votes compare answers; MBPP has no `pred` (free-form code). Rows whose score is null upstream
  are left out (an outcome nobody scored cannot be replayed as right or wrong).
* `models.json`: parameter counts of the open models (as their names give them; Mixtral's active
  parameters) and, for the API models, the list prices of `evals.prices` with their sources.
* `PROVENANCE.md`: sources, checksums, counts.

Nothing is generated: every score, response and cost is a recorded one.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.prices import list_price  # noqa: E402

OPEN_PARAMS_B = {  # nominal parameters from the model names (Mixtral 8x7B: 12.9B active of 46.7B)
    "meta/llama-2-70b-chat": 70.0, "meta/code-llama-instruct-34b-chat": 34.0, "mistralai/mixtral-8x7b-chat": 12.9,
    "mistralai/mistral-7b-chat": 7.0, "zero-one-ai/Yi-34B-Chat": 34.0, "WizardLM/WizardLM-13B-V1.2": 13.0,
}
OPTION = re.compile(r"^([A-J])\) ?(.*)$")
INSTRUCTION = re.compile(r"^(Print only a single choice|Please answer with the letter|Answer:)")
PRED = re.compile(r"^\s*\[?\s*['\"]?\s*\(?([A-J])\b")


def final_question(prompt: str) -> tuple[str, list[str] | None]:
    """(question text, options) of the last question of a RouterBench prompt."""
    try:
        parts = ast.literal_eval(prompt)
        text = parts[-1] if isinstance(parts, list) and parts else prompt
    except (ValueError, SyntaxError):
        text = prompt
    block = text.strip().split("\n\n")[-1]
    question, options = [], []
    for line in block.split("\n"):
        line = line.strip()
        if m := OPTION.match(line):
            options.append(m.group(2).strip())
        elif line and not INSTRUCTION.match(line) and not options:
            question.append(line)
    return " ".join(question) or block, (options if len(options) >= 2 else None)


def extract_pred(response: str, n_options: int) -> str | None:
    m = PRED.match(response or "")
    return m.group(1) if m and "ABCDEFGHIJ".index(m.group(1)) < n_options else None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(source: Path, out: Path) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    prompts = [json.loads(line) for line in (source / "prompts.jsonl").open(encoding="utf-8") if line.strip()]
    choices_of: dict[str, list[str] | None] = {}
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for p in prompts:
            text, choices = final_question(p["prompt"])
            choices_of[p["sample_id"]] = choices
            row = {"question_id": p["sample_id"], "text": text, **({"choices": choices} if choices else {}),
                   "category": p["eval_name"], "split": p["routerdc_split"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: Counter[str] = Counter()
    models: set[str] = set()
    with (source / "outcomes.jsonl").open(encoding="utf-8") as src, gzip.open(out / "outcomes.jsonl.gz", "wt", encoding="utf-8") as dst:
        for line in src:
            if not line.strip():
                continue
            d = json.loads(line)
            if d.get("score") is None:
                counts["left_out_null_score"] += 1
                continue
            choices = choices_of[d["sample_id"]]
            row = {"model": d["model"], "question_id": d["sample_id"], "score": float(d["score"]),
                   **({"pred": p} if choices and (p := extract_pred(d.get("response", ""), len(choices))) else {}),
                   "response": d.get("response", ""), "cost_usd": d.get("cost_usd")}
            dst.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts["outcomes"] += 1
            models.add(d["model"])
    meta = []
    for m in sorted(models):
        if m in OPEN_PARAMS_B:
            meta.append({"model": m, "params_b": OPEN_PARAMS_B[m], "description": f"{m} (open weights), RouterBench 0-shot outputs"})
        else:
            lp = list_price(m)
            if lp is None:
                raise SystemExit(f"no parameter count or list price for {m}: add it to evals/prices.py")
            meta.append({"model": m, "price_per_mtok": {"input": lp.input, "output": lp.output}, "price_source": lp.source,
                         "description": f"{m} (API), RouterBench 0-shot outputs"})
    (out / "models.json").write_text(json.dumps(meta, indent=1) + "\n")
    counts["queries"] = len(prompts)
    counts["models"] = len(models)
    provenance = f"""# RouterBench subset (RouterDC splits) in the generic outcomes format

Converted by `scripts/convert_routerbench.py` from `../shared/data/recorded/routerbench_subset_routerdc/`:

| file | sha256 |
| --- | --- |
| prompts.jsonl | `{sha256(source / 'prompts.jsonl')}` |
| outcomes.jsonl | `{sha256(source / 'outcomes.jsonl')}` |

That folder holds RouterDC's train/test splits (github.com/shuhao02/RouterDC, HEAD
`0e63989c5bf4363330b8a4616386e3f7f116d9f8`, `datasets/routerbench_zs/{{arc_challenge,mbpp,winograde}}_{{train,test}}.csv`)
of Martian's RouterBench `routerbench_0shot.pkl` (withmartian/routerbench on Hugging Face; its card
declares no licence, and the RouterDC repository has none either). See its README for details.

Counts: {counts['queries']} queries ({', '.join(f'{t}/{s} {v}' for (t, s), v in sorted(Counter((p['eval_name'], p['routerdc_split']) for p in prompts).items()))}),
{counts['models']} models, {counts['outcomes']} outcomes; {counts['left_out_null_score']} upstream rows with a null score left out.

What was changed: `text` is the prompt's final question (the few-shot exemplars dropped), `choices`
its lettered options; `pred` is the option letter a response starts with (ARC, Winogrande), for
votes; everything else (score, response, cost_usd, split) is copied. Prices in `models.json`:
parameter counts for the open models, list prices with their sources (`evals/prices.py`) for the
API models; the outcomes' own `cost_usd` is what the benchmark's cost axis uses.
"""
    (out / "PROVENANCE.md").write_text(provenance)
    return dict(counts)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    print(json.dumps(convert(Path(sys.argv[1]), Path(sys.argv[2]))))
