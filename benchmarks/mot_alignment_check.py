"""Check that the causal alignment's settled peer tokens are stable for real tokenizers.

    python benchmarks/mot_alignment_check.py --models smollm2-135m-instruct,gemma-3-270m --limit 150

For every held-out MMLU-Pro text and every prefix (every `--stride` characters), the peer tokens
that `alignment.n_settled` declares final for the prefix must equal the full text's first tokens,
and their count must agree. This is the property that makes cached lockstep decoding equal to
recomputation and keeps training free of tokenizer look-ahead. Prints the mismatch counts.
"""

from __future__ import annotations

import argparse

from transformers import AutoTokenizer

from experts.packaged_models import resolve_model_dir
from routers.mot.alignment import n_settled, settled_boundaries, token_ends
from routers.mot.data import load_examples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--stride", type=int, default=3)
    args = ap.parse_args()
    toks = {m: AutoTokenizer.from_pretrained(str(resolve_model_dir(m))) for m in args.models.split(",")}

    def enc(tok, s: str) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
        e = tok(s, return_offsets_mapping=True)
        return e["input_ids"], token_ends(e["offset_mapping"])

    bad = dict.fromkeys(toks, 0)
    checks = 0
    for ex in load_examples("mmlu-pro", split="eval", max_prompt_chars=400, limit=args.limit):
        text = ex.text
        full = {m: enc(t, text) for m, t in toks.items()}
        settled = settled_boundaries(text)
        for e in range(1, len(text) + 1, args.stride):
            for m, t in toks.items():
                ids, ends = enc(t, text[:e])
                n = n_settled(ends, e, settled)
                checks += 1
                if ids[:n] != full[m][0][:n] or n != n_settled(full[m][1], e, settled):
                    bad[m] += 1
    print(f"prefix checks: {checks}; mismatches: {bad}")


if __name__ == "__main__":
    main()
