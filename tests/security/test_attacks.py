"""Issue 15's attacks, each against a real `orchestrator serve` on loopback, with listeners that
record whatever reaches them. Every attack is refused with the status OpenAI would use and the
listener of the attacker sees nothing.

Two loopback addresses play the parts: 127.0.0.1 is the attacker's listener (never allowed),
127.0.0.2 the operator's upstream (the gateway's `ORCHESTRATOR_API_EXPERT_HOSTS`). Each test's
docstring says what the same request did before.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from conftest import POOL3, mmlu_questions
from lossy_proxy import LossyProxy
from orchestrator.client import APIConnectionError, AsyncOrchestratorClient
from recording_upstream import RecordingUpstream
from served import SERVER_SECRET, Served

FLEET_SECRET = "fleet-upstream-key-93b7"
UPSTREAM_DETAIL = "pg://svc:internal-pw@10.9.8.7/prod failed at /srv/vllm/engine.py"
MAX_BODY = 65_536
MAX_FILE, MAX_FILES_PER_KEY, MAX_FILE_STORAGE = 262_144, 3, 400_000


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One fail-closed gateway, its listeners and its keys: an admin key made with the CLI
    (`keys create ops --admin`) and user keys."""
    tmp = tmp_path_factory.mktemp("attacks")
    with RecordingUpstream("127.0.0.1") as listener, RecordingUpstream("127.0.0.2") as upstream:
        served = Served(tmp, env={
            "ORCHESTRATOR_REQUIRE_API_KEY": "true", "ORCHESTRATOR_API_EXPERT_HOSTS": "127.0.0.2",
            "ORCHESTRATOR_MAX_BODY_BYTES": str(MAX_BODY), "FLEET_API_KEY": FLEET_SECRET,
            "ORCHESTRATOR_MAX_FILE_BYTES": str(MAX_FILE), "ORCHESTRATOR_MAX_FILES_PER_KEY": str(MAX_FILES_PER_KEY),
            "ORCHESTRATOR_MAX_FILE_STORAGE_BYTES": str(MAX_FILE_STORAGE),
        }, config={"secrets": {"fleet": "FLEET_API_KEY"}})
        admin_id, admin = served.create_key("ops", admin=True)
        (alice_id, alice), (bob_id, bob), (carol_id, carol), (dave_id, dave), (erin_id, erin), (frank_id, frank), (grace_id, grace) = \
            served.make_keys(["alice", "bob", "carol", "dave", "erin", "frank", "grace"])
        with served:
            yield SimpleNamespace(
                url=served.url, served=served, listener=listener, upstream=upstream,
                admin=served.auth(admin), alice=served.auth(alice), bob=served.auth(bob), carol=served.auth(carol),
                dave=served.auth(dave), erin=served.auth(erin), frank=served.auth(frank), grace=served.auth(grace),
                alice_key=alice, ids={"alice": alice_id, "bob": bob_id, "carol": carol_id, "dave": dave_id},
            )


def status(r: httpx.Response, code: int, param: str | None = None) -> dict:
    """The OpenAI error envelope of `r`, which must have status `code` (and name `param`)."""
    assert r.status_code == code, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    if param is not None:
        assert err["param"] == param, err
    return err


def question(i: int = 0):  # type: ignore[no-untyped-def]
    return mmlu_questions(1, offset=i)[0]


def ask(q, model: str = POOL3[0], **meta: object) -> dict:  # type: ignore[no-untyped-def]
    return {"model": model, "messages": [{"role": "user", "content": q.text}], "metadata": {"question_id": q.question_id, **meta}}


