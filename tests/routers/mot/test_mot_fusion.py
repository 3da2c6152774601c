"""The interaction is additive and exact: zeroed, the primary is itself; cached decoding equals
recomputation; with interaction, peers change every generated token's distribution."""

from __future__ import annotations

from mot_tiny import experts, fusion  # noqa: F401  (fixtures)

import pytest
import torch

from routers.mot.decode import generate
from routers.mot.fused import fused_forward

TEXT = "question: which enzyme unwinds dna?\nanswer: helicase"
PROMPT = "question: what is the capital of france?\nanswer:"


@pytest.mark.parametrize("primary", [0, 1])
def test_zeroed_interaction_reproduces_the_primary_exactly(experts, fusion, primary: int) -> None:
    route = fusion.fixed_route(primary, [1 - primary])
    ids = experts[primary].encode(TEXT).tensor()
    with torch.no_grad():
        own = experts[primary].model(input_ids=ids).logits
        fused = fused_forward(fusion, experts, route, TEXT, logits_to_keep=ids.shape[1]).logits
        assert not torch.allclose(own, fused)  # the interaction does something before zeroing
        fusion.zero_interaction_()
        zeroed = fused_forward(fusion, experts, route, TEXT, logits_to_keep=ids.shape[1]).logits
    assert torch.equal(own, zeroed)


@pytest.mark.parametrize("primary", [0, 1])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_decoding_matches_uncached(experts, fusion, primary: int, temperature: float) -> None:
    route = fusion.fixed_route(primary, [1 - primary])
    cached_logits: list[torch.Tensor] = []
    full_logits: list[torch.Tensor] = []
    cached = generate(fusion, experts, route, PROMPT, max_new_tokens=12, temperature=temperature, seed=3, step_logits=cached_logits)
    full = generate(fusion, experts, route, PROMPT, max_new_tokens=12, temperature=temperature, seed=3, use_cache=False,
                    step_logits=full_logits)
    assert cached.token_ids == full.token_ids
    assert len(cached.token_ids) >= 4
    for a, b in zip(cached_logits, full_logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # the peer really ran in lockstep on the growing text
    assert sum(cached.peer_tokens.values()) > len(experts[1 - primary].encode(PROMPT)) // 2


@pytest.mark.parametrize("primary", [0, 1])
def test_interaction_changes_every_generated_step(experts, fusion, primary: int) -> None:
    route = fusion.fixed_route(primary, [1 - primary])
    fused_logits: list[torch.Tensor] = []
    alone_logits: list[torch.Tensor] = []
    generate(fusion, experts, route, PROMPT, max_new_tokens=6, step_logits=fused_logits)
    generate(fusion, experts, route, PROMPT, max_new_tokens=6, interact=False, step_logits=alone_logits)
    # Same first step context, so compare only step 0 exactly; later contexts may differ.
    assert not torch.allclose(fused_logits[0], alone_logits[0])
    assert all(not torch.allclose(a, b) for a, b in zip(fused_logits, alone_logits, strict=False))


def test_a_position_that_sees_no_peer_gets_no_update(fusion) -> None:
    """The null slot's value is zero and nothing after the attention has a bias: no constant offset."""
    d = fusion.cfg.d_shared
    h = torch.randn(2, 3, fusion.cfg.hidden_sizes[0])
    keys, values = torch.randn(2, 4, d), torch.randn(2, 4, d)
    nothing = torch.zeros(2, 3, 4, dtype=torch.bool)
    for meet in fusion.meetings:
        assert torch.equal(meet(0, h, keys, values, nothing), torch.zeros_like(h))
        assert not torch.equal(meet(0, h, keys, values, ~nothing), torch.zeros_like(h))


def test_a_route_without_peers_is_the_primary_alone(experts, fusion) -> None:
    route = fusion.fixed_route(1, [])
    ids = experts[1].encode(PROMPT).tensor()
    with torch.no_grad():
        own = experts[1].model(input_ids=ids, logits_to_keep=1).logits[0, -1]
        fused = fused_forward(fusion, experts, route, PROMPT).logits[0, -1]
    assert torch.equal(own, fused)
