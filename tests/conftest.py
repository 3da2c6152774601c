"""Shared fixtures. Data lives in ../shared beside the repository (as in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RECORDED = SHARED / "data" / "recorded" / "mmlu_pro_tiger"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests must not pick up a developer's config or store.
    for var in ("ORCHESTRATOR_CONFIG", "ORCHESTRATOR_STORE"):
        monkeypatch.delenv(var, raising=False)
    # Gateways started by a test (in-process or as subprocesses) journal their traces in a
    # directory of the test's own, never in the working directory.
    monkeypatch.setenv("ORCHESTRATOR_TRACE_JOURNAL_DIR", str(tmp_path_factory.mktemp("trace-journal")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def recorded_dir() -> Path:
    assert RECORDED.is_dir(), f"recorded data missing at {RECORDED}: the shared/ folder must sit beside the repository"
    return RECORDED


def postgres_url() -> str | None:
    return os.environ.get("POSTGRES_URL")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: SQLite in tmp, and the real Postgres started by .ci/run."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    url = postgres_url()
    if not url:
        if os.environ.get("ORCH_SKIP_POSTGRES") == "1":
            pytest.skip("ORCH_SKIP_POSTGRES=1 set explicitly")
        pytest.fail("POSTGRES_URL is not set: start Postgres with `bash .ci/postgres.sh start` (or set ORCH_SKIP_POSTGRES=1)")
    return _fresh_pg_schema(url, request.node.name)


def _fresh_pg_schema(url: str, name: str) -> str:
    """Give each test an empty database by dropping and recreating the public schema."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def reset() -> None:
        eng = create_async_engine(url)
        async with eng.begin() as conn:
            await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await eng.dispose()

    asyncio.run(reset())
    return url


POOL3 = ["Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B"]


def recorded_specs(models: list[str], **overrides: object) -> list:
    from experts import ExpertSpec

    return [
        ExpertSpec(name=m, backend="recorded", path=str(RECORDED), model=m, **overrides)  # type: ignore[arg-type]
        for m in models
    ]


@pytest.fixture
def recorded_registry():
    """A registry of three real recorded experts (replayed MMLU-Pro outputs)."""
    from experts import ExpertRegistry

    return ExpertRegistry.from_specs(recorded_specs(POOL3))


def mmlu_questions(n: int, *, offset: int = 0) -> list:
    """The first n MMLU-Pro test questions that every model of POOL3 has a recorded row for."""
    import gzip
    import json

    from routers.types import Query

    with gzip.open(RECORDED / "responses" / f"{POOL3[2]}.jsonl.gz", "rt") as f:
        have = {str(json.loads(line)["question_id"]) for line in f}
    out = []
    with open(SHARED / "data" / "mmlu_pro" / "test.jsonl") as f:
        for line in f:
            d = json.loads(line)
            if str(d["question_id"]) in have:
                out.append(
                    Query(
                        text=d["question"], choices=tuple(d["options"]), question_id=str(d["question_id"]),
                        category=d["category"], gold=d["answer"],
                    )
                )
    return out[offset : offset + n]


def closed_port_url() -> str:
    """An http://127.0.0.1 URL on which nothing listens (a real connection refusal)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


def require_vllm_url() -> str:
    """The real vLLM server's URL; a missing server fails the test unless skipped on purpose."""
    url = os.environ.get("VLLM_BASE_URL")
    if not url:
        if os.environ.get("ORCH_SKIP_VLLM") == "1":
            pytest.skip("ORCH_SKIP_VLLM=1 set explicitly")
        pytest.fail("VLLM_BASE_URL is not set: start the server with `bash .ci/vllm.sh start` (or set ORCH_SKIP_VLLM=1)")
    return url


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real policy for fast Router-R1 training tests: a randomly initialised two-layer
    Llama (SmolLM2's architecture, narrower) with SmolLM2-135M-Instruct's real tokenizer and
    chat template, saved as a model directory once per session."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from experts.packaged_models import resolve_model_dir

    tok = AutoTokenizer.from_pretrained(str(resolve_model_dir("smollm2-135m-instruct")))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-policy")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