# ---------------------------------------------------------------- the expert registry
def test_registry_changes_and_server_state_need_an_admin_key(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: any key (or none) could register, delete and list experts (201/200)."""
    steal = {"name": "evil", "backend": "openai", "model": "x", "base_url": gw.listener.base_url}
    status(httpx.post(f"{gw.url}/v1/experts", json=steal), 401)
    status(httpx.post(f"{gw.url}/v1/experts", json=steal, headers=gw.bob), 403)
    status(httpx.delete(f"{gw.url}/v1/experts/{POOL3[2]}", headers=gw.bob), 403)
    for path in ("/v1/experts", "/metrics", "/v1/keys"):
        status(httpx.get(f"{gw.url}{path}", headers=gw.bob), 403)
    # /ready answers probes without a key, but only admins learn why and which experts
    assert httpx.get(f"{gw.url}/ready").json() == {"status": "ready", "problems": [], "experts": {}}
    assert httpx.get(f"{gw.url}/ready", headers=gw.admin).json()["experts"] == {m: True for m in POOL3}
    assert [e["name"] for e in httpx.get(f"{gw.url}/v1/experts", headers=gw.admin).json()["data"]] == POOL3
    assert gw.listener.hits == []


def test_api_experts_cannot_point_at_callers_or_read_server_secrets(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: 201, and the next health probe sent the server's SERVER_SECRET as a Bearer token
    to the caller's listener (GET /health and /v1/models)."""
    port = gw.listener.port
    for url in (gw.listener.base_url, f"http://localhost:{port}/v1", f"http://127.1:{port}/v1", f"http://2130706433:{port}/v1",
                f"http://[::ffff:127.0.0.1]:{port}/v1", f"http://127.0.0.2.nip.io:{port}/v1"):
        status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin, json={"name": "evil", "model": "x", "base_url": url}),
               400, "base_url")
    # credentials: never an environment variable the caller picks, never inside the URL
    allowed = gw.upstream.base_url
    status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                      json={"name": "evil", "model": "x", "base_url": allowed, "api_key_env": "SERVER_SECRET"}), 400, "api_key_env")
    status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                      json={"name": "evil", "model": "x", "base_url": allowed.replace("http://", "http://u:p@")}), 400, "base_url")
    status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                      json={"name": "evil", "model": "x", "base_url": allowed, "api_key_secret": "SERVER_SECRET"}), 400, "api_key_secret")
    httpx.get(f"{gw.url}/v1/experts", headers=gw.admin)  # a health probe of every registered expert
    assert gw.listener.hits == [] and gw.upstream.hits == []

    # What is allowed: an allow-listed host, its key named by a secret the operator mapped.
    r = httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                   json={"name": "fleet-a", "model": "recording", "base_url": allowed, "api_key_secret": "fleet"})
    assert r.status_code == 201, r.text
    probed = {e["name"]: e["healthy"] for e in httpx.get(f"{gw.url}/v1/experts", headers=gw.admin, timeout=30).json()["data"]}
    assert probed["fleet-a"] is True
    chat = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json={"model": "fleet-a", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == gw.upstream.answer
    sent = {h.headers.get("authorization") for h in gw.upstream.hits}
    assert sent == {f"Bearer {FLEET_SECRET}"}
    assert all(SERVER_SECRET not in (h.headers.get("authorization") or "") for h in gw.upstream.hits + gw.listener.hits)
    assert gw.listener.hits == []
    assert httpx.delete(f"{gw.url}/v1/experts/fleet-a", headers=gw.admin).status_code == 200


def test_config_experts_cannot_be_deleted_or_shadowed(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: DELETE 200, then POST of the same name at the caller's URL 201, and another key's
    confidential prompt arrived at the caller's listener."""
    target = POOL3[2]
    status(httpx.delete(f"{gw.url}/v1/experts/{target}", headers=gw.admin), 403, "name")
    status(httpx.delete(f"{gw.url}/v1/experts/{target.lower()}", headers=gw.admin), 403, "name")
    for body in ({"name": target}, {"name": target.upper()}, {"name": "decoy", "aliases": [target.lower()]}):
        status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                          json={"model": "x", "base_url": gw.upstream.base_url, **body}), 403)
    status(httpx.delete(f"{gw.url}/v1/experts/no-such-expert", headers=gw.admin), 404, "name")
    q = question()
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q, target))
    assert r.status_code == 200 and r.headers["x-orchestrator-experts"] == target  # the config's recorded expert answered
    assert gw.listener.hits == []


