"""Property-based fuzzing of the REST API from its own OpenAPI schema (Schemathesis).

Valid and invalid requests for every documented operation: the gateway never answers 500,
never hangs, and every error body is OpenAI-shaped. Bounded by ORCH_FUZZ_EXAMPLES (default 300)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from gateway_fixtures import recorded_config, running_gateway

EXAMPLES = int(os.environ.get("ORCH_FUZZ_EXAMPLES", "300"))
UPSTREAM_STATUSES = {502, 503, 504}  # legitimate: recorded experts cannot answer free text


def test_fuzz_rest_api_from_openapi_schema(tmp_path: Path) -> None:
    with running_gateway(recorded_config(tmp_path)) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = {f"{r.ok().method.upper()} {r.ok().path}" for r in schema.get_all_operations()}
        assert {"POST /v1/chat/completions", "GET /v1/models", "GET /v1/traces/{trace_id}"} <= operations
        strategy = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
        statuses: Counter[int] = Counter()

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=os.environ.get("ORCH_FUZZ_RANDOM") != "1",
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case) -> None:  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            resp = case.call(base_url=url, timeout=15)
            elapsed = time.monotonic() - t0
            what = f"{case.method} {case.formatted_path} body={str(case.body)[:200]!r} -> {resp.status_code} {resp.text[:300]}"
            statuses[resp.status_code] += 1
            assert elapsed < 10, f"slow ({elapsed:.1f} s): {what}"
            assert resp.status_code != 500 and resp.status_code < 600, what
            assert resp.status_code < 500 or resp.status_code in UPSTREAM_STATUSES, what
            if resp.status_code >= 400:
                body = resp.json()
                assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, what
                assert isinstance(body["error"]["message"], str) and body["error"]["message"], what

        check()
        # the fuzzer reached past validation as well as into it
        assert any(s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses), statuses
