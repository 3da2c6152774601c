"""Misbehaving experts behind the real gateway: every request ends in an answer or a clear
OpenAI-shaped error within its timeout, the gateway stays healthy, the trace says what happened,
and the circuit breaker stops sending to a dead expert and probes it back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from conftest import closed_port_url
from experts import parse_config
from faulty_upstream import FaultyUpstream
from gateway_fixtures import running_gateway

TIMEOUT_S = 1.0
RETRIES = 1
# every attempt within its timeout, plus the jittered backoff (at most 0.5 s) and slack for a busy CPU
BUDGET_S = TIMEOUT_S * (RETRIES + 1) + 0.5 + 2.0


def _expert(name: str, base_url: str, **kw: object) -> dict:
    return {"name": name, "backend": "openai", "base_url": base_url, "model": "faulty",
            "timeout_s": TIMEOUT_S, "max_retries": RETRIES, "max_wait_ms": 0, **kw}


def _chat(url: str, model: str, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}], **kw})


def _assert_openai_error(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]


def test_each_fault_ends_in_a_clear_error_within_its_timeout(tmp_path: Path) -> None:
    expected = {  # expert -> (status, error kind in the trace)
        "refuses": (502, "unavailable"),
        "hangs": (504, "timeout"),
        "fails-500": (502, "server_error"),
        "malformed": (502, "bad_response"),
        "dies-mid-body": (502, "unavailable"),
    }
    with FaultyUpstream("hang") as hang, FaultyUpstream("500") as e500, FaultyUpstream("malformed") as bad, \
            FaultyUpstream("die") as die, FaultyUpstream("ok") as good:
        cfg = parse_config({
            "store": f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
            "experts": [
                _expert("refuses", closed_port_url()), _expert("hangs", hang.base_url), _expert("fails-500", e500.base_url),
                _expert("malformed", bad.base_url), _expert("dies-mid-body", die.base_url), _expert("good", good.base_url),
            ],
        })
        with running_gateway(cfg) as url:
            for name, (status, kind) in expected.items():
                t0 = time.monotonic()
                r = _chat(url, name)
                elapsed = time.monotonic() - t0
                assert r.status_code == status, (name, r.text)
                assert elapsed < BUDGET_S, (name, elapsed)
                err = _assert_openai_error(r)
                assert name in err["message"]
                trace = httpx.get(f"{url}/v1/traces/{r.headers['x-orchestrator-trace-id']}").json()
                (call,) = trace["calls"]
                assert call["expert"] == name and call["error_kind"] == kind, (name, call)
                assert call["attempts"] == RETRIES + 1, (name, call)  # it was retried
                assert trace["status"] == "error"
                assert httpx.get(f"{url}/health").status_code == 200
            assert (hang.requests, e500.requests, bad.requests, die.requests) == (2, 2, 2, 2)
            # the gateway is still healthy and answers through a good expert
            r = _chat(url, "good")
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "The answer is 4."


def test_streaming_request_gets_an_in_band_error_when_the_expert_dies(tmp_path: Path) -> None:
    """Cut after its first tokens: the stream has begun (200), so the error is in-band, then [DONE].
    Cut before them: the same HTTP error as without streaming (OpenAI's rule: errors before the
    first token are HTTP errors)."""
    with FaultyUpstream("die-mid-stream") as die:
        cfg = parse_config({"store": f"sqlite+aiosqlite:///{tmp_path / 's.db'}", "experts": [_expert("dies", die.base_url)]})
        with running_gateway(cfg) as url:
            t0 = time.monotonic()
            with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30, json={
                "model": "dies", "stream": True, "messages": [{"role": "user", "content": "hi"}],
            }) as r:
                assert r.status_code == 200
                events = [ln.removeprefix("data: ") for ln in r.iter_lines() if ln.startswith("data: ")]
                trace_id = r.headers["x-orchestrator-trace-id"]
            assert time.monotonic() - t0 < BUDGET_S
            assert events[-1] == "[DONE]"
            text = "".join((json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for e in events[:-2])
            assert text == "The answer is"  # what arrived before the cut
            err = json.loads(events[-2])["error"]
            assert err["type"] == "upstream_error" and "dies" in err["message"] and set(err) == {"message", "type", "param", "code"}
            # the kind and the trace, never the upstream's address or what its connection said (issue 15)
            assert trace_id in err["message"] and f":{die.port}" not in err["message"] and "127.0.0.1" not in err["message"]
            assert die.requests == 1  # never retried once tokens had been sent
            trace = httpx.get(f"{url}/v1/traces/{trace_id}").json()
            assert trace["status"] == "error" and trace["calls"][0]["error_kind"] == "unavailable"

            die.mode = "die"
            r = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
                "model": "dies", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 502 and "dies" in _assert_openai_error(r)["message"]
            plain = _chat(url, "dies")
            assert plain.status_code == r.status_code and _assert_openai_error(plain)["type"] == _assert_openai_error(r)["type"]


def test_circuit_breaker_stops_sending_then_probes_the_expert_back(tmp_path: Path) -> None:
    with FaultyUpstream("500") as up:
        cfg = parse_config({
            "store": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
            "experts": [_expert("flaky", up.base_url, max_retries=0, breaker_failures=3, breaker_cooldown_s=1.5)],
        })
        with running_gateway(cfg) as url:
            assert [_chat(url, "flaky").status_code for _ in range(3)] == [502, 502, 502]
            assert up.requests == 3
            # open: fails fast with 503, and nothing reaches the expert
            t0 = time.monotonic()
            r = _chat(url, "flaky")
            assert r.status_code == 503 and time.monotonic() - t0 < 0.5
            assert "circuit open" in _assert_openai_error(r)["message"] and int(r.headers["retry-after"]) >= 1
            assert up.requests == 3
            trace = httpx.get(f"{url}/v1/traces/{r.headers['x-orchestrator-trace-id']}").json()
            assert trace["calls"][0]["error_kind"] == "circuit_open" and trace["calls"][0]["attempts"] == 0
            (info,) = httpx.get(f"{url}/v1/experts").json()["data"]
            assert info["circuit"]["state"] == "open" and info["circuit"]["opens"] == 1 and info["healthy"] is False
            assert 'orchestrator_circuit_state{expert="flaky"} 2.0' in httpx.get(f"{url}/metrics").text

            # the expert recovers; after the cool-down one probe goes through and closes the circuit
            up.mode = "ok"
            time.sleep(1.6)
            r = _chat(url, "flaky")
            assert r.status_code == 200, r.text
            assert up.requests == 4
            (info,) = httpx.get(f"{url}/v1/experts").json()["data"]
            assert info["circuit"]["state"] == "closed" and info["circuit"]["consecutive_failures"] == 0
            assert 'orchestrator_circuit_state{expert="flaky"} 0.0' in httpx.get(f"{url}/metrics").text
            assert [_chat(url, "flaky").status_code for _ in range(3)] == [200, 200, 200]
