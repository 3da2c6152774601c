"""Training runs on cached frozen states and moves the router and the interaction layers only;
the cached loss equals the live (inference-path) loss; the loss goes down; checkpoints hold only
the trained parameters; the data keep four seeded options and split by question id."""

from __future__ import annotations

from mot_tiny import experts, fusion  # noqa: F401  (fixtures)

import json
from pathlib import Path

import pytest
import torch

from evals.datasets import default_mmlu_pro_paths, load_mmlu_pro
from mot_tiny import tiny_examples, tiny_fusion
from routers.embeddings import SentenceEmbedder
from routers.mot.cache import StateCache
from routers.mot.checkpoint import load_checkpoint
from routers.mot.data import load_examples, reduce_options
from routers.mot.session import query_encoder
from routers.mot.train import TrainData, TrainSettings, batch_loss, live_letter_logits, train


@pytest.fixture(scope="module")
def embed():
    return query_encoder(SentenceEmbedder(cache_path=None))


def _data(experts, embed, root: Path, dtype: torch.dtype = torch.float16) -> TrainData:
    cache = StateCache(root, dtype=dtype)
    examples = tiny_examples()
    for e in experts:
        cache.build(e, examples, batch_size=4)
    cache.build_queries(embed, examples)
    return TrainData.from_cache(cache, experts, examples)


def _live(fusion, experts, data):
    return lambda p, on, g: live_letter_logits(fusion, experts, data.examples, p, [j for j in range(len(experts)) if j != p])


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_cached_state_training_gives_the_uncached_loss_on_one_batch(experts, embed, tmp_path: Path, dtype, tol) -> None:
    """The live side runs the experts and the fused forward exactly as inference does."""
    fusion = tiny_fusion(experts, embed_dim=384, out_init_std=0.05)
    data = _data(experts, embed, tmp_path, dtype)
    settings = TrainSettings()
    fusion.train()
    cached, _ = batch_loss(fusion, experts, data, settings, gumbel=False)
    cached.backward()
    g_cached = {k: p.grad.clone() for k, p in fusion.named_parameters() if p.grad is not None}
    fusion.zero_grad(set_to_none=True)
    live, _ = batch_loss(fusion, experts, data, settings, gumbel=False, letter_logits=_live(fusion, experts, data))
    live.backward()
    g_live = {k: p.grad.clone() for k, p in fusion.named_parameters() if p.grad is not None}
    c, lv = float(cached.detach()), float(live.detach())
    assert abs(c - lv) < tol * max(1.0, abs(lv))
    assert g_cached.keys() == g_live.keys() and any(k.startswith("router.") for k in g_cached)
    for k in g_live:
        torch.testing.assert_close(g_cached[k], g_live[k], rtol=50 * tol, atol=50 * tol)
    # the interaction is really in the loss: zeroed, the loss changes
    fusion.zero_interaction_()
    zeroed, _ = batch_loss(fusion, experts, data, settings, gumbel=False)
    assert abs(float(zeroed.detach()) - c) > 1e-4


def test_the_loss_goes_down_over_a_few_steps(experts, embed, tmp_path: Path) -> None:
    fusion = tiny_fusion(experts, embed_dim=384, out_init_std=0.05)
    data = _data(experts, embed, tmp_path)
    settings = TrainSettings(max_steps=12, batch_size=len(data), lr=1e-2, weight_decay=0.0)
    with torch.no_grad():
        fusion.eval()
        before, _ = batch_loss(fusion, experts, data, settings, gumbel=False)
    summary = train(fusion, experts, data, settings)
    with torch.no_grad():
        after, stats = batch_loss(fusion, experts, data, settings, gumbel=False)
    assert summary["steps"] == 12
    assert float(after) < float(before) - 0.2, (float(before), float(after))
    assert stats["fused_nll"] < stats["own_nll"]  # the fusion, not the experts, fits the questions


