"""Held-out evaluation of a MoT checkpoint against its baselines, on the same questions.

    python benchmarks/mot_eval.py --checkpoint routers/mot/shipped --limit 500 --out benchmarks/results/mot

Task: MMLU-Pro reduced to 4 options (gold + 3 seeded distractors, the same for every method), the
answer letter after "Answer:", on the evaluation side of the checkpoint's own split (disjoint by
question id from its training questions). Every method is scored by its distribution over the
option letters only (letter-renormalised): NLL of the gold letter and accuracy (argmax letter).

Methods, all on one forward of the K = 2 active experts or fewer:

* each expert alone;
* top-1 routing: the trained router picks the primary, which answers alone;
* oracle routing: per question, the expert that gives the gold letter the higher probability;
* K-average: the mean of the active experts' letter probabilities;
* K-average, calibrated: the same after a per-expert temperature and letter bias fitted on the
  checkpoint's training questions (a stronger baseline than the issue asks for);
* MoT: the router's primary with the interaction.

Intervals: Wilson 95% for accuracy, bootstrap 95% (2,000 resamples) for mean NLL, and paired
bootstrap 95% for MoT minus each baseline. Scores come from the frozen-state cache (built here if
missing); `--live-check N` recomputes MoT's letter logits on N questions with the experts running
live (the inference path) and reports the largest difference. `--gen-prompts` times the fused decode.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evals.metrics import wilson_interval
from routers.embeddings import SentenceEmbedder
from routers.mot.cache import StateCache
from routers.mot.checkpoint import load_checkpoint
from routers.mot.data import load_examples
from routers.mot.decode import generate
from routers.mot.run import build_cache
from routers.mot.session import load_experts, query_encoder
from routers.mot.train import TrainData, live_letter_logits, predict


def bootstrap_mean(x: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n, len(x)))
    means = x[idx].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fit_calibration(logits: torch.Tensor, gold: torch.Tensor, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature and per-letter bias minimising the letter NLL on (training) questions."""
    log_t = torch.zeros(1, requires_grad=True)
    bias = torch.zeros(logits.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([log_t, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp() + bias, gold)
        loss.backward()
        return loss

    opt.step(closure)
    return log_t.detach().exp(), bias.detach()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="routers/mot/shipped")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--live-check", type=int, default=20, help="questions on which MoT is recomputed with live experts")
    ap.add_argument("--gen-prompts", type=int, default=2)
    ap.add_argument("--gen-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fusion, meta = load_checkpoint(Path(args.checkpoint))
    split = meta.get("split", {})
    common = dict(eval_fraction=split.get("eval_fraction", 0.2), seed=split.get("seed", 0),
                  n_options=meta.get("n_options", 4), max_prompt_chars=meta.get("max_prompt_chars"))
    held_out = load_examples(meta.get("data", "mmlu-pro"), split="eval", limit=args.limit, **common)
    train_ex = load_examples(meta.get("data", "mmlu-pro"), split="train", limit=meta.get("train_limit"), **common)
    train_ids = {ex.id for ex in train_ex}
    assert not train_ids & {ex.id for ex in held_out}, "train and eval questions overlap"
    experts = load_experts(fusion.cfg.experts, fusion.cfg.n_stacks)
    names = [e.name for e in experts]
    cache = StateCache(args.cache_dir)
    embed = query_encoder(SentenceEmbedder())
    t0 = time.perf_counter()
    build_cache(cache, experts, held_out + train_ex, embed)
    cache_s = time.perf_counter() - t0
    data = TrainData.from_cache(cache, experts, held_out)
    train_data = TrainData.from_cache(cache, experts, train_ex)
    gold = data.gold
    m = len(experts)

    own = [F.log_softmax(data.own_letter_logits(j), -1) for j in range(m)]
    pred = predict(fusion, experts, data)
    scores = pred["scores"]
    active = torch.topk(scores, fusion.cfg.top_k, dim=1).indices
    rows = torch.arange(len(data))
    logp: dict[str, torch.Tensor] = {f"alone:{n}": own[j] for j, n in enumerate(names)}
    stacked = torch.stack(own, 1)  # (n, M, options)
    logp["top1-routing"] = stacked[rows, pred["primary"]]
    best = stacked.gather(2, gold.view(-1, 1, 1).expand(-1, m, 1)).squeeze(2).argmax(1)
    logp["oracle-routing"] = stacked[rows, best]
    probs = stacked.exp()
    kavg = torch.stack([probs[rows, active[:, i]] for i in range(active.shape[1])], 1).mean(1)
    logp["k-average"] = kavg.clamp_min(1e-12).log()
    cal = [fit_calibration(train_data.own_letter_logits(j), train_data.gold) for j in range(m)]
    cal_probs = torch.stack([F.softmax(data.own_letter_logits(j) / t + b, -1) for j, (t, b) in enumerate(cal)], 1)
    logp["k-average-calibrated"] = torch.stack([cal_probs[rows, active[:, i]] for i in range(active.shape[1])], 1).mean(1).log()
    logp["mot"] = pred["logp"]

    per_q = {k: -(v.gather(1, gold.view(-1, 1)).squeeze(1)).numpy() for k, v in logp.items()}
    correct = {k: (v.argmax(1) == gold).numpy() for k, v in logp.items()}
    n = len(data)
    table: dict[str, Any] = {}
    for k in logp:
        nll = per_q[k]
        acc = correct[k]
        lo, hi = wilson_interval(int(acc.sum()), n)
        row: dict[str, Any] = {"nll": float(nll.mean()), "nll_ci": bootstrap_mean(nll), "accuracy": float(acc.mean()),
                               "accuracy_ci": (lo, hi)}
        if k != "mot":
            d = per_q["mot"] - nll
            row["mot_minus_this_nll"] = float(d.mean())
            row["mot_minus_this_nll_ci"] = bootstrap_mean(d, seed=1)
            da = correct["mot"].astype(float) - acc.astype(float)
            row["mot_minus_this_accuracy"] = float(da.mean())
            row["mot_minus_this_accuracy_ci"] = bootstrap_mean(da, seed=2)
        table[k] = row

    # The scored MoT logits equal the inference path's (experts live, fused forward).
    live: dict[str, Any] = {}
    if args.live_check:
        sub = data.subset(range(min(args.live_check, n)))
        psub = pred["primary"][: len(sub)]
        diffs = []
        with torch.no_grad():
            for i, ex in enumerate(sub.examples):
                p = int(psub[i])
                lg = live_letter_logits(fusion, experts, [ex], p, [int(a) for a in active[i] if int(a) != p])
                diffs.append(float((F.log_softmax(lg[0].float(), -1) - pred["logp"][i]).abs().max()))
        live = {"questions": len(sub), "max_abs_logprob_diff": max(diffs)}

    timing: dict[str, Any] = {}
    if args.gen_prompts:
        with torch.no_grad():
            for label, interact in (("alone", False), ("mot", True)):
                s_tok, toks = 0.0, 0
                for ex in held_out[: args.gen_prompts]:
                    r = fusion.route(embed([ex.prompt])[0])
                    g = generate(fusion, experts, r, ex.prompt, max_new_tokens=args.gen_tokens, interact=interact, ignore_eos=True)
                    s_tok += g.latency_s
                    toks += len(g.token_ids)
                timing[label] = round(s_tok / max(toks, 1), 3)

    results = {
        "checkpoint": str(args.checkpoint), "n_eval": n, "n_train": len(train_ex), "experts": names,
        "train_meta": {k: v for k, v in meta.items() if k not in ("settings", "last")},
        "settings": meta.get("settings"), "chance_accuracy": 1.0 / data.examples[0].n_options,
        "uniform_nll": math.log(data.examples[0].n_options),
        "primary_counts": {nm: int((pred["primary"] == j).sum()) for j, nm in enumerate(names)},
        "cache_build_s": round(cache_s, 1), "live_check": live, "s_per_generated_token": timing,
        "calibration": {nm: {"temperature": float(t), "bias": b.tolist()} for nm, (t, b) in zip(names, cal, strict=True)},
        "methods": table,
    }
    lines = [f"| method | letter NLL [95% CI] | accuracy [95% CI] | MoT − method, NLL [paired 95% CI] | MoT − method, accuracy [paired 95% CI] |",
             "| --- | --- | --- | --- | --- |"]
    for k, r in table.items():
        d = (f"{r['mot_minus_this_nll']:+.4f} [{r['mot_minus_this_nll_ci'][0]:+.4f}, {r['mot_minus_this_nll_ci'][1]:+.4f}]"
             if "mot_minus_this_nll" in r else "")
        da = (f"{r['mot_minus_this_accuracy']:+.3f} [{r['mot_minus_this_accuracy_ci'][0]:+.3f}, {r['mot_minus_this_accuracy_ci'][1]:+.3f}]"
              if "mot_minus_this_accuracy" in r else "")
        lines.append(f"| {k} | {r['nll']:.4f} [{r['nll_ci'][0]:.4f}, {r['nll_ci'][1]:.4f}] | "
                     f"{r['accuracy']:.3f} [{r['accuracy_ci'][0]:.3f}, {r['accuracy_ci'][1]:.3f}] | {d} | {da} |")
    print("\n".join(lines))
    print(json.dumps({k: v for k, v in results.items() if k != "methods"}, indent=2, default=str))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (args.out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
