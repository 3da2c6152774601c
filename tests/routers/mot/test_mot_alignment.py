"""Causal character-offset alignment: a primary position never sees peer text after its own, and
the position that predicts the answer sees all of the peer's prompt (segments)."""

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


def test_a_complete_segment_is_settled_at_its_end() -> None:
    prompt, cont = "q?\nAnswer:", " B is"
    text = prompt + cont
    s = settled_boundaries(text, [len(prompt)])
    assert s[len(prompt)] == len(prompt)  # the prompt's last token settles with the prompt
    assert s[len(prompt) - 1] == 2  # inside the prompt: the whitespace rule ("\n" starts at 2)
    assert s[len(prompt) + 2] == len(prompt)  # " B": the run at the segment start, nothing more yet
    assert s[len(text)] == len(prompt) + 2  # " is": the run before "is"
    assert settled_boundaries(text[: len(prompt) + 3], [len(prompt)]) == s[: len(prompt) + 4]


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
        pert = fused_forward(fusion, experts, route, TEXT, peer_texts={peer: (perturbed, "")}, logits_to_keep=n).logits[0]
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
        pert = fused_forward(fusion, experts, route, TEXT, peer_texts={peer: (perturbed, "")}, logits_to_keep=n, causal=False).logits[0]
    assert not torch.allclose(base[: t + 1], pert[: t + 1])


PROMPT, CONT = "question: what is the capital of france?\nanswer:", " paris is the capital"


@pytest.mark.parametrize("primary", [0, 1])
def test_changing_the_peer_continuation_leaves_the_prompt_and_earlier_steps_unchanged(experts, fusion, primary: int) -> None:
    peer = 1 - primary
    route = fusion.fixed_route(primary, [peer])
    enc = experts[primary].encode(PROMPT, CONT)
    n = len(enc)
    t = next(i for i, e in enumerate(enc.ends) if e > len(PROMPT))  # first continuation position
    with torch.no_grad():
        base = fused_forward(fusion, experts, route, PROMPT, CONT, logits_to_keep=n).logits[0]
        pert = fused_forward(fusion, experts, route, PROMPT, CONT, peer_texts={peer: (PROMPT, " dog sat on the mat")},
                             logits_to_keep=n).logits[0]
    assert torch.equal(base[:t], pert[:t]), "the prompt saw the peer's continuation"
    assert not torch.allclose(base[t + 1 :], pert[t + 1 :])


def test_the_answer_position_sees_the_whole_peer_prompt(experts, fusion) -> None:
    """The peer's last prompt tokens (here "answer", ":") reach the position that predicts the
    answer: changing them changes that position's logits."""
    route = fusion.fixed_route(0, [1])
    with torch.no_grad():
        base = fused_forward(fusion, experts, route, PROMPT).logits[0, -1]
        pert = fused_forward(fusion, experts, route, PROMPT, peer_texts={1: (PROMPT[: -len("answer:")] + "options:", "")}).logits[0, -1]
    assert not torch.allclose(base, pert)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_real_tokenizers_settle_the_prompt_and_keep_continuation_prefixes_stable(model: str) -> None:
    """With the packaged experts' own tokenizers: at the prompt's end every peer prompt token is
    visible (also the ones of "\nAnswer:", which the whitespace rule alone hid), and for every
    prefix of a continuation the tokens declared settled are the full continuation's first
    tokens (what keeps cached decoding equal to recomputation)."""
    from transformers import AutoTokenizer

    from experts.packaged_models import resolve_model_dir
    from routers.mot.alignment import n_settled
    from routers.mot.data import load_examples
    from routers.mot.experts import encode_segments

    tok = AutoTokenizer.from_pretrained(str(resolve_model_dir(model)))
    cont = " B. The gas constant is 8.314 J/(mol·K); naïve  spacing\n\tand 東京, done."
    checks = 0
    for ex in load_examples("mmlu-pro", split="eval", max_prompt_chars=250, limit=20):
        prompt = ex.prompt
        enc = encode_segments(tok, prompt)
        assert tok.convert_ids_to_tokens(enc.ids[-2:]) in (["Answer", ":"],)
        # old rule: the last whitespace run starts at the "\n" before "Answer:", so 2-3 tokens hid
        old = n_settled(enc.ends, len(prompt), settled_boundaries(prompt))
        new = n_settled(enc.ends, len(prompt), settled_boundaries(prompt, [len(prompt)]))
        assert new == len(enc) and old <= len(enc) - 2
        full = encode_segments(tok, prompt, cont)
        assert full.ids[: len(enc)] == enc.ids  # the prompt segment never depends on what follows
        for e in range(len(prompt) + 1, len(prompt) + len(cont) + 1):
            text = (prompt + cont)[:e]
            part = encode_segments(tok, prompt, text[len(prompt):])
            settled = settled_boundaries(text, [len(prompt)])
            k = n_settled(part.ends, e, settled)
            assert part.ids[:k] == full.ids[:k] and k == n_settled(full.ends, e, settled), (model, repr(text[len(prompt):]))
            checks += 1
    assert checks > 1000
