"""Held-out evaluation of a trained MoT checkpoint against its own experts.

    python benchmarks/mot_eval.py --checkpoint out/mot --limit 60 --out benchmarks/results/mot

Task: MMLU-Pro answer-letter prediction after "Answer:" on held-out question ids (disjoint from
training by the checkpoint's own split). For every question it measures the gold letter's NLL and
the letter accuracy (argmax over the option letters' tokens) for:

* each expert alone (primary-only, no interaction, no training involved),
* top-1 routing without interaction (the trained router picks the primary, which answers alone),
* MoT (the same route, with the interaction layers),

and then the wall time per generated token of greedy decoding for each configuration. Prints a
table and writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from rich.table import Table

from routers.embeddings import SentenceEmbedder
from routers.mot.checkpoint import load_checkpoint
from routers.mot.data import LETTERS, load_examples
from routers.mot.decode import generate
from routers.mot.experts import FrozenExpert
from routers.mot.fused import fused_forward
from routers.mot.session import load_experts, query_encoder


def letter_ids(expert: FrozenExpert) -> list[int]:
    """Token id of " A" ... " J" for this tokenizer (each must be one token)."""
    out = []
    for letter in LETTERS:
        ids = expert.tokenizer(f" {letter}", add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{expert.name}: ' {letter}' is not a single token ({ids})")
        out.append(ids[0])
    return out


def score(logits: torch.Tensor, letters: list[int], n_options: int, gold: str) -> tuple[float, bool]:
    logp = F.log_softmax(logits.float(), dim=-1)
    g = LETTERS.index(gold)
    nll = -float(logp[letters[g]])
    pred = int(torch.argmax(logp[letters[:n_options]]))
    return nll, pred == g


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--gen-prompts", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-cache", type=int, default=1, help="prompts on which cached MoT decoding is compared with recomputation")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    con = Console()
    fusion, meta = load_checkpoint(Path(args.checkpoint))
    split = meta.get("split", {})
    held_out = load_examples(meta.get("data", "mmlu-pro"), split="eval", eval_fraction=split.get("eval_fraction", 0.2),
                             seed=split.get("seed", 0), max_prompt_chars=split.get("max_prompt_chars"), limit=args.limit)
    experts = load_experts(fusion.cfg.experts, fusion.cfg.n_stacks)
    letters = [letter_ids(e) for e in experts]
    embed = query_encoder(SentenceEmbedder())
    names = [e.name for e in experts]
    configs = [f"alone:{n}" for n in names] + ["top1-routing", "mot"]
    rows: dict[str, list[tuple[float, bool]]] = {c: [] for c in configs}
    primaries: list[str] = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for ex in track(held_out, description="held-out questions", console=con):
            alone, given = [], {}
            for m, e in enumerate(experts):
                enc = e.encode(ex.prompt)
                with e.capture() as states:
                    lg = e.model(input_ids=enc.tensor(), logits_to_keep=1).logits[0, -1]
                given[m] = (enc, dict(states))  # reused as the peer's states below (same text, same forward)
                alone.append(score(lg, letters[m], ex.n_options, ex.answer))
                rows[f"alone:{e.name}"].append(alone[-1])
            route = fusion.route(embed([ex.prompt])[0])
            primaries.append(names[route.primary])
            rows["top1-routing"].append(alone[route.primary])
            lg = fused_forward(fusion, experts, route, ex.prompt, logits_to_keep=1, peer_given=given).logits[0, -1]
            rows["mot"].append(score(lg, letters[route.primary], ex.n_options, ex.answer))
    eval_s = time.perf_counter() - t0
    # Wall time per generated token, greedy, fixed length (no stop), same prompts for every config.
    timing: dict[str, float] = {}
    decode_timing: dict[str, float] = {}
    with torch.no_grad():
        for c in configs:
            total_s, total_tok, decode_s = 0.0, 0, 0.0
            for ex in held_out[: args.gen_prompts]:
                if c.startswith("alone:"):
                    m = names.index(c.split(":", 1)[1])
                    r, interact = fusion.fixed_route(m, [x for x in range(len(names)) if x != m][: fusion.cfg.top_k - 1]), False
                    t = time.perf_counter()
                else:
                    t = time.perf_counter()
                    r, interact = fusion.route(embed([ex.prompt])[0]), c == "mot"
                g = generate(fusion, experts, r, ex.prompt, max_new_tokens=args.gen_tokens, interact=interact, ignore_eos=True)
                total_s += time.perf_counter() - t
                total_tok += len(g.token_ids)
                decode_s += g.latency_s - g.prefill_s
            timing[c] = total_s / total_tok  # routing + prefill + decoding, per generated token
            decode_timing[c] = decode_s / max(total_tok - len(held_out[: args.gen_prompts]), 1)
    # Cached lockstep decoding against full recomputation at every step, on the real experts.
    cache_check = []
    with torch.no_grad():
        for ex in held_out[: args.check_cache]:
            r = fusion.route(embed([ex.prompt])[0])
            a = generate(fusion, experts, r, ex.prompt, max_new_tokens=8, ignore_eos=True)
            b = generate(fusion, experts, r, ex.prompt, max_new_tokens=8, use_cache=False, ignore_eos=True)
            cache_check.append({"id": ex.id, "same_tokens": a.token_ids == b.token_ids, "n_tokens": len(a.token_ids),
                                "cached_s_per_token": a.s_per_token, "uncached_s_per_token": b.s_per_token})
    results = {
        "checkpoint": str(args.checkpoint), "train_meta": {k: v for k, v in meta.items() if k != "settings"},
        "n_held_out": len(held_out), "eval_wall_s": round(eval_s, 1), "threads": args.threads,
        "primary_counts": {n: primaries.count(n) for n in names},
        "configs": {
            c: {"nll": statistics.fmean(x[0] for x in rows[c]), "accuracy": statistics.fmean(float(x[1]) for x in rows[c]),
                "s_per_token": timing[c], "decode_s_per_token": decode_timing[c]}
            for c in configs
        },
        "cache_check": cache_check,
        "chance_accuracy": statistics.fmean(1.0 / ex.n_options for ex in held_out),
        "uniform_nll": statistics.fmean(math.log(ex.n_options) for ex in held_out),
    }
    table = Table(title=f"MoT held-out MMLU-Pro letter prediction (n={len(held_out)})")
    for col in ("config", "NLL (gold letter)", "accuracy", "s / generated token", "s / decode step"):
        table.add_column(col)
    for c, r in results["configs"].items():
        table.add_row(c, f"{r['nll']:.3f}", f"{r['accuracy']:.3f}", f"{r['s_per_token']:.3f}", f"{r['decode_s_per_token']:.3f}")
    con.print(table)
    con.print(f"cached vs uncached MoT decoding: {cache_check}")
    con.print(f"primary chosen: {results['primary_counts']}; chance accuracy {results['chance_accuracy']:.3f}, "
              f"uniform-over-options NLL {results['uniform_nll']:.3f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        lines = [f"# MoT held-out evaluation (n={len(held_out)})", "", "| config | NLL (gold letter) | accuracy | s / generated token | s / decode step |",
                 "| --- | --- | --- | --- | --- |"]
        lines += [f"| {c} | {r['nll']:.3f} | {r['accuracy']:.3f} | {r['s_per_token']:.3f} | {r['decode_s_per_token']:.3f} |"
                  for c, r in results["configs"].items()]
        lines += ["", f"Primary chosen: {results['primary_counts']}. Chance accuracy {results['chance_accuracy']:.3f}; "
                  f"uniform-over-options NLL {results['uniform_nll']:.3f}.", "", f"Training: {results['train_meta']}"]
        (args.out / "report.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
