"""A real gateway (uvicorn) on 127.0.0.1 for the gateway tests (imported by tests/gateway)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from conftest import POOL3, RECORDED
from experts import parse_config
from orchestrator.gateway.app import create_app
from orchestrator.settings import GatewaySettings


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def recorded_config(tmp_path: Path, extra: list[dict] | None = None):  # type: ignore[no-untyped-def]
    return parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m, "price_per_mtok": {"input": 1, "output": 1}} for m in POOL3]
        + (extra or []),
    })


@contextmanager
def running_gateway(config, settings: GatewaySettings | None = None) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Start the gateway in a thread with its own event loop; yield its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config, settings or GatewaySettings()), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:  # pragma: no cover
        raise RuntimeError("gateway did not start")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def make_keys(store_url: str, names: list[str]) -> list[str]:
    from orchestrator.gateway.auth import new_api_key
    from store import Store

    async def go() -> list[str]:
        keys = []
        async with await Store.open(store_url) as store:
            for name in names:
                key_id, key, digest = new_api_key()
                await store.create_api_key(key_id, name, digest)
                keys.append(key)
        return keys

    return asyncio.run(go())
