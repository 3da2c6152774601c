"""Training pieces: callee-token masking in the batch, group advantages, one GRPO step."""

import pytest
import torch

from routers.router_r1.episode import Episode
from routers.router_r1.training.grpo import build_batch, group_advantages, grpo_step, token_logprobs
from routers.router_r1.training.rollout import Rollout, _keep_tokens, _observe, SamplingConfig


def smol_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from experts.packaged_models import resolve_model_dir

    return AutoTokenizer.from_pretrained(str(resolve_model_dir("smollm2-135m-instruct")))


def test_observation_tokens_are_masked_out_of_the_loss() -> None:
    tok = smol_tokenizer()
    r = Rollout(prompt_ids=tok.encode("Question?"), episode=Episode(max_turns=4))
    turn1 = tok.encode("<think>ask</think><search> yi-34b: who? </search>", add_special_tokens=False)
    r.append(turn1, from_policy=True)
    step = r.episode.accept(tok.decode(turn1), lambda n: "Yi-34B" if n == "yi-34b" else None)
    _observe(r, step, "Callee text that must never be trained on.", 0.0, tok, SamplingConfig(obs_tokens=600))
    turn2 = tok.encode("<think>ok</think><answer> B </answer>", add_special_tokens=False)
    r.append(turn2, from_policy=True)

    other = Rollout(prompt_ids=tok.encode("A longer question here?"), episode=Episode())
    other.append(tok.encode("<answer> C </answer>", add_special_tokens=False), from_policy=True)
    batch = build_batch([r, other], tok.pad_token_id)

    row = batch.loss_mask[0].tolist()
    p = len(r.prompt_ids)
    assert row[:p] == [0] * p  # prompt
    assert row[p : p + len(turn1)] == [1] * len(turn1)
    n_obs = len(r.response_ids) - len(turn1) - len(turn2)
    assert n_obs > 0 and row[p + len(turn1) : p + len(turn1) + n_obs] == [0] * n_obs
    masked = batch.input_ids[0, p + len(turn1) : p + len(turn1) + n_obs].tolist()
    assert tok.decode(masked).strip() == "<information>Callee text that must never be trained on.</information>"
    assert row[p + len(turn1) + n_obs : p + len(r.response_ids)] == [1] * len(turn2)
    assert sum(batch.loss_mask[1].tolist()) == len(other.response_ids)  # padding is never in the loss
    assert batch.n_loss_tokens == len(turn1) + len(turn2) + len(other.response_ids)


def test_keep_tokens_cuts_at_the_first_stop_tag() -> None:
    tok = smol_tokenizer()
    ids = tok.encode("<think>x</think><search> a: b </search> trailing words <answer> z </answer>", add_special_tokens=False)
    kept = tok.decode(_keep_tokens(tok, ids, {tok.eos_token_id}))
    assert kept.startswith("<think>x</think><search> a: b </search>") and "trailing" not in kept
    ids = tok.encode("<answer> z </answer> more", add_special_tokens=False) + [tok.eos_token_id]
    assert tok.decode(_keep_tokens(tok, ids, {tok.eos_token_id})).strip() == "<answer> z </answer>"


def test_group_advantages() -> None:
    adv = group_advantages([1.0, 0.0, -1.0, 0.5, 0.5, 0.5], group_size=3)
    first = torch.tensor([1.0, 0.0, -1.0])
    assert torch.allclose(adv[:3], (first - first.mean()) / (first.std(unbiased=False) + 1e-6))
    assert torch.equal(adv[3:], torch.zeros(3))  # a group with equal rewards teaches nothing


def tiny_llama():  # type: ignore[no-untyped-def]
    """A small randomly initialised Llama (the SmolLM2 architecture, fewer and narrower layers)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _batch() -> tuple:  # type: ignore[type-arg]
    a = Rollout(prompt_ids=[1, 2, 3], episode=Episode())
    a.append([4, 5], True)
    a.append([6, 7, 8], False)  # an observation
    a.append([9], True)
    b = Rollout(prompt_ids=[1, 2], episode=Episode())
    b.append([10, 11, 12], True)
    return a, b


def test_grpo_step_moves_the_policy_towards_positive_advantage() -> None:
    import copy

    model = tiny_llama()
    ref = copy.deepcopy(model)
    a, b = _batch()
    batch = build_batch([a, b], pad_id=0)
    before = token_logprobs(model, batch.input_ids, batch.attention_mask).detach()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    adv = torch.tensor([1.0, -1.0])
    stats = grpo_step(model, ref, opt, batch, adv, beta=0.0, micro_batch=1)
    after = token_logprobs(model, batch.input_ids, batch.attention_mask).detach()
    m = batch.loss_mask.bool()
    assert stats.tokens == 3 + 3
    assert (after[0][m[0]] - before[0][m[0]]).sum() > 0  # rewarded row: its tokens became likelier
    assert (after[1][m[1]] - before[1][m[1]]).sum() < 0  # penalised row: less likely
    assert stats.kl == pytest.approx(0.0, abs=1e-6)  # measured before the update: same as the reference


def test_grpo_step_ignores_masked_tokens() -> None:
    """Changing only the advantage-free observation tokens' targets leaves the gradient unchanged
    apart from their influence as context: with all policy tokens masked, nothing moves."""
    model = tiny_llama()
    a = Rollout(prompt_ids=[1, 2, 3], episode=Episode())
    a.append([6, 7, 8], False)
    b = Rollout(prompt_ids=[1, 2], episode=Episode())
    b.append([5], False)
    batch = build_batch([a, b], pad_id=0)
    params = [p.detach().clone() for p in model.parameters()]
    stats = grpo_step(model, model, torch.optim.SGD(model.parameters(), lr=1.0), batch, torch.tensor([1.0, -1.0]))
    assert stats.loss == 0.0
    assert all(torch.equal(p0, p) for p0, p in zip(params, model.parameters(), strict=True))
