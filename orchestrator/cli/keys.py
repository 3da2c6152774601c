"""`orchestrator keys create|list|revoke`: gateway API keys (only a key's hash is stored).

    orchestrator keys create ops --admin    # prints the key once, on stdout; admins manage experts and keys
    orchestrator keys create alice          # a user key: chat, batches, its own traces
    orchestrator keys revoke key_0123abcd   # every gateway refuses it within its key_cache_s (5 s)
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orchestrator.cli._common import ConfigOpt, console, fail, load_config, run_async

app = typer.Typer(no_args_is_help=True, help="Gateway API keys.")


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label for the key")],
    config: ConfigOpt = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key: may change the expert registry, manage keys, read /metrics")] = False,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from orchestrator.gateway.auth import new_api_key
    from store.repository import Store

    cfg = load_config(config)
    key_id, key, digest = new_api_key()
    role = "admin" if admin else "user"

    async def go() -> None:
        async with await Store.open(cfg.store) as store:
            await store.create_api_key(key_id, name, digest, role=role)

    run_async(go)
    console(stderr=True).print(f"created {key_id} ({name}, {role}); store it now, it is not shown again:")
    sys.stdout.write(key + "\n")


@app.command("list")
def keys_list(config: ConfigOpt = None) -> None:
    """List API keys (ids, names, roles; never the keys themselves)."""
    from store.repository import Store

    cfg = load_config(config)

    async def go():  # type: ignore[no-untyped-def]
        async with await Store.open(cfg.store) as store:
            return await store.list_api_keys()

    for k in run_async(go):  # tab-separated, for scripts
        sys.stdout.write(f"{k.id}\t{k.name}\t{k.role}\t{'revoked' if k.revoked else 'active'}\n")


@app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id printed by `keys create`")], config: ConfigOpt = None) -> None:
    """Revoke an API key (running gateways refuse it within their key_cache_s, 5 s by default)."""
    from store.repository import Store

    cfg = load_config(config)

    async def go() -> str:
        async with await Store.open(cfg.store) as store:
            if await store.api_key_revoked(key_id):
                return "already"
            return "revoked" if await store.revoke_api_key(key_id) else "missing"

    outcome = run_async(go)
    if outcome == "missing":
        fail(f"no key {key_id!r}")
    if outcome == "already":
        fail(f"key {key_id!r} was already revoked")
    console().print(f"revoked {key_id}")
