"""Causal alignment of peer tokens to primary tokens by character offsets.

Every expert tokenises the same text with its own tokenizer. A primary position `i` (whose token
ends at character `e_i`) may attend to a peer token `j` (ending at `f_j`) only when

    f_j <= settled(e_i)

where `settled(e)` is the later of the end of the last complete segment in `text[:e]` and the
start of the last whitespace run in `text[:e]`. Texts are tokenised in segments (the prompt, then
the continuation), each on its own, so a segment's tokens never depend on text after it: once a
segment is complete, all its tokens are final (the peer's "\nAnswer:" is visible to the primary
position that predicts the answer). Within a segment, the whitespace rule applies, for two reasons:

* `f_j <= e_i` alone is not enough: a peer token that ends exactly at `e_i` exists only because
  the text after `e_i` did not merge with it (BPE looks ahead), which leaks one bit of the future
  in teacher-forced training.
* The tokenizers used here (byte-level BPE with a whitespace-aware pre-tokenizer; SentencePiece
  pieces that carry a leading `▁`) never merge across the start of a whitespace run, so peer
  tokens ending there are final: decoding a growing text sees exactly the peer tokens training
  saw, which keeps cached decoding equal to full recomputation.

    ends = token_ends(offsets)                         # monotone character ends
    settled = settled_boundaries(text, [len(prompt)])  # settled[e] for e in 0..len(text)
    mask = visibility(primary_ends, peer_ends, settled)   # (n_primary, n_peer) bool
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def token_ends(offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Character end of each token, made monotone: special tokens report (0, 0) wherever they
    sit, so they inherit the end of the text before them."""
    ends: list[int] = []
    last = 0
    for _, end in offsets:
        last = max(last, int(end))
        ends.append(last)
    return ends


def settled_boundaries(text: str, segment_ends: Sequence[int] = ()) -> list[int]:
    """`settled[e]` for e = 0..len(text): the later of the last segment end `<= e` and the start
    of the last whitespace run in `text[:e]` (0 when there is neither). A whitespace run starts
    afresh at a segment end. Depends only on `text[:e]` and the segment ends before `e`, so it is
    causal by construction."""
    cuts = set(segment_ends)
    out = [0] * (len(text) + 1)
    last = 0
    for e in range(1, len(text) + 1):
        k = e - 1
        if text[k].isspace() and (k == 0 or k in cuts or not text[k - 1].isspace()):
            last = k
        if e in cuts:
            last = e
        out[e] = last
    return out


def visibility(primary_ends: Sequence[int], peer_ends: Sequence[int], settled: Sequence[int]) -> torch.Tensor:
    """Boolean mask (n_primary, n_peer): True where the primary position may see the peer token."""
    limit = torch.tensor([settled[min(e, len(settled) - 1)] for e in primary_ends], dtype=torch.long)
    peer = torch.tensor(list(peer_ends), dtype=torch.long)
    return peer.unsqueeze(0) <= limit.unsqueeze(1)


def n_settled(peer_ends: Sequence[int], text_len: int, settled: Sequence[int]) -> int:
    """How many leading peer tokens are final once the text has `text_len` characters."""
    limit = settled[text_len]
    n = 0
    for f in peer_ends:
        if f > limit:
            break
        n += 1
    return n
