"""Check that the causal alignment's settled peer tokens are stable for real tokenizers.

    python benchmarks/mot_alignment_check.py --models smollm2-135m-instruct,gemma-3-270m --limit 150

Texts are a held-out MMLU-Pro prompt (its own segment) plus a continuation (the gold letter and a
sentence). For every prefix of the continuation (every `--stride` characters), the peer tokens
that `alignment.n_settled` declares final must equal the full text's first tokens, and their
count must agree; at the prompt's end every prompt token must be settled. This is the property
that makes cached lockstep decoding equal to recomputation and keeps training free of tokenizer
look-ahead. Prints the mismatch counts.
"""

from __future__ import annotations

import argparse

from transformers import AutoTokenizer

from experts.packaged_models import resolve_model_dir
from routers.mot.alignment import n_settled, settled_boundaries
from routers.mot.data import load_examples
from routers.mot.experts import encode_segments

CONTINUATION = ". The answer follows from the definition; naïve  spacing\n\tand 東京, done."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--stride", type=int, default=1)
    args = ap.parse_args()
    toks = {m: AutoTokenizer.from_pretrained(str(resolve_model_dir(m))) for m in args.models.split(",")}
    bad = dict.fromkeys(toks, 0)
    prompt_unsettled = dict.fromkeys(toks, 0)
    checks = 0
    for ex in load_examples("mmlu-pro", split="eval", max_prompt_chars=250, limit=args.limit):
        prompt, cont = ex.prompt, ex.target + CONTINUATION
        text = prompt + cont
        full = {m: encode_segments(t, prompt, cont) for m, t in toks.items()}
        for m, t in toks.items():
            enc = encode_segments(t, prompt)
            if n_settled(enc.ends, len(prompt), settled_boundaries(prompt, [len(prompt)])) != len(enc):
                prompt_unsettled[m] += 1
        for e in range(len(prompt) + 1, len(text) + 1, args.stride):
            settled = settled_boundaries(text[:e], [len(prompt)])
            for m, t in toks.items():
                part = encode_segments(t, prompt, text[len(prompt) : e])
                n = n_settled(part.ends, e, settled)
                checks += 1
                if part.ids[:n] != full[m].ids[:n] or n != n_settled(full[m].ends, e, settled):
                    bad[m] += 1
    print(f"prefix checks: {checks}; mismatches: {bad}; prompts not fully settled at their end: {prompt_unsettled}")


if __name__ == "__main__":
    main()
