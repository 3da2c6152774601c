"""The training path that produced the shipped policy, on a tiny real model: encoding and masks,
the shared prefix, `generate_batch`, `run_rollouts` against recorded callees, one warm-up and one
GRPO step, demonstrations, the split — and that training and inference read the same text the
same way."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch

from conftest import RECORDED
from experts import ExpertRegistry
from experts.backends.local import LocalBackend, cut_at_stop
from experts.spec import ExpertSpec
from routers.router_r1.episode import Episode
from routers.router_r1.graph import policy_request
from routers.router_r1.prompts import STOP_STRINGS, policy_prompt, prompt_head
from routers.router_r1.training.engine import LoraSettings, Policy, SamplingConfig, generate_batch, keep_turn, response_logprobs
from routers.router_r1.training.grpo import group_advantages, grpo_step, sft_step

POOL = ["Llama-2-7b-hf", "Meta-Llama-3.1-8B-Instruct", "Meta-Llama-3.1-70B-Instruct"]
LINES = [f"- {m}: a recorded model" for m in POOL]


def resolve(name: str) -> str | None:
    return {m.lower(): m for m in POOL}.get(name.strip().lower())


@pytest.fixture
def policy(tiny_policy_dir: Path) -> Policy:
    return Policy.load(str(tiny_policy_dir), lora=LoraSettings(rank=4, alpha=8, first_layer=0.5), dtype=torch.float32)


def prompt(policy: Policy, question: str = "Which planet is the largest", choices: tuple[str, ...] = ("Mars", "Jupiter")) -> str:
    return policy.render(policy_prompt(question, names=POOL, descriptions=LINES, choices=choices))


def routed_episode(expert: str = "Meta-Llama-3.1-70B-Instruct", letter: str = "B") -> Episode:
    ep = Episode.start(max_turns=3)
    step = ep.accept(f"<think>I will ask an LLM.</think>\n<search> {expert}:which planet? </search>", resolve)
    ep.observe(step, f"Jupiter is the largest planet. The answer is ({letter}).")
    ep.accept(f"<think>The answer is ({letter}).</think>\n<answer> {letter} </answer>", resolve)
    return ep


# ---------------------------------------------------------------------- text, tokens, masks
def test_the_mask_covers_exactly_the_policys_text(policy: Policy) -> None:
    p, ep = prompt(policy), routed_episode()
    ids, mask = policy.encode(p, ep.segments())
    assert ids == policy.tok(p + ep.transcript, add_special_tokens=False)["input_ids"]  # the text inference sends
    written = "".join(s.text for s in ep.steps)
    assert policy.tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == written
    unmasked = policy.tok.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "Jupiter is the largest planet. The answer is (B)." in unmasked  # callee text is never trained on
    assert unmasked.startswith(policy.tok.decode(policy.tok(p, add_special_tokens=False)["input_ids"]))


async def test_inference_sends_the_policy_exactly_the_training_tokens(policy: Policy, tiny_policy_dir: Path) -> None:
    """The router's next-turn request, rendered by the local backend, is the text and the token
    ids training scores: the same prompt, the same assistant side, nothing re-formatted."""
    backend = LocalBackend(ExpertSpec(name="tiny", backend="local", model=str(tiny_policy_dir), dtype="float32"))  # type: ignore[arg-type]
    await backend.load()
    user = policy_prompt("Which planet is the largest", names=POOL, descriptions=LINES, choices=("Mars", "Jupiter"))
    ep = routed_episode()
    req = policy_request(user, ep.transcript, max_tokens=8, temperature=0.0, seed=None)
    rendered = backend._render(req)
    assert rendered == policy.render(user) + ep.transcript
    assert backend.tokenizer(rendered, add_special_tokens=False)["input_ids"] == policy.encode(policy.render(user), ep.segments())[0]
    first = backend._render(policy_request(user, "", max_tokens=8, temperature=0.0, seed=None))
    assert first == policy.render(user)
    await backend.unload()


@pytest.mark.parametrize(
    ("generated", "eos", "outcome"),
    [
        ("<think>a</think>\n<search> Meta-Llama-3.1-8B-Instruct: who? </search> and then more text", False, "route"),
        ("<think>a</think>\n<search> Meta-Llama-3.1-8B-Instruct: who? ", True, "no-action"),  # EOS inside a search
        ("<think>a</think>\n<answer> B </answer>\n\n<search> Llama-2-7b-hf: y </search>", False, "answer"),
        ("<think>a</think>\n<search> gpt-9: who? </search>", True, "unknown-expert"),
        ("Plain prose, no tags.", True, "no-action"),
    ],
)
def test_training_and_inference_parse_the_same_text_the_same_way(policy: Policy, generated: str, eos: bool, outcome: str) -> None:
    """The same sampled tokens through the training path (`keep_turn`: ids kept up to the stop
    string) and through the inference path (the local backend cuts the decoded text at the stop
    string and names it): the same turn, the same action, the same transcript."""
    tok = policy.tok
    ids = tok.encode(generated, add_special_tokens=False) + ([tok.eos_token_id] * 3 if eos else [])
    turn = keep_turn(tok, ids, {tok.eos_token_id})
    train = Episode.start(max_turns=2)
    st_train = train.accept(turn.text, resolve, turn.stop_string)

    cut = next((j for j, t in enumerate(ids) if t == tok.eos_token_id), len(ids))
    served, stop = cut_at_stop(tok.decode(ids[:cut], skip_special_tokens=True), STOP_STRINGS)  # what the backend returns
    infer = Episode.start(max_turns=2)
    st_infer = infer.accept(served, resolve, stop)

    assert st_train.outcome == st_infer.outcome == outcome
    assert st_train.text == st_infer.text and train.transcript == infer.transcript
    assert st_train.call == st_infer.call


# ---------------------------------------------------------------------- the engine
def test_the_shared_prefix_changes_nothing_but_the_cost(policy: Policy) -> None:
    head = prompt_head(names=POOL, descriptions=LINES, multiple_choice=True)
    prompts = [prompt(policy), prompt(policy, "What is two plus two", ("3", "4", "5"))]
    prefix = policy.shared_prefix(prompts[0], head)
    assert prefix is not None and prefix.matches([policy.encode(p, [])[0] for p in prompts])
    rows = [policy.encode(p, routed_episode().segments()) for p in prompts]
    plain, _ = response_logprobs(policy.model, rows, None, grad=False)
    shared, row = response_logprobs(policy.model, rows, prefix, grad=False)
    assert plain.shape == shared.shape == (sum(sum(m) for _, m in rows),)
    assert torch.allclose(plain, shared, atol=1e-4)
    assert row.tolist() == [0] * sum(rows[0][1]) + [1] * sum(rows[1][1])
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0)
    seqs = [policy.encode(p, [])[0] for p in prompts]
    assert generate_batch(policy, seqs, cfg, 0, None) == generate_batch(policy, seqs, cfg, 0, prefix)


def test_generate_batch_samples_reproducibly_within_the_token_limit(policy: Policy) -> None:
    seqs = [policy.encode(prompt(policy), [])[0]] * 3
    cfg = SamplingConfig(max_new_tokens=5, temperature=1.0, top_p=0.95)
    a, b = generate_batch(policy, seqs, cfg, seed=7), generate_batch(policy, seqs, cfg, seed=7)
    assert a == b and len(a) == 3
    assert all(1 <= t.n_tokens <= 5 for t in a)
    assert len({t.text for t in a}) > 1  # rows sample independently


def test_keep_turn_cuts_at_the_earliest_stop_string(policy: Policy) -> None:
    tok = policy.tok
    ids = tok.encode("<think>x</think><search> a: b </search> trailing words <answer> z </answer>", add_special_tokens=False)
    turn = keep_turn(tok, ids, {tok.eos_token_id})
    assert turn.text.startswith("<think>x</think><search> a: b </search>") and "trailing" not in turn.text
    assert turn.stop_string == "</search>"
    ids = tok.encode("<answer> z </answer> more", add_special_tokens=False) + [tok.eos_token_id]
    assert keep_turn(tok, ids, {tok.eos_token_id}).stop_string == "</answer>"
    assert keep_turn(tok, tok.encode("<search> a: b", add_special_tokens=False) + [tok.eos_token_id], {tok.eos_token_id}).stop_string is None


async def test_run_rollouts_routes_to_recorded_callees_through_the_dispatcher(policy: Policy) -> None:
    """A prefill holding a whole route makes the first turn route whatever the tiny model writes
    (the turn is cut after `</search>`); the recorded callee's reply comes back as the tail of
    its text, the answer-only turn ends each episode, and the three calls coalesce into one batch."""
    from conftest import mmlu_questions
    from evals import recorded_pool
    from orchestrator.dispatcher import Dispatcher
    from routers.router_r1.training.rollout import run_rollouts

    registry = ExpertRegistry.from_specs(recorded_pool.recorded_specs(RECORDED, POOL))
    qs = mmlu_questions(3, offset=20)
    route = "<think>I will ask an LLM.</think>\n<search> Meta-Llama-3.1-70B-Instruct:which? </search>"
    cfg = SamplingConfig(max_new_tokens=4, max_turns=1, obs_tokens=24, prefill=route)
    async with Dispatcher(registry) as dispatcher:
        rollouts = await run_rollouts(policy, [prompt(policy, q.text, q.choices) for q in qs], question_ids=[q.question_id for q in qs],
                                      resolve=resolve, submit=dispatcher.submit_or_error,
                                      price_of=lambda e: registry.spec(e).price_per_mtok.output, cfg=cfg, seed=1)
        stats = dispatcher.stats["Meta-Llama-3.1-70B-Instruct"]
    await registry.aclose()
    table = registry.recorded_library.table(RECORDED, "Meta-Llama-3.1-70B-Instruct")
    assert stats.requests == 3 and stats.backend_calls == 1
    for r, q in zip(rollouts, qs, strict=True):
        ep = r.episode
        assert ep.done and [s.outcome for s in ep.steps] == ["route", "final"] and ep.routes_executed == 1 and ep.cost > 0
        info = ep.steps[0].observation
        assert info.startswith("\n\n<information>") and info.rstrip().endswith("</information>")
        reply = table[q.question_id].response
        assert ("The answer is" in info) == ("The answer is" in reply)  # the tail, where the answer is
        ids, mask = policy.encode(r.prompt, r.segments())
        assert ids == policy.tok(r.prompt + ep.transcript, add_special_tokens=False)["input_ids"]
        assert policy.tok.decode([t for t, m in zip(ids, mask, strict=True) if m]) == ep.steps[1].text  # prefill and reply masked out


# ---------------------------------------------------------------------- the optimiser steps
def test_one_warmup_step_lowers_the_loss_on_its_batch_and_trains_only_the_adapter(policy: Policy) -> None:
    rows = [policy.encode(prompt(policy), routed_episode().segments())]
    before, _ = response_logprobs(policy.model, rows, None, grad=False)
    frozen = {n: p.detach().clone() for n, p in policy.model.named_parameters() if not p.requires_grad}
    adapter = {n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad}
    assert adapter and all("lora_" in n for n in adapter)
    opt = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=5e-2)
    stats = sft_step(policy, opt, rows)
    after, _ = response_logprobs(policy.model, rows, None, grad=False)
    assert stats.tokens == sum(rows[0][1]) and stats.loss == pytest.approx(float(-before.mean()), rel=1e-4)
    assert float(-after.mean()) < float(-before.mean())
    params = dict(policy.model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in adapter.items())
    assert policy.version == 1


def test_one_grpo_step_moves_the_policy_towards_positive_advantage(policy: Policy) -> None:
    ref = copy.deepcopy(policy.model).requires_grad_(False)
    rows = [policy.encode(prompt(policy), routed_episode().segments()),
            policy.encode(prompt(policy), routed_episode("Llama-2-7b-hf", "A").segments())]
    before, row = response_logprobs(policy.model, rows, None, grad=False)
    opt = torch.optim.SGD([p for p in policy.model.parameters() if p.requires_grad], lr=2.0)
    stats = grpo_step(policy, ref, opt, rows, torch.tensor([1.0, -1.0]), beta=0.001)
    after, _ = response_logprobs(policy.model, rows, None, grad=False)
    assert stats.kl == pytest.approx(0.0, abs=1e-6)  # measured before the update: the reference is the same model
    assert float((after - before)[row == 0].sum()) > 0  # rewarded row: its tokens became likelier
    assert float((after - before)[row == 1].sum()) < 0  # penalised row: less likely


def test_a_group_with_equal_rewards_takes_no_step(policy: Policy) -> None:
    rows = [policy.encode(prompt(policy), routed_episode().segments())] * 2
    opt = torch.optim.SGD([p for p in policy.model.parameters() if p.requires_grad], lr=1.0)
    adv = group_advantages([0.5, 0.5], group_size=2)
    assert torch.equal(adv, torch.zeros(2))
    stats = grpo_step(policy, policy.model, opt, rows, adv, beta=0.0)
    assert stats.tokens == 0 and policy.version == 0


def test_group_advantages() -> None:
    adv = group_advantages([1.0, 0.0, -1.0, 0.5, 0.5, 0.5], group_size=3)
    first = torch.tensor([1.0, 0.0, -1.0])
    assert torch.allclose(adv[:3], (first - first.mean()) / (first.std(unbiased=False) + 1e-6))
    assert torch.equal(adv[3:], torch.zeros(3))


# ---------------------------------------------------------------------- demonstrations and the split
def _data():  # type: ignore[no-untyped-def]
    from orchestrator.settings import resolve_config
    from routers.router_r1.training.cli_support import training_data

    return training_data(resolve_config(None), recorded=RECORDED, pool=POOL, live=False, policy=None, data=None, fit_fraction=0.3,
                         seed=0, extra_models=["Yi-34B"])


def test_demonstrations_copy_the_recorded_prediction_and_pass_the_format_gate(policy: Policy) -> None:
    from routers.router_r1.reward import format_score
    from routers.router_r1.training.demos import demonstration

    data = _data()
    rng = random.Random(0)
    demos = [d for q in data.fit[:120] if (d := demonstration(q, POOL, data.tables, rng, policy.tok, obs_tokens=48)) is not None]
    assert len(demos) >= 100
    for d in demos:
        last = data.tables[d.experts[-1]][d.question.id]
        assert d.answer == last.pred  # the expert's own prediction, right or wrong: never the gold answer
        assert format_score(d.episode.transcript, lambda n: resolve(n) is not None) == 0
        assert d.episode.transcript.count("<information>") == len(d.experts)
    wrong = [d for d in demos if d.answer != d.question.answer]
    assert len(wrong) > 20  # the demonstrations copy, they do not know
    two = [d for d in demos if len(d.experts) == 2]
    assert two and all(data.tables[d.experts[0]][d.question.id].pred is None for d in two)
    assert {d.experts[0] for d in demos} == set(POOL)  # the first expert is drawn uniformly, not the oracle's


async def test_training_questions_are_the_bench_fit_side_and_evaluation_the_bench_sample() -> None:
    from orchestrator.bench.runner import BenchmarkRunner, BenchOptions
    from routers.router_r1.training.trainer import eval_sample

    data = _data()
    assert not {q.id for q in data.fit} & {q.id for q in data.eval}
    split = BenchmarkRunner(BenchOptions(recorded=RECORDED, pool=POOL, limit=30, seed=0, routers=["random"]), store=None).prepare()  # type: ignore[arg-type]
    assert [q.id for q in eval_sample(data.eval, 30, 0)] == [q.question_id for q in split.eval_queries]
    assert {q.question_id for q in split.fit_queries} == {q.id for q in data.fit}
