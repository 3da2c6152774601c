"""Causal character-offset alignment: a primary position never sees peer text after its own."""

from __future__ import annotations

from mot_tiny import experts, fusion  # noqa: F401  (fixtures)

import pytest
import torch

from routers.mot.alignment import n_settled, settled_boundaries, token_ends, visibility
from routers.mot.fused import fused_forward


def test_settled_boundary_is_start_of_last_whitespace_run() -> None:
    text = "ab  cd\ne"
    s = settled_boundaries(text)
    assert s == [0, 0, 0, 2, 2, 2, 2, 6, 6]
    # depends only on the prefix
    assert settled_boundaries(text[:5]) == s[:6]


def test_special_tokens_inherit_the_end_before_them() -> None:
    assert token_ends([(0, 0), (0, 3), (3, 7), (0, 0)]) == [0, 3, 7, 7]


def test_visibility_and_settled_count() -> None:
    text = "the cat sat"
    settled = settled_boundaries(text)
    prim_ends = [3, 4, 7, 11]  # "the", " ", "cat", " sat"
    peer_ends = [0, 3, 7, 11]  # <bos>, "the", " cat", " sat"
    m = visibility(prim_ends, peer_ends, settled)
    # position ending at 3 ("the"): no whitespace yet, only <bos>; at 7: "the" settled (run at 3)
    assert m.tolist() == [[True, False, False, False], [True, True, False, False],
                          [True, True, False, False], [True, True, True, False]]
    assert n_settled(peer_ends, len(text), settled) == 3


TEXT = "question: what is the capital of france?\nanswer: paris is the capital"


def _cut(experts, primary: int, text: str, t: int) -> int:
    """Character end of the primary's token t."""
    return experts[primary].encode(text).ends[t]


@pytest.mark.parametrize("primary", [0, 1])
def test_changing_peer_text_after_a_position_leaves_earlier_outputs_unchanged(experts, fusion, primary: int) -> None:
    peer = 1 - primary
    route = fusion.fixed_route(primary, [peer])
    n = len(experts[primary].encode(TEXT))
    t = n // 2
    cut = _cut(experts, primary, TEXT, t)
    perturbed = TEXT[:cut] + " dog sat on the mat which enzyme unwinds dna"
    with torch.no_grad():
        base = fused_forward(fusion, experts, route, TEXT, logits_to_keep=n).logits[0]
        pert = fused_forward(fusion, experts, route, TEXT, peer_texts={peer: perturbed}, logits_to_keep=n).logits[0]
    assert torch.equal(base[: t + 1], pert[: t + 1]), "a position saw peer text after its own"
    # the perturbation is real: later positions do change
    assert not torch.allclose(base[t + 1 :], pert[t + 1 :])


@pytest.mark.parametrize("primary", [0, 1])
def test_without_the_causal_mask_the_perturbation_leaks(experts, fusion, primary: int) -> None:
    """The control: the same perturbation does reach early positions when alignment is not causal
    (as with the third-party re-implementation's interpolation), so the test above can fail."""
    peer = 1 - primary
    route = fusion.fixed_route(primary, [peer])
    n = len(experts[primary].encode(TEXT))
    t = n // 2
    perturbed = TEXT[: _cut(experts, primary, TEXT, t)] + " dog sat on the mat which enzyme unwinds dna"
    with torch.no_grad():
        base = fused_forward(fusion, experts, route, TEXT, logits_to_keep=n, causal=False).logits[0]
        pert = fused_forward(fusion, experts, route, TEXT, peer_texts={peer: perturbed}, logits_to_keep=n, causal=False).logits[0]
    assert not torch.allclose(base[: t + 1], pert[: t + 1])
