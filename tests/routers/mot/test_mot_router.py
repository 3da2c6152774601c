"""The `mot` router through the pipeline and the CLI: a trained checkpoint (path or store
artefact) over two tiny heterogeneous experts saved as model directories; a clear error without one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experts.spec import OrchestratorConfig
from mot_tiny import tiny_experts, tiny_fusion
from orchestrator.cli import app
from orchestrator.cli._common import EXIT_UNDECIDED  # a router that cannot route (unfitted, no checkpoint) exits 4
from orchestrator.pipeline import Runtime
from routers.types import Query, RoutingError
from routers.mot.checkpoint import checkpoint_bytes, save_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Two tiny experts saved as model directories, and a checkpoint naming them."""
    root = tmp_path_factory.mktemp("mot")
    experts = tiny_experts()
    dirs = []
    for e in experts:
        d = root / e.name
        e.model.save_pretrained(d)
        e.tokenizer.save_pretrained(d)
        e.name = str(d)
        dirs.append(str(d))
    fusion = tiny_fusion(experts, embed_dim=384)
    save_checkpoint(fusion, root / "ckpt", {"steps": 0})
    return root / "ckpt", dirs


def _config(tmp_path: Path, dirs: list[str], routers: dict | None = None) -> OrchestratorConfig:
    return OrchestratorConfig.model_validate({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'o.db'}",
        "experts": [{"name": "tiny-a", "backend": "local", "model": dirs[0]}, {"name": "tiny-b", "backend": "local", "model": dirs[1]}],
        "routers": routers or {},
    })


async def test_mot_answers_through_the_pipeline_and_records_its_trace(trained, tmp_path: Path) -> None:
    ckpt, dirs = trained
    async with await Runtime.create(_config(tmp_path, dirs, {"mot": {"checkpoint": str(ckpt)}})) as rt:
        result = await rt.answer(Query(text="what is the capital of france?", max_tokens=5), "mot")
        trace = await rt.store.get_trace(result.trace_id)
    assert result.final.method == "mot"
    plan = result.plan
    assert plan is not None and set(plan.detail["active"]) == {"tiny-a", "tiny-b"}
    assert plan.detail["primary"] == plan.detail["active"][0]
    assert set(plan.detail["scores"]) == {"tiny-a", "tiny-b"}
    [call] = result.calls
    assert call.expert == plan.detail["primary"] and 1 <= call.completion_tokens <= 5 and call.latency_s > 0
    assert trace is not None and [s.kind for s in trace.steps] == ["route", "generate"]
    assert trace.plan.detail["primary"] == plan.detail["primary"]
    assert trace.calls[0].completion_tokens == call.completion_tokens


async def test_mot_shares_the_local_backends_weights(trained, tmp_path: Path) -> None:
    """One copy of each expert in memory: MoT runs on the registry's local backend models."""
    ckpt, dirs = trained
    async with await Runtime.create(_config(tmp_path, dirs, {"mot": {"checkpoint": str(ckpt)}})) as rt:
        await rt.answer(Query(text="which enzyme unwinds dna?", max_tokens=3), "mot")
        router = await rt.router("mot")
        loaded = router._loaded
        for name, expert in zip(["tiny-a", "tiny-b"], loaded.experts, strict=True):
            assert expert.model is rt.registry.backend(name).model
        # the backend still generates on its own afterwards (MoT's hooks are gone)
        [res] = await rt.registry.backend("tiny-a").generate([Query(text="hi", max_tokens=2).expert_request(max_tokens=2)])
        assert res.error is None and res.completion_tokens >= 1


async def test_mot_loads_the_store_artefact_and_says_when_there_is_none(trained, tmp_path: Path) -> None:
    ckpt, dirs = trained
    async with await Runtime.create(_config(tmp_path, dirs)) as rt:
        with pytest.raises(RoutingError, match="no trained checkpoint.*orchestrator train mot"):
            await rt.answer(Query(text="hello there"), "mot")
    async with await Runtime.create(_config(tmp_path, dirs)) as rt:
        await rt.store.save_artefact("mot", "default", (ckpt / "mot.pt").read_bytes())
        result = await rt.answer(Query(text="which enzyme unwinds dna?", max_tokens=3), "mot")
    assert "store artefact mot/default v1" in result.plan.detail["checkpoint"]
    assert result.calls[0].completion_tokens >= 1


def test_cli_ask_with_mot(trained, tmp_path: Path) -> None:
    ckpt, dirs = trained
    cfg = _config(tmp_path, dirs, {"mot": {"checkpoint": str(ckpt)}}).model_dump(mode="json")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["ask", "what is the capital of france?", "--router", "mot", "--config", str(path), "--max-tokens", "4", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["router"] == "mot" and out["plan_detail"]["primary"] in {"tiny-a", "tiny-b"}
    cfg["routers"] = {"mot": {"checkpoint": str(tmp_path / "nowhere")}}
    path.write_text(yaml.safe_dump(cfg))
    res = runner.invoke(app, ["ask", "hi", "--router", "mot", "--config", str(path)])
    assert res.exit_code == EXIT_UNDECIDED and "checkpoint" in res.output and "Traceback" not in res.output


def test_bad_checkpoint_bytes_are_a_clear_error(trained, tmp_path: Path) -> None:
    from experts.errors import ConfigError
    from routers.mot.checkpoint import load_checkpoint

    with pytest.raises(ConfigError, match="not a MoT checkpoint"):
        load_checkpoint(b"not a checkpoint")
    assert checkpoint_bytes(tiny_fusion(tiny_experts()))[:2] == b"PK"  # a torch zip archive


def test_gateway_serves_mot(trained, tmp_path: Path) -> None:
    import httpx

    from gateway_fixtures import running_gateway

    ckpt, dirs = trained
    with running_gateway(_config(tmp_path, dirs, {"mot": {"checkpoint": str(ckpt)}})) as url:
        r = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "mot", "max_tokens": 4, "messages": [{"role": "user", "content": "which enzyme unwinds dna?"}]})
        assert r.status_code == 200, r.text
        assert r.headers["x-orchestrator-router"] == "mot"
        trace = httpx.get(f"{url}/v1/traces/{r.headers['x-orchestrator-trace-id']}", timeout=30).json()
    assert r.json()["choices"][0]["message"]["content"] is not None
    assert json.dumps(trace).count("primary") >= 1


def test_cli_train_mot_builds_the_cache_trains_and_writes_the_checkpoint(trained, tmp_path: Path) -> None:
    _, dirs = trained
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["train", "mot", "--experts", ",".join(dirs), "--out", str(out), "--cache-dir", str(cache),
            "--train-limit", "10", "--dev-fraction", "0.2", "--epochs", "2", "--batch-size", "4", "--d-shared", "16"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["epochs"] == 2 and summary["train_examples"] == 8 and summary["dev_examples"] == 2
    from routers.mot.checkpoint import load_checkpoint

    fusion, meta = load_checkpoint(out)
    assert fusion.cfg.experts == dirs and fusion.cfg.d_shared == 16 and meta["n_options"] == 4
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 2 and (out / "metrics.json").is_file()
    assert len(list(cache.glob("*/part-*.pt"))) >= 3  # two experts and the query embeddings, on disk
    res = CliRunner().invoke(app, args)  # the second run reads the cache
    assert res.exit_code == 0 and "0 of 10 examples to run" in res.output
