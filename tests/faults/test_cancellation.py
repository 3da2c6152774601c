"""A client that goes away cancels its upstream calls: the real gateway in front of a slow upstream
that notes when its caller hangs up; the trace of the abandoned request says `cancelled`."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from experts import parse_config
from faulty_upstream import FaultyUpstream
from gateway_fixtures import running_gateway
from store import Store

UPSTREAM_DELAY_S = 3.0
CLIENT_GIVES_UP_S = 0.5


def _config(tmp_path: Path, base_url: str, *, max_wait_ms: float, experts: int = 1):  # type: ignore[no-untyped-def]
    return parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
        "experts": [{"name": f"slow{i}", "backend": "openai", "base_url": base_url, "model": "faulty", "timeout_s": 10,
                     "max_retries": 0, "max_wait_ms": max_wait_ms} for i in range(experts)],
    })


def _post_and_hang_up(url: str, body: dict) -> float:
    """Send a chat request on a raw socket, close it after CLIENT_GIVES_UP_S; when it closed."""
    host, port = url.removeprefix("http://").split(":")
    data = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  + f"content-length: {len(data)}\r\n\r\n".encode() + data)
        time.sleep(CLIENT_GIVES_UP_S)
        closed_at = time.monotonic()
    return closed_at


def _cancelled_traces(store_url: str) -> int:
    async def count() -> int:
        async with await Store.open(store_url) as store:
            return await store.count_traces(status="cancelled")

    deadline = time.monotonic() + 5
    while (n := asyncio.run(count())) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


@pytest.mark.parametrize(("max_wait_ms", "stream", "experts"), [
    (0, False, 1),   # sent from the request's own task
    (20, False, 1),  # coalesced by the expert's queue: the backend call is cancelled once its caller left
    (0, True, 1),    # a stream cut short
    (0, False, 2),   # a router with two experts: both calls
], ids=["direct", "queued", "stream", "all-vote"])
def test_a_client_that_hangs_up_cancels_its_upstream_calls_within_100_ms(tmp_path: Path, max_wait_ms: float, stream: bool,
                                                                        experts: int) -> None:
    with FaultyUpstream("slow") as up:
        up.delay_s = UPSTREAM_DELAY_S
        cfg = _config(tmp_path, up.base_url, max_wait_ms=max_wait_ms, experts=experts)
        with running_gateway(cfg) as url:
            model = "all-vote" if experts > 1 else "slow0"
            body = {"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}], "stream": stream}
            closed_at = _post_and_hang_up(url, body)
            deadline = time.monotonic() + 2
            while len(up.closed_early) < experts and time.monotonic() < deadline:
                time.sleep(0.005)
            assert up.requests == experts and len(up.closed_early) == experts, (up.requests, up.closed_early)
            lags_ms = [(t - closed_at) * 1000 for t in up.closed_early]
            assert max(lags_ms) < 100, lags_ms  # the upstream saw its connection closed within 100 ms
            assert _cancelled_traces(cfg.store) == 1
