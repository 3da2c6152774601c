"""Training moves the router and the interaction layers and nothing else; checkpoints hold only
those; the data loaders split by id and report bad rows clearly."""

from __future__ import annotations

from mot_tiny import experts, fusion  # noqa: F401  (fixtures)

import json
from pathlib import Path

import pytest
import torch

from mot_tiny import tiny_fusion
from experts.errors import ConfigError
from routers.embeddings import SentenceEmbedder
from routers.mot.checkpoint import load_checkpoint
from routers.mot.data import Example, load_examples
from routers.mot.session import query_encoder
from routers.mot.train import TrainSettings, train

EXAMPLES = [
    Example(id="1", prompt="question: what is the capital of france?\nanswer:", target=" paris"),
    Example(id="2", prompt="question: which enzyme unwinds dna?\nanswer:", target=" helicase"),
    Example(id="3", prompt="question: the cat sat on what?\nanswer:", target=" the mat"),
]


def test_a_training_step_changes_router_and_interaction_but_not_experts(experts, tmp_path: Path) -> None:
    fusion = tiny_fusion(experts, out_init_std=1e-3, embed_dim=384)
    experts_before = [{k: v.clone() for k, v in e.model.state_dict().items()} for e in experts]
    fusion_before = {k: v.clone() for k, v in fusion.state_dict().items()}
    summary = train(fusion, experts, query_encoder(SentenceEmbedder(cache_path=None)), EXAMPLES,
                    TrainSettings(max_steps=1, batch_size=2, lr=1e-2), out_dir=tmp_path)
    assert summary["steps"] == 1 and summary["examples_seen"] == 2
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
    # The checkpoint holds exactly the trained parameters, and they reload unchanged.
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["steps"] == 1
    assert set(loaded.state_dict()) == set(fusion.state_dict())
    assert all(torch.equal(v, fusion.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert len(json.loads((tmp_path / "train_log.jsonl").read_text().splitlines()[0])) > 3


def test_mmlu_pro_split_is_disjoint_by_question_id() -> None:
    train_ids = {e.id for e in load_examples("mmlu-pro", split="train", max_prompt_chars=250)}
    eval_ids = {e.id for e in load_examples("mmlu-pro", split="eval", max_prompt_chars=250)}
    assert train_ids and eval_ids and not train_ids & eval_ids
    ex = load_examples("mmlu-pro", split="eval", max_prompt_chars=250, limit=1)[0]
    assert ex.prompt.endswith("\nAnswer:") and ex.target == f" {ex.answer}" and "A. " in ex.prompt


def test_pairs_loader_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "pairs.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": f"q{i}:", "target": f" a{i}"}) for i in range(50)) + "\n")
    tr = load_examples(str(good), split="train")
    ev = load_examples(str(good), split="eval")
    assert len(tr) + len(ev) == 50 and not {e.id for e in tr} & {e.id for e in ev}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl: line 1: target: Field required"):
        load_examples(str(bad), split="all")
    with pytest.raises(ConfigError, match="not found"):
        load_examples(str(tmp_path / "missing.jsonl"))
