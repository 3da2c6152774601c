"""Property-based fuzzing of the REST API from its own OpenAPI schema (Schemathesis).

Valid and invalid requests for every documented operation (expert registration, typed metadata
and key management included): the gateway never answers 5xx, never hangs, and every error body
is OpenAI-shaped. Twice: on an open loopback gateway (the anonymous operator may do everything
but manage keys) and on a fail-closed one with an admin key and an expert allow-list, so the
fuzzer gets past authentication into every admin route. Its one expert is a real upstream that
answers every chat, so no 5xx is legitimate. Bounded by ORCH_FUZZ_EXAMPLES (default 300) per run."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from experts import parse_config
from gateway_fixtures import make_keys, running_gateway
from orchestrator.settings import GatewaySettings
from recording_upstream import RecordingUpstream

EXAMPLES = int(os.environ.get("ORCH_FUZZ_EXAMPLES", "300"))


@pytest.mark.parametrize("mode", ["open", "admin-key"])
def test_fuzz_rest_api_from_openapi_schema(tmp_path: Path, mode: str) -> None:
    with RecordingUpstream() as upstream:
        cfg = parse_config({"store": f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}", "experts": [
            {"name": "echo", "backend": "openai", "base_url": upstream.base_url, "model": "recording", "max_wait_ms": 0}]})
        headers = {}
        gateway = GatewaySettings()
        if mode == "admin-key":
            (key,) = make_keys(cfg.store, ["fuzzer"], role="admin")
            headers = {"Authorization": f"Bearer {key}"}
            # experts the fuzzer registers point at 127.0.0.2, where nothing listens
            gateway = GatewaySettings(require_api_key=True, api_expert_hosts=["127.0.0.2"])
        with running_gateway(cfg, gateway) as url:
            schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
            operations = {f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()}
            assert {"POST /v1/chat/completions", "GET /v1/models", "GET /v1/traces/{trace_id}", "POST /v1/experts",
                    "DELETE /v1/experts/{name}", "POST /v1/batches", "POST /v1/keys",
                    # issue 20's routes: the Files API (multipart upload included) and the passthrough
                    "POST /v1/files", "GET /v1/files/{file_id}/content", "DELETE /v1/files/{file_id}",
                    "POST /v1/completions", "POST /v1/embeddings"} <= operations
            strategy = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
            statuses: Counter[int] = Counter()
            reached: Counter[str] = Counter()

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=os.environ.get("ORCH_FUZZ_RANDOM") != "1",
                      suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def check(case) -> None:  # type: ignore[no-untyped-def]
                t0 = time.monotonic()
                resp = case.call(base_url=url, headers=headers, timeout=15)
                elapsed = time.monotonic() - t0
                what = f"{case.method} {case.formatted_path} body={str(case.body)[:200]!r} -> {resp.status_code} {resp.text[:300]}"
                statuses[resp.status_code] += 1
                if resp.status_code < 300:
                    reached[f"{case.method} {case.path}"] += 1
                assert elapsed < 10, f"slow ({elapsed:.1f} s): {what}"
                assert resp.status_code < 500, what
                if resp.status_code >= 400:
                    body = resp.json()
                    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, what
                    assert isinstance(body["error"]["message"], str) and body["error"]["message"], what

            check()
            # the fuzzer reached past validation as well as into it
            assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses
            if mode == "admin-key":
                assert reached["GET /v1/experts"] and reached["GET /v1/keys"], reached