def test_local_and_recorded_experts_cannot_be_registered_over_the_api(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: 201 for both; the health detail then told /tmp ("weights /tmp (not loaded)") from a
    missing directory ("not a directory"), and a recorded `path` read any directory."""
    bodies = []
    for model in ("/tmp", "/no/such/dir"):
        err = status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin, json={"name": "probe", "backend": "local", "model": model}), 400, "backend")
        bodies.append(err)
    assert bodies[0] == bodies[1]  # the same answer whatever exists on the server's disk
    status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                      json={"name": "probe", "backend": "recorded", "model": "m", "path": "/etc"}), 400, "backend")
    status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin,
                      json={"name": "probe", "model": "m", "base_url": gw.upstream.base_url, "path": "/etc"}), 400, "path")
    assert [e["name"] for e in httpx.get(f"{gw.url}/v1/experts", headers=gw.admin).json()["data"]] == POOL3


def test_oversized_registration_is_413(gw) -> None:  # type: ignore[no-untyped-def]
    body = {"name": "big", "model": "x", "base_url": gw.upstream.base_url, "description": "x" * (MAX_BODY + 1)}
    status(httpx.post(f"{gw.url}/v1/experts", headers=gw.admin, json=body), 413)


# ---------------------------------------------------------------- authentication fails closed
def test_every_request_needs_a_valid_key_and_data_stays_with_its_owner(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: with no active key left, an anonymous caller read every trace and batch (200)."""
    q = question(1)
    r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q))
    assert r.status_code == 200
    trace_id = r.json()["trace_id"]
    b = httpx.post(f"{gw.url}/v1/batches", headers=gw.alice, json={"requests": [{"body": ask(q)}]}).json()
    for path in ("/v1/models", f"/v1/traces/{trace_id}", "/v1/batches", f"/v1/batches/{b['id']}"):
        status(httpx.get(f"{gw.url}{path}"), 401)
        status(httpx.get(f"{gw.url}{path}", headers={"Authorization": "Bearer sk-orch-" + "x" * 43}), 401)
    status(httpx.get(f"{gw.url}/v1/traces/{trace_id}", headers=gw.bob), 404)
    status(httpx.get(f"{gw.url}/v1/batches/{b['id']}", headers=gw.bob), 404)
    assert httpx.get(f"{gw.url}/v1/batches", headers=gw.bob).json()["data"] == []
    assert httpx.get(f"{gw.url}/v1/traces/{trace_id}", headers=gw.alice).status_code == 200
    assert httpx.get(f"{gw.url}/health").status_code == 200  # liveness needs no key and says nothing


