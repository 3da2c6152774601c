"""Servers under test, each in its own process, stopped whatever happens.

    async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", "9100"],
                      health="http://127.0.0.1:9100/health", name="upstream") as proc:
        ...
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx


class ServerFailed(RuntimeError):
    """Raised when a server under test exits or never becomes healthy."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerFailed(f"{name} exited with {proc.returncode}; log: {log}\n{log.read_text()[-1500:]}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise ServerFailed(f"{name} not healthy at {url} after {timeout_s:.0f} s; log: {log}")


@asynccontextmanager
async def served(cmd: Sequence[str], *, health: str, name: str, log: Path, env: dict[str, str] | None = None,
                 timeout_s: float = 60.0) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start `cmd` (its own process group), wait for `health` to answer 200, stop it on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                start_new_session=True)
    try:
        await wait_healthy(health, proc, timeout_s, name, log)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group (graceful: the gateway flushes its traces), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
