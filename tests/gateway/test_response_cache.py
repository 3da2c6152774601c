"""The opt-in response caches (issue #25): exact per API key, TTL and size bound, a hit visible in
its trace and in /metrics; the semantic cache per router and per key. Real gateway (uvicorn on
loopback), real recorded experts, real MiniLM embeddings."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from conftest import POOL3, mmlu_questions
from gateway_fixtures import make_keys, recorded_config, running_gateway

EXPERT = POOL3[0]


def _config(tmp_path: Path, cache: dict):  # type: ignore[no-untyped-def]
    cfg = recorded_config(tmp_path)
    from experts.spec import CacheConfig

    return cfg.model_copy(update={"cache": CacheConfig.model_validate(cache)})


def _ask(url: str, key: str, q, model: str = EXPERT, **extra) -> httpx.Response:  # type: ignore[no-untyped-def]
    body = {"model": model, "messages": [{"role": "user", "content": q.text}],
            "metadata": {"question_id": q.question_id, "choices": list(q.choices or ())}, **extra}
    r = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r


def _trace(url: str, key: str, trace_id: str) -> dict:
    r = httpx.get(f"{url}/v1/traces/{trace_id}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()


def _metric(url: str, admin: str, kind: str, result: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    line = f'orchestrator_response_cache_total{{kind="{kind}",result="{result}"}}'
    return next((float(s.split()[-1]) for s in text.splitlines() if s.startswith(line)), 0.0)


def test_exact_cache_serves_the_same_key_only_within_its_ttl_and_size(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"exact": {"enabled": True, "ttl_s": 1.5, "max_entries": 2}})
    alice, bob = make_keys(cfg.store, ["alice", "bob"])
    (admin,) = make_keys(cfg.store, ["ops"], role="admin")
    q1, q2, q3 = mmlu_questions(3)
    with running_gateway(cfg) as url:
        first = _ask(url, alice, q1)
        assert "x-orchestrator-cache" not in first.headers
        again = _ask(url, alice, q1)
        assert again.headers["x-orchestrator-cache"] == "exact"
        a, b = first.json(), again.json()
        assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]
        assert b["experts"] == a["experts"] == [EXPERT] and b["trace_id"] != a["trace_id"]
        trace = _trace(url, alice, b["trace_id"])  # the hit is a trace of its own: no expert call, one cache step
        assert trace["calls"] == []
        assert [s["kind"] for s in trace["steps"]] == ["cache"]
        assert trace["steps"][0]["detail"]["cache"] == "exact" and trace["steps"][0]["detail"]["source_trace_id"] == a["trace_id"]

        # ATTACK: key B asks exactly what key A asked: B's own answer, from the expert, never A's cached one
        theirs = _ask(url, bob, q1)
        assert "x-orchestrator-cache" not in theirs.headers
        assert _trace(url, bob, theirs.json()["trace_id"])["calls"], "bob's answer must come from an expert call"
        assert _ask(url, bob, q1).headers.get("x-orchestrator-cache") == "exact"  # bob's own entry

        # sampled requests are neither served nor kept
        assert "x-orchestrator-cache" not in _ask(url, alice, q1, temperature=0.7).headers
        assert "x-orchestrator-cache" not in _ask(url, alice, q1, max_tokens=17).headers  # another request

        # size bound: two more entries (max_entries=2) push q1 out
        _ask(url, alice, q2)
        _ask(url, alice, q3)
        assert "x-orchestrator-cache" not in _ask(url, alice, q1).headers
        # age bound: past ttl_s an entry is asked of the expert again
        assert _ask(url, alice, q1).headers.get("x-orchestrator-cache") == "exact"
        time.sleep(1.7)
        assert "x-orchestrator-cache" not in _ask(url, alice, q1).headers

        assert _metric(url, admin, "exact", "hit") == 3
        assert _metric(url, admin, "exact", "miss") == 7


def test_semantic_cache_is_per_router_and_per_key(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"semantic": {"routers": {"all-vote": {"threshold": 0.97}}, "max_entries": 8}})
    alice, bob = make_keys(cfg.store, ["alice", "bob"])
    q1, q2 = mmlu_questions(2)
    with running_gateway(cfg) as url:
        first = _ask(url, alice, q1, model="all-vote")
        # the same question worded with different whitespace and case: not byte-identical, nearly the same embedding
        reworded = q1.model_copy(update={"text": "  " + q1.text.upper() + "  "})
        hit = _ask(url, alice, reworded, model="all-vote")
        assert hit.headers.get("x-orchestrator-cache") == "semantic"
        step = _trace(url, alice, hit.json()["trace_id"])["steps"][0]
        assert step["kind"] == "cache" and step["detail"]["source_trace_id"] == first.json()["trace_id"]
        assert step["detail"]["similarity"] >= 0.97
        assert hit.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
        # another question is not similar enough
        assert "x-orchestrator-cache" not in _ask(url, alice, q2, model="all-vote").headers
        # ATTACK: key B, same router, the very same question: never A's answer
        theirs = _ask(url, bob, q1, model="all-vote")
        assert "x-orchestrator-cache" not in theirs.headers
        assert len(_trace(url, bob, theirs.json()["trace_id"])["calls"]) == len(POOL3)
        # a router without a semantic cache configured is not served from it
        assert "x-orchestrator-cache" not in _ask(url, alice, q1).headers