def test_training_changes_router_and_interaction_but_not_experts(experts, embed, tmp_path: Path) -> None:
    fusion = tiny_fusion(experts, out_init_std=1e-3, embed_dim=384)
    data = _data(experts, embed, tmp_path / "cache")
    experts_before = [{k: v.clone() for k, v in e.model.state_dict().items()} for e in experts]
    fusion_before = {k: v.clone() for k, v in fusion.state_dict().items()}
    out = tmp_path / "run"
    summary = train(fusion, experts, data, TrainSettings(max_steps=1, batch_size=4, lr=1e-2), out_dir=out)
    assert summary["steps"] == 1 and summary["examples_seen"] == 4
    for e, before in zip(experts, experts_before, strict=True):
        assert all(torch.equal(v, before[k]) for k, v in e.model.state_dict().items()), f"{e.name} weights changed"
        assert all(p.grad is None for p in e.model.parameters())
    changed = {k for k, v in fusion.state_dict().items() if not torch.equal(v, fusion_before[k])}
    assert {k for k in fusion_before if k.startswith("router.")} <= changed
    for q in range(len(fusion.meetings)):
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            assert f"meetings.{q}.{part}.weight" in changed
        assert any(k.startswith(f"meetings.{q}.out.") for k in changed)
        assert any(k.startswith(f"meetings.{q}.inp.") for k in changed)
    # The checkpoint holds exactly the trained parameters (fp16, as kept in memory), and they reload unchanged.
    loaded, meta = load_checkpoint(out)
    assert meta["steps"] == 1
    assert set(loaded.state_dict()) == set(fusion.state_dict())
    assert all(torch.equal(v, fusion.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert (out / "mot.pt").stat().st_size < 2 * sum(p.numel() for p in fusion.parameters()) + 100_000
    assert len(json.loads((out / "train_log.jsonl").read_text().splitlines()[0])) > 3


def test_the_cache_is_built_once_and_resumes(experts, tmp_path: Path) -> None:
    cache = StateCache(tmp_path)
    examples = tiny_examples()
    assert cache.build(experts[0], examples[:3], shard_size=2) == 3
    again = StateCache(tmp_path)  # a new process: reads the shards
    assert again.missing(experts[0], examples) == examples[3:]
    assert again.build(experts[0], examples) == 3 and again.build(experts[0], examples) == 0
    [st] = again.load(experts[0], examples[:1])
    assert st.scaled.dtype == torch.float16 and st.states.shape[:2] == (len(experts[0].meeting_layers), len(st.ids))
    with torch.no_grad():
        own = experts[0].model(input_ids=torch.tensor([st.ids])).logits[0, -1, experts[0].letter_ids(4)]
    torch.testing.assert_close(st.letter_logits, own, rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyError, match="not cached"):
        again.load(experts[1], examples[:1])


def test_states_beyond_the_fp16_range_survive_the_cache() -> None:
    """Gemma's residual stream holds values past 65,504 (its <bos> state): stored per-vector scaled."""
    from routers.mot.cache import ExpertStates

    dense = torch.randn(4, 5, 16) * torch.tensor([1.0, 1e3, 1e5, 1e6, 1e-3]).view(1, 5, 1)
    st = ExpertStates.from_dense([1] * 5, list(range(5)), dense, torch.zeros(4), 0.0)
    assert st.scaled.dtype == torch.float16 and torch.isfinite(st.states).all()
    torch.testing.assert_close(st.states, dense, rtol=1e-3, atol=0.0)
    assert not torch.isfinite(dense.half()).all()  # plain fp16 would have overflowed


def test_four_options_are_gold_plus_seeded_distractors_the_same_every_time() -> None:
    questions = load_mmlu_pro(default_mmlu_pro_paths()["test"])[:50]
    for q in questions:
        opts, ans = reduce_options(q, 4, seed=0)
        assert len(opts) == 4 and len(set(opts)) == len(set(q.options) & set(opts)) and opts["ABCD".index(ans)] == q.options[q.answer_index]
        assert reduce_options(q, 4, seed=0) == (opts, ans)
    assert any(reduce_options(q, 4, seed=0) != reduce_options(q, 4, seed=1) for q in questions)
    answers = {reduce_options(q, 4, seed=0)[1] for q in questions}
    assert answers == set("ABCD")  # the gold position is shuffled, not always A


def test_mmlu_pro_split_is_disjoint_by_question_id() -> None:
    train_ex = load_examples("mmlu-pro", split="train", max_prompt_chars=250)
    eval_ex = load_examples("mmlu-pro", split="eval", max_prompt_chars=250)
    assert len(train_ex) > 2500 and len(eval_ex) > 600
    assert not {e.id for e in train_ex} & {e.id for e in eval_ex}
    ex = load_examples("mmlu-pro", split="eval", max_prompt_chars=250, limit=1)[0]
    assert ex.prompt.endswith("\nD. " + ex.options[3] + "\nAnswer:") and ex.target == f" {ex.answer}" and ex.n_options == 4
    assert load_examples("mmlu-pro", split="eval", max_prompt_chars=250, limit=5) == eval_ex[:5]


def test_every_example_has_exactly_the_asked_number_of_options() -> None:
    """MMLU-Pro has questions with 3 options; kept, they break a 4-option training batch."""
    questions = load_mmlu_pro(default_mmlu_pro_paths()["test"])
    short_ids = {q.id for q in questions if q.n_options < 4}
    assert short_ids  # the case this guards against exists in the data
    for split in ("train", "eval"):
        examples = load_examples("mmlu-pro", split=split, max_prompt_chars=250)
        assert {e.n_options for e in examples} == {4}
        assert not {e.id for e in examples} & short_ids


def test_the_router_learns_to_make_the_better_fused_expert_primary(experts, embed, tmp_path: Path) -> None:
    """With M = K = 2 only the primary choice varies: the route term must raise the score of the
    primary whose fused loss is lower (not of the helpful peer, as a peer-only gate would)."""
    fusion = tiny_fusion(experts, embed_dim=384)
    data = _data(experts, embed, tmp_path)
    good = torch.zeros(len(data), 4).scatter_(1, data.gold.view(-1, 1), 5.0)  # fused expert 1: confident and right
    flat = torch.zeros(len(data), 4)  # fused expert 0: uniform

    def fixed(p, on, g):
        assert bool(on[:, 1 - p].all()) and not bool(on[:, p].any())  # the other expert is the peer
        return (good if p == 1 else flat) + 0 * g.sum()

    opt = torch.optim.SGD(fusion.router.parameters(), lr=0.5)
    fusion.train()
    with torch.no_grad():
        margin0 = (fusion.router(data.z)[:, 1] - fusion.router(data.z)[:, 0]).mean()
    for _ in range(5):
        opt.zero_grad()
        loss, stats = batch_loss(fusion, experts, data, TrainSettings(), gumbel=False, letter_logits=fixed)
        loss.backward()
        opt.step()
    fusion.eval()
    with torch.no_grad():
        margin = (fusion.router(data.z)[:, 1] - fusion.router(data.z)[:, 0]).mean()
    assert margin > margin0 + 0.1, (float(margin0), float(margin))
