"""The security rules one at a time, in process, on real stores: URL masking, the host allow-list,
settings, the authenticator's fail-closed rule and bounded cost, idempotency claims, migrations
and the secrets mapping of the config file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from experts.errors import ConfigError
from experts.spec import ExpertSpec, parse_config, resolve_api_key
from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import OPEN_MODE_CALLER, Authenticator, Caller, RateLimiter, new_api_key
from orchestrator.hosts import HostAllowList, is_loopback_host
from orchestrator.settings import GatewaySettings
from store import Store
from store.db import create_engine
from store.urls import has_credentials, mask_text, mask_url


# ---------------------------------------------------------------- masking
@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql+asyncpg://orch:hunter2@db:5432/orch", "postgresql+asyncpg://orch:***@db:5432/orch"),
    ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
    ("https://ghp_token@host/v1", "https://***@host/v1"),
    ("http://host/v1?api_key=abc&model=x&access_token=t", "http://host/v1?api_key=***&model=x&access_token=***"),
    ("sqlite+aiosqlite:////tmp/gw.db", "sqlite+aiosqlite:////tmp/gw.db"),  # unchanged, slashes and all
    ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
    ("http://host:notaport/", "***"),  # unparseable: masked whole
])
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert has_credentials(url) == (masked != url)


def test_mask_text_hides_the_password_wherever_it_appears() -> None:
    url = "postgresql://u:s3cr%40t@h/db"
    text = f"cannot connect to {url}: password 's3cr@t' rejected (s3cr%40t)"
    out = mask_text(text, url)
    assert "s3cr" not in out and "postgresql://u:***@h/db" in out


# ---------------------------------------------------------------- the allow-list
def test_host_allow_list_matches_names_and_networks_without_resolving() -> None:
    allowed = HostAllowList.parse(["10.0.0.0/8", "VLLM.internal.", "*.gpu.example.com", "fd00::/8", "192.168.1.7"])
    yes = ["http://10.1.2.3:8000/v1", "https://vllm.internal/v1", "http://a.b.gpu.example.com/v1", "http://[fd00::1]:80/v1",
           "http://[::ffff:10.0.0.1]/v1", "http://192.168.1.7:9/v1"]
    no = ["http://169.254.169.254/latest", "http://gpu.example.com/v1", "http://evil-gpu.example.com/v1",
          "http://vllm.internal.evil.com/v1", "http://127.0.0.1/v1", "http://localhost/v1", "http://2130706433/v1",
          "http://0x7f.1/v1", "http://10.0.0.1.nip.io/v1", "http://192.168.1.8/v1", "not a url", "http:///v1"]
    assert [u for u in yes if not allowed.allows(u)] == []
    assert [u for u in no if allowed.allows(u)] == []
    assert not HostAllowList.parse([]) and HostAllowList.parse(["a.example"])
    with pytest.raises(ValueError, match="bad host!"):
        HostAllowList.parse(["bad host!"])


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
                                                ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
                                                ("myhost", False)])
def test_which_binds_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
    assert GatewaySettings().for_bind(host).require_api_key is (not loopback)  # unset: keys required off loopback
    assert GatewaySettings(require_api_key=False).for_bind(host).require_api_key is False  # an explicit choice stands


def test_allow_list_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_API_EXPERT_HOSTS", " 10.0.0.0/8, vllm.internal ,")
    assert GatewaySettings().api_expert_hosts == ["10.0.0.0/8", "vllm.internal"]
    monkeypatch.setenv("ORCHESTRATOR_API_EXPERT_HOSTS", '["10.0.0.0/8"]')
    assert GatewaySettings().expert_hosts().allows("http://10.2.3.4/v1")
    monkeypatch.setenv("ORCHESTRATOR_API_EXPERT_HOSTS", "")
    assert not GatewaySettings().expert_hosts()
    monkeypatch.setenv("ORCHESTRATOR_API_EXPERT_HOSTS", "10.0.0.0/8,http://evil/")
    with pytest.raises(ValidationError, match="http://evil/"):
        GatewaySettings()


# ---------------------------------------------------------------- the authenticator
class CountingStore(Store):
    """A real SQLite store that counts the key lookups it serves."""

    lookups = 0

    async def find_api_key(self, key_hash: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        return await super().find_api_key(key_hash)


async def _store(tmp_path: Path) -> CountingStore:
    store = CountingStore(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"))
    from store.db import migrate

    await migrate(store.engine)
    return store


async def _key(store: Store, name: str, role: str = "user") -> tuple[str, str]:
    key_id, key, digest = new_api_key()
    await store.create_api_key(key_id, name, digest, role=role)
    return key_id, f"Bearer {key}"


async def test_an_open_gateway_closes_for_good_once_a_key_exists(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        auth = Authenticator(store, GatewaySettings())
        assert await auth.caller("") == OPEN_MODE_CALLER and OPEN_MODE_CALLER.is_admin  # never had a key: open
        key_id, bearer = await _key(store, "only")
        auth._open_until = 0.0  # skip the 5 s recheck
        with pytest.raises(E.Unauthorized):
            await auth.caller("")
        await store.revoke_api_key(key_id)
        fresh = Authenticator(store, GatewaySettings())  # a replica started after every key was revoked
        with pytest.raises(E.Unauthorized):
            await fresh.caller("")
        with pytest.raises(E.Unauthorized):
            await fresh.caller(bearer)
    finally:
        await store.aclose()
    empty = await _store(tmp_path / "empty")
    try:  # required: whatever the store holds, even nothing
        with pytest.raises(E.Unauthorized):
            await Authenticator(empty, GatewaySettings(require_api_key=True)).caller("")
    finally:
        await empty.aclose()


async def test_a_store_that_cannot_answer_is_a_503_never_an_open_gateway() -> None:
    down = Store(create_engine("postgresql+asyncpg://orch:pw@127.0.0.1:9/orch"))  # nothing listens on port 9
    try:
        with pytest.raises(E.ServiceUnavailable):
            await Authenticator(down, GatewaySettings()).caller("")
    finally:
        await down.aclose()


async def test_junk_tokens_cost_a_bounded_number_of_lookups_and_no_memory(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        alice_id, valid = await _key(store, "alice")
        _, admin = await _key(store, "ops", role="admin")
        auth = Authenticator(store, GatewaySettings(require_api_key=True, auth_failures_burst=10, auth_failures_per_minute=30))
        assert (await auth.caller(valid, client="10.0.0.1")) == Caller(key_id=alice_id, name="alice", role="user")
        assert (await auth.caller(admin, client="10.0.0.1")).is_admin
        looked = store.lookups
        outcomes = {"401": 0, "429": 0}
        for i in range(5000):
            token = f"Bearer sk-orch-{i:043d}" if i % 2 else f"Bearer junk-{i}"
            try:
                await auth.caller(token, client="203.0.113.9")
            except E.Unauthorized:
                outcomes["401"] += 1
            except E.RateLimited:
                outcomes["429"] += 1
        assert outcomes["401"] <= 12 and outcomes["429"] >= 4988  # a burst of 10 (plus what refills meanwhile)
        assert store.lookups - looked <= 6  # only well-formed tokens of the burst reached the store
        assert len(auth.keys) == 2  # only valid keys are cached
        # the attacker's address is throttled, not the valid keys (cached) nor other addresses
        assert (await auth.caller(valid, client="203.0.113.9")).name == "alice"
        with pytest.raises(E.Unauthorized):
            await auth.caller("Bearer junk", client="198.51.100.1")
    finally:
        await store.aclose()


def test_rate_limit_buckets_are_bounded() -> None:
    limiter = RateLimiter(30, 10, max_callers=100)
    for i in range(10_000):
        limiter.check(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) <= 100


async def test_a_revoked_key_is_forgotten_at_once_here_and_after_key_cache_s_elsewhere(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    try:
        key_id, bearer = await _key(store, "alice")
        here = Authenticator(store, GatewaySettings(require_api_key=True, key_cache_s=0.5))
        elsewhere = Authenticator(store, GatewaySettings(require_api_key=True, key_cache_s=0.5))
        for auth in (here, elsewhere):
            await auth.caller(bearer)
        before = store.lookups
        await auth.caller(bearer)
        assert store.lookups == before  # cached
        await store.revoke_api_key(key_id)
        here.forget(key_id)
        with pytest.raises(E.Unauthorized):
            await here.caller(bearer)
        assert (await elsewhere.caller(bearer)).name == "alice"  # still cached on the other replica...
        await asyncio.sleep(0.6)
        with pytest.raises(E.Unauthorized):  # ...for at most key_cache_s
            await elsewhere.caller(bearer)
    finally:
        await store.aclose()


# ---------------------------------------------------------------- idempotency keys and roles in the store
async def test_one_of_concurrent_claims_wins_and_a_stale_claim_is_taken_over(store_url: str) -> None:
    async with await Store.open(store_url) as store:
        claims = await asyncio.gather(*(store.claim_idempotency_key("key_a", "k1", "h1") for _ in range(5)))
        assert sum(c.claimed for c in claims) == 1
        assert all(c.request_hash == "h1" and c.batch_id is None for c in claims if not c.claimed)
        assert (await store.claim_idempotency_key("key_b", "k1", "h2")).claimed  # per owner
        await store.complete_idempotency_key("key_a", "k1", "batch_1")
        assert (await store.claim_idempotency_key("key_a", "k1", "h1")).batch_id == "batch_1"
        await store.release_idempotency_key("key_a", "k1")  # a completed claim is never released
        assert (await store.claim_idempotency_key("key_a", "k1", "h1")).batch_id == "batch_1"
        # a claim whose submit died: taken over once stale, not before
        assert (await store.claim_idempotency_key("key_a", "k2", "h1")).claimed
        assert not (await store.claim_idempotency_key("key_a", "k2", "h1", stale_after_s=60)).claimed
        await asyncio.sleep(0.05)
        assert (await store.claim_idempotency_key("key_a", "k2", "h3", stale_after_s=0.01)).claimed
        await store.release_idempotency_key("key_a", "k2")
        assert (await store.claim_idempotency_key("key_a", "k2", "h4")).claimed


async def test_keys_made_before_roles_existed_become_user_keys(tmp_path: Path) -> None:
    from alembic import command
    from sqlalchemy import text

    from store.db import alembic_config

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")

    def upgrade(conn, revision: str) -> None:  # type: ignore[no-untyped-def]
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(upgrade, "0003_gw_batches")
        await conn.execute(text("INSERT INTO api_keys (id, name, key_hash, created_at, revoked) "
                                "VALUES ('key_old', 'old', 'abc', '2025-01-01 00:00:00', 0)"))
    async with engine.begin() as conn:
        await conn.run_sync(upgrade, "head")
    store = Store(engine)
    try:
        (old,) = await store.list_api_keys()
        assert old.id == "key_old" and old.role == "user"
    finally:
        await store.aclose()


# ---------------------------------------------------------------- credentials in the config file
def test_credentials_are_named_not_written_into_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("http://user:pw@host/v1", "http://token@host/v1", "http://host/v1?api_key=x", "http://:8000/v1"):
        with pytest.raises(ValidationError, match="base_url"):
            ExpertSpec(name="x", backend="openai", model="m", base_url=url)  # type: ignore[arg-type]
    cfg = parse_config({"secrets": {"fleet": "FLEET_KEY"},
                        "experts": [{"name": "a", "backend": "openai", "model": "m", "base_url": "http://h/v1", "api_key_secret": "fleet"}]})
    monkeypatch.setenv("FLEET_KEY", "the-value")
    assert resolve_api_key(cfg.experts[0], cfg.secrets) == "the-value"
    with pytest.raises(ConfigError, match="api_key_secret 'nope'"):
        parse_config({"experts": [{"name": "a", "backend": "openai", "model": "m", "base_url": "http://h/v1", "api_key_secret": "nope"}]})
    with pytest.raises(ConfigError, match="secrets"):
        parse_config({"secrets": {"fleet": "not a variable name"}})


# ---------------------------------------------------------------- the shared registry (replicas)
def test_a_stored_api_expert_is_confined_again_by_each_replica() -> None:
    """A row some replica registered is served here only under this replica's allow-list and
    secrets (orchestrator/gateway/replica.py), so narrowing the list stops it everywhere it applies."""
    from orchestrator.gateway.replica import api_expert_refusal

    settings = GatewaySettings(api_expert_hosts=["10.0.0.0/8"])
    secrets = {"fleet": "FLEET_KEY"}

    def spec(**kw: object) -> ExpertSpec:
        return ExpertSpec.model_validate({"name": "x", "backend": "openai", "model": "m", "base_url": "http://10.1.2.3:8000/v1", **kw})

    assert api_expert_refusal(spec(api_key_secret="fleet"), settings, secrets) is None
    assert "allow-list" in (api_expert_refusal(spec(base_url="http://169.254.169.254/v1"), settings, secrets) or "")
    assert "secret" in (api_expert_refusal(spec(api_key_secret="other"), settings, secrets) or "")
    assert api_expert_refusal(spec(api_key_env="HOME"), settings, secrets) is not None
    assert api_expert_refusal(spec(), GatewaySettings(), secrets) is not None  # API registration off here: not served
    local = ExpertSpec.model_validate({"name": "y", "backend": "local", "model": "smollm2-135m-instruct"})
    assert api_expert_refusal(local, settings, secrets) is not None
