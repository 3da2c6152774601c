"""Attack: make the OTel export carry a credential. A real `orchestrator serve` that requires keys
exports to a real OTLP/HTTP receiver (tests/otlp_sink.py) with content capture ON (the most a
deployment can send), its experts call an upstream with the fleet's API key, and that upstream
echoes the key back in its error body. Every byte the exporter sent is searched: neither the
caller's gateway key, nor the upstream's key, nor the server's other secrets are in any span,
while the spans themselves (and the content the opt-in asks for) arrived.
"""

from __future__ import annotations

import json

import httpx

from conftest import POOL3, mmlu_questions
from otlp_sink import OtlpSink
from recording_upstream import RecordingUpstream
from served import SERVER_SECRET, Served, recorded_experts

FLEET_SECRET = "fleet-upstream-key-5c81e0"


def test_no_key_or_secret_reaches_the_trace_receiver(tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = mmlu_questions(1, offset=2)[0]
    with OtlpSink() as sink, RecordingUpstream() as good, RecordingUpstream() as echoing:
        # the upstream's error body quotes the credential it was sent (some providers do)
        echoing.fail_with = (401, json.dumps({"error": {"message": f"Incorrect API key provided: {FLEET_SECRET}"}}).encode())
        upstreams = [{"name": name, "backend": "openai", "model": f"{name}-model", "base_url": up.base_url, "api_key_secret": "fleet",
                      "max_retries": 0} for name, up in (("fleet-good", good), ("fleet-echo", echoing))]
        served = Served(tmp_path, env={
            "ORCHESTRATOR_REQUIRE_API_KEY": "true", "FLEET_API_KEY": FLEET_SECRET,
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        }, config={"secrets": {"fleet": "FLEET_API_KEY"}, "experts": recorded_experts() + upstreams})
        ((key_id, key),) = served.make_keys(["alice"])
        with served:
            auth = served.auth(key)
            ids = []
            for body in (
                {"model": "all-vote", "messages": [{"role": "user", "content": q.text}], "metadata": {"question_id": q.question_id}},
                {"model": "fleet-good", "messages": [{"role": "user", "content": "What is 2+2?"}], "stream": True},
                {"model": "fleet-echo", "messages": [{"role": "user", "content": "What is 2+2?"}]},
            ):
                r = httpx.post(f"{served.url}/v1/chat/completions", headers=auth, json=body, timeout=60)
                ids.append(r.headers["x-orchestrator-trace-id"])
            assert r.status_code == 502 and FLEET_SECRET not in r.text  # the echoing upstream failed the last one
            trace = httpx.get(f"{served.url}/v1/traces/{ids[2]}", headers=auth).json()
            assert FLEET_SECRET in trace["calls"][0]["error_message"]  # the attack is real: the key is in the record
            roots = sink.wait_for(lambda spans: sum(s.name.startswith("invoke_workflow") for s in spans) >= 3)
        # both upstreams were sent the fleet key: it was in play on every call
        assert all(h.headers.get("authorization") == f"Bearer {FLEET_SECRET}" for h in good.hits + echoing.hits if h.method == "POST")

    sent = b"".join(sink.bodies)
    for secret in (key, FLEET_SECRET, SERVER_SECRET):
        assert secret.encode() not in sent, f"{secret[:6]}... reached the trace receiver"
    by_trace = {s.attributes["orchestrator.trace_id"]: s for s in roots if s.name.startswith("invoke_workflow")}
    assert set(ids) <= set(by_trace)
    assert all(by_trace[i].attributes["orchestrator.key_id"] == key_id for i in ids)  # whose request: the key's id only
    assert q.text in by_trace[ids[0]].attributes["gen_ai.input.messages"]  # content capture was on
    # the vote asked every expert: the echoing upstream failed there too, the others answered
    assert sorted(by_trace[ids[0]].attributes["orchestrator.experts"]) == sorted([*POOL3, "fleet-good"])
    echo_call = next(s for s in roots if s.trace_id == by_trace[ids[2]].trace_id and s.name == "chat fleet-echo-model")
    assert echo_call.attributes["error.type"] == "rejected" and echo_call.status_code == 2
    good_call = next(s for s in roots if s.trace_id == by_trace[ids[1]].trace_id and s.name == "chat fleet-good-model")
    assert good_call.attributes["server.address"] == "127.0.0.1" and good_call.attributes["gen_ai.provider.name"] == "openai"
