"""`orchestrator keys create|revoke`: gateway API keys (only a key's hash is stored).

    orchestrator keys create alice     # prints the key once, on stdout
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orchestrator.cli._common import ConfigOpt, console, fail, load_config, run_async

app = typer.Typer(no_args_is_help=True, help="Gateway API keys.")


@app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="A label for the key")], config: ConfigOpt = None) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    from orchestrator.gateway.auth import new_api_key
    from store.repository import Store

    cfg = load_config(config)
    key_id, key, digest = new_api_key()

    async def go() -> None:
        async with await Store.open(cfg.store) as store:
            await store.create_api_key(key_id, name, digest)

    run_async(go)
    console(stderr=True).print(f"created {key_id} ({name}); store it now, it is not shown again:")
    sys.stdout.write(key + "\n")


@app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id printed by `keys create`")], config: ConfigOpt = None) -> None:
    """Revoke an API key."""
    from store.repository import Store

    cfg = load_config(config)

    async def go() -> bool:
        async with await Store.open(cfg.store) as store:
            return await store.revoke_api_key(key_id)

    if not run_async(go):
        fail(f"no key {key_id!r}")
    console().print(f"revoked {key_id}")