def test_revocation_is_immediate_here_and_bounded_elsewhere(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: a revoked key kept working for up to 60 s (the key cache)."""
    assert httpx.get(f"{gw.url}/v1/models", headers=gw.dave).status_code == 200  # cached now
    r = httpx.delete(f"{gw.url}/v1/keys/{gw.ids['dave']}", headers=gw.admin)
    assert r.status_code == 200 and r.json()["revoked"] is True
    status(httpx.get(f"{gw.url}/v1/models", headers=gw.dave), 401)  # on the replica that revoked: at once

    assert httpx.get(f"{gw.url}/v1/models", headers=gw.carol).status_code == 200  # cached now
    run = gw.served.cli("keys", "revoke", gw.ids["carol"])  # another process: the bound is key_cache_s (5 s)
    assert run.returncode == 0, run.stderr
    t0 = time.monotonic()
    while httpx.get(f"{gw.url}/v1/models", headers=gw.carol).status_code == 200:
        assert time.monotonic() - t0 < 5.0 + 1.0, "a revoked key still works after key_cache_s"
        time.sleep(0.1)
    status(httpx.get(f"{gw.url}/v1/models", headers=gw.carol), 401)


def test_fail_closed_when_every_key_is_revoked_on_a_loopback_gateway(tmp_path: Path) -> None:
    """Before: keys were required only while the store held an active key; revoking the last one
    opened the gateway and an anonymous caller read every trace (200)."""
    served = Served(tmp_path)  # loopback, ORCHESTRATOR_REQUIRE_API_KEY unset: the auto default
    (only_id, only), = served.make_keys(["only"])
    with served:
        tid = httpx.post(f"{served.url}/v1/chat/completions", headers=served.auth(only), json=ask(question())).json()["trace_id"]
        assert served.cli("keys", "revoke", only_id).returncode == 0
        time.sleep(5.5)  # past the open-gateway recheck and the key cache
        status(httpx.get(f"{served.url}/v1/traces/{tid}"), 401)
        status(httpx.get(f"{served.url}/v1/models", headers=served.auth(only)), 401)
    served.stop()
    # A gateway that never had a key, on loopback, stays open as before (the operator's own).
    fresh = Served(tmp_path / "fresh")
    with fresh:
        assert httpx.get(f"{fresh.url}/v1/models").status_code == 200
        assert "API keys needed once one exists" in fresh.output()


def test_non_loopback_bind_requires_keys_by_default(tmp_path: Path) -> None:
    """Before: `serve --host 0.0.0.0` (compose ships REQUIRE_API_KEY=false on 0.0.0.0) answered
    anonymous callers from the network while the store held no key."""
    served = Served(tmp_path, host="0.0.0.0")
    with served:
        status(httpx.get(f"{served.url}/v1/models"), 401)
        assert "every request needs an API key" in served.output()


# ---------------------------------------------------------------- bounded cost of authentication
def test_unknown_tokens_are_rate_limited_per_address_before_any_lookup(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: 300 junk tokens were 300 401s (each a store query and a cache entry; 5,000 cost 58 s
    of server time and 13 MB that never came back)."""
    attacker = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"))  # another client address
    t0 = time.monotonic()
    codes = [attacker.get(f"{gw.url}/v1/models", headers={"Authorization": f"Bearer sk-orch-{i:043d}"}).status_code for i in range(40)]
    refilled = (time.monotonic() - t0) * 30 / 60  # auth_failures_per_minute = 30
    # a burst of 10 (auth_failures_burst) is looked up and refused; the rest are refused unread
    assert codes[:10] == [401] * 10 and codes[10] == 429 and set(codes) == {401, 429}, codes
    assert codes.count(401) <= 10 + refilled + 1, codes
    r = attacker.get(f"{gw.url}/v1/models", headers={"Authorization": "Bearer junk"})
    status(r, 429)
    assert int(r.headers["retry-after"]) >= 1
    # the attacker's address is throttled, not the gateway: other addresses and keys are served
    assert httpx.get(f"{gw.url}/v1/models", headers=gw.bob).status_code == 200
    attacker.close()


# ---------------------------------------------------------------- leaks
def test_serve_never_prints_the_store_password(tmp_path: Path) -> None:
    """Before: `serving on ... (store postgresql+asyncpg://orch:PASSWORD@...)` on stderr."""
    password = "hunter2-never-printed"
    served = Served(tmp_path, store=f"postgresql+asyncpg://orch:{password}@127.0.0.1:9/orch")  # nothing listens on port 9
    served.start(wait=False)
    assert served.proc is not None and served.proc.wait(timeout=120) != 0  # the store cannot be opened
    out = served.output()
    assert "serving on" in out and "orch:***@127.0.0.1:9/orch" in out
    assert password not in out


def test_upstream_error_bodies_stay_in_the_trace(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: the client got the upstream's error body (up to 500 characters) in the message."""
    r = httpx.post(f"{gw.url}/v1/experts", headers=gw.admin, json={"name": "failing", "model": "m", "base_url": gw.upstream.base_url,
                                                                   "max_retries": 0, "timeout_s": 10})
    assert r.status_code == 201, r.text
    gw.upstream.fail_with = (500, json.dumps({"error": {"message": UPSTREAM_DETAIL}}).encode())
    try:
        r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json={"model": "failing", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        gw.upstream.fail_with = None
    err = status(r, 502)
    trace_id = r.headers["x-orchestrator-trace-id"]
    assert "internal-pw" not in r.text and "10.9.8.7" not in r.text and "/srv" not in r.text
    assert "failing" in err["message"] and trace_id in err["message"]
    trace = httpx.get(f"{gw.url}/v1/traces/{trace_id}", headers=gw.alice).json()
    assert UPSTREAM_DETAIL in trace["calls"][0]["error_message"]  # the detail is in the caller's own trace
    assert UPSTREAM_DETAIL in gw.served.output()  # and in the log
    assert httpx.delete(f"{gw.url}/v1/experts/failing", headers=gw.admin).status_code == 200


def test_the_trace_writers_database_error_is_not_echoed(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: 503 "the store is unavailable (OperationalError: (sqlite3.OperationalError)
    database is locked [SQL: INSERT INTO requests ...])" (the writer's last error, verbatim)."""
    db = gw.served.store.removeprefix("sqlite+aiosqlite:///")
    lock = sqlite3.connect(db, timeout=1)
    lock.execute("BEGIN EXCLUSIVE")  # writes now fail after the store's busy timeout (10 s); reads go on (WAL)
    try:
        q = question(2)
        assert httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q), timeout=30).status_code == 200
        deadline = time.monotonic() + 40
        while True:
            r = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q), timeout=30)
            if r.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        err = status(r, 503)
        assert "traces cannot be written" in err["message"]
        assert "locked" not in r.text and "INSERT" not in r.text and "sqlite" not in r.text.lower()
    finally:
        lock.rollback()
        lock.close()
    deadline = time.monotonic() + 30  # the writer recovers by itself
    while httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(question(2))).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert "database is locked" in gw.served.output()  # the detail went to the log


# ---------------------------------------------------------------- typed inputs
def test_more_choices_than_letters_is_a_400_naming_the_field(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: 500 "internal error" (the query's 10-letter alphabet raised inside the handler)."""
    q = question(3)
    status(httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q, choices=[f"o{i}" for i in range(11)])),
           400, "metadata.choices")
    status(httpx.post(f"{gw.url}/v1/batches", headers=gw.alice, json={"requests": [{"body": ask(q, choices=["a"] * 11)}]}),
           400, "requests.0.body.metadata.choices")
    status(httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q, choices="ABC")), 400, "metadata.choices")
    ok = httpx.post(f"{gw.url}/v1/chat/completions", headers=gw.alice, json=ask(q, choices=list(q.choices or ())[:10], source="free-form extra"))
    assert ok.status_code == 200, ok.text


def test_openapi_documents_metadata_and_expert_registration(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: metadata was an untyped object and POST /v1/experts had no request body schema."""
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    body = spec["paths"]["/v1/experts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ExpertCreate"}
    meta = spec["components"]["schemas"]["RequestMetadata"]
    choices = next(s for s in meta["properties"]["choices"]["anyOf"] if s.get("type") == "array")
    assert choices["maxItems"] == 10 and meta.get("additionalProperties", True) is True
    assert "idempotency-key" in {p["name"].lower() for p in spec["paths"]["/v1/batches"]["post"]["parameters"]}


# ---------------------------------------------------------------- idempotent submits
def test_a_retried_submit_returns_the_first_job(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: the header was ignored; two submits made two jobs."""
    body = {"requests": [{"body": ask(question(4))}]}
    key = {"Idempotency-Key": "7b9f3c1e-retry-me"}
    first = httpx.post(f"{gw.url}/v1/batches", headers={**gw.bob, **key}, json=body).json()
    again = httpx.post(f"{gw.url}/v1/batches", headers={**gw.bob, **key}, json=body).json()
    assert again["id"] == first["id"]
    status(httpx.post(f"{gw.url}/v1/batches", headers={**gw.bob, **key}, json={"requests": [{"body": ask(question(5))}]}),
           400, "Idempotency-Key")
    theirs = httpx.post(f"{gw.url}/v1/batches", headers={**gw.alice, **key}, json=body).json()  # keys are per caller
    assert theirs["id"] != first["id"]
    assert [b["id"] for b in httpx.get(f"{gw.url}/v1/batches", headers=gw.bob).json()["data"]] == [first["id"]]
    status(httpx.post(f"{gw.url}/v1/batches", headers={**gw.bob, "Idempotency-Key": "bad key with spaces"}, json=body),
           400, "Idempotency-Key")


def test_the_client_retries_a_lost_submit_without_a_second_job(gw) -> None:  # type: ignore[no-untyped-def]
    """Before: the client retried every POST after a transport error: one `submit_batch` whose
    answer was lost made two jobs, and a chat whose answer was lost was asked twice."""
    port = int(gw.url.rsplit(":", 1)[1])
    q = question(6)

    async def go() -> None:
        with LossyProxy(port, drop=0) as proxy:
            async with AsyncOrchestratorClient(proxy.url, api_key=gw.alice_key, backoff_s=0.01) as c:
                before = {b.id for b in await c.batches(limit=100)}
                proxy.drop = 1
                job = await c.submit_batch([{"body": ask(q)}])  # the first answer is lost on the way back
                after = {b.id for b in await c.batches(limit=100)}
                assert after - before == {job.id}  # one job, though the gateway was asked twice
                assert [f for f in proxy.forwarded if f.startswith(b"POST /v1/batches")] == [b"POST /v1/batches HTTP/1.1"] * 2

                proxy.forwarded.clear()
                proxy.drop = 1
                with pytest.raises(APIConnectionError, match="not retried"):
                    await c.chat(POOL3[0], q.text, metadata={"question_id": q.question_id})
                assert proxy.forwarded == [b"POST /v1/chat/completions HTTP/1.1"]  # asked once, not again

    asyncio.run(go())


# ---------------------------------------------------------------- issue 20's routes under the same rules
def anonymous() -> httpx.Client:
    """A caller without a key, from an address of its own (keyless requests cost their address
    auth attempts, and 127.0.0.1 is every other test's)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"), timeout=30)


def jsonl(*bodies: dict) -> bytes:
    return b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}).encode() + b"\n"
                    for i, b in enumerate(bodies))


def upload(gw, headers: dict[str, str], content: bytes, filename: str = "requests.jsonl") -> httpx.Response:  # type: ignore[no-untyped-def]
    return httpx.post(f"{gw.url}/v1/files", headers=headers, files={"file": (filename, content, "application/jsonl")},
                      data={"purpose": "batch"}, timeout=30)


def test_files_and_their_batches_stay_with_their_key(gw) -> None:  # type: ignore[no-untyped-def]
    """The Files API (issue 20) under issue 15's rules: an uploaded file, a batch made from it and
    its result files belong to the uploading key (another key gets 404, no key 401); the filename
    is a label, never a path on the server."""
    content = jsonl(ask(question(7)))
    f = upload(gw, gw.erin, content, filename="../../../tmp/owned.jsonl")
    assert f.status_code == 200, f.text
    fid = f.json()["id"]
    assert f.json()["filename"] == "../../../tmp/owned.jsonl" and not Path("/tmp/owned.jsonl").exists()
    with anonymous() as anon:
        for method, path in [("GET", f"/v1/files/{fid}"), ("GET", f"/v1/files/{fid}/content"), ("DELETE", f"/v1/files/{fid}")]:
            status(httpx.request(method, f"{gw.url}{path}", headers=gw.frank), 404, "file_id")
            status(anon.request(method, f"{gw.url}{path}"), 401)
        status(anon.get(f"{gw.url}/v1/files"), 401)
        status(anon.post(f"{gw.url}/v1/files", files={"file": ("x.jsonl", content)}, data={"purpose": "batch"}), 401)
    assert httpx.get(f"{gw.url}/v1/files", headers=gw.frank).json()["data"] == []
    create = {"input_file_id": fid, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    status(httpx.post(f"{gw.url}/v1/batches", headers=gw.frank, json=create), 404, "input_file_id")
    retried = {**gw.erin, "Idempotency-Key": "erin-file-batch-1"}
    batch = httpx.post(f"{gw.url}/v1/batches", headers=retried, json=create).json()
    assert httpx.post(f"{gw.url}/v1/batches", headers=retried, json=create).json()["id"] == batch["id"]  # a retry: the same job
    deadline = time.monotonic() + 60
    while batch["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = httpx.get(f"{gw.url}/v1/batches/{batch['id']}", headers=gw.erin).json()
    out = batch["output_file_id"]
    answered = httpx.get(f"{gw.url}/v1/files/{out}/content", headers=gw.erin)
    assert answered.status_code == 200 and json.loads(answered.text.splitlines()[0])["custom_id"] == "r0"
    for path in (f"/v1/files/{out}", f"/v1/files/{out}/content", f"/v1/batches/{batch['id']}"):
        assert httpx.get(f"{gw.url}{path}", headers=gw.frank).status_code == 404
    assert httpx.get(f"{gw.url}/v1/files/{fid}/content", headers=gw.erin).content == content


def test_uploads_are_bounded_per_file_and_per_key(gw) -> None:  # type: ignore[no-untyped-def]
    """An upload larger than ORCHESTRATOR_MAX_FILE_BYTES is a 413; a key keeps at most
    ORCHESTRATOR_MAX_FILES_PER_KEY files and ORCHESTRATOR_MAX_FILE_STORAGE_BYTES (400 beyond;
    deleting makes room), so no key can fill the store."""
    status(upload(gw, gw.grace, b"x" * (MAX_FILE + 1) + b"\n"), 413)
    big = b"x" * 250_000 + b"\n"  # one (bad) line: a file is refused whole only when it has no line at all
    first = upload(gw, gw.grace, big)
    assert first.status_code == 200, first.text
    assert status(upload(gw, gw.grace, big), 400, "file")["code"] == "storage_limit_exceeded"  # 500,002 > 400,000 bytes
    small = jsonl(ask(question(8)))
    assert [upload(gw, gw.grace, small).status_code for _ in range(2)] == [200, 200]
    assert status(upload(gw, gw.grace, small), 400, "file")["code"] == "storage_limit_exceeded"  # 3 files already
    assert httpx.delete(f"{gw.url}/v1/files/{first.json()['id']}", headers=gw.grace).status_code == 200
    assert upload(gw, gw.grace, small).status_code == 200
    assert len(httpx.get(f"{gw.url}/v1/files", headers=gw.grace).json()["data"]) == MAX_FILES_PER_KEY


def test_an_upload_is_not_read_before_its_key_is_checked(gw) -> None:  # type: ignore[no-untyped-def]
    """Without a key, a 401 comes back while the upload is still unsent: nobody without a key makes
    the gateway read (or buffer) an upload of up to ORCHESTRATOR_MAX_FILE_BYTES."""
    with socket.create_connection((gw.served.host, gw.served.port), timeout=10, source_address=("127.0.0.5", 0)) as s:
        s.sendall(b"POST /v1/files HTTP/1.1\r\nHost: gw\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  + f"Content-Length: {MAX_FILE}\r\n\r\n".encode() + b"--b\r\n")  # and nothing more
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 401"), head[:200]


def test_passthrough_needs_a_key_and_keeps_upstream_errors_in_the_log(gw) -> None:  # type: ignore[no-untyped-def]
    """`/v1/completions` and `/v1/embeddings` (issue 20) need a key like every route, and an
    upstream's failure reaches the client as its kind and an error id; its body (addresses,
    credentials) goes to the log only."""
    with anonymous() as anon:
        status(anon.post(f"{gw.url}/v1/completions", json={"model": POOL3[0], "prompt": "x"}), 401)
        status(anon.post(f"{gw.url}/v1/embeddings", json={"model": POOL3[0], "input": "x"}), 401)
    r = httpx.post(f"{gw.url}/v1/experts", headers=gw.admin, json={"name": "passthrough-up", "model": "m", "base_url": gw.upstream.base_url,
                                                                   "max_retries": 0, "timeout_s": 10})
    assert r.status_code == 201, r.text
    try:
        ok = httpx.post(f"{gw.url}/v1/completions", headers=gw.alice, json={"model": "passthrough-up", "prompt": "x", "max_tokens": 2})
        assert ok.status_code == 200 and ok.json()["model"] == "passthrough-up"
        for code, expected in ((500, 502), (400, 400)):
            gw.upstream.fail_with = (code, json.dumps({"error": {"message": UPSTREAM_DETAIL}}).encode())
            for path, body in (("/v1/completions", {"prompt": "x", "max_tokens": 2}), ("/v1/embeddings", {"input": ["x"]})):
                r = httpx.post(f"{gw.url}{path}", headers=gw.alice, json={"model": "passthrough-up", **body})
                err = status(r, expected)
                assert "internal-pw" not in r.text and "10.9.8.7" not in r.text and "/srv" not in r.text, r.text
                assert "passthrough-up" in err["message"] and "err_" in err["message"]
        assert UPSTREAM_DETAIL in gw.served.output()
    finally:
        gw.upstream.fail_with = None
        assert httpx.delete(f"{gw.url}/v1/experts/passthrough-up", headers=gw.admin).status_code == 200
