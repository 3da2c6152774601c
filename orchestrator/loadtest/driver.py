"""The load driver: Debian's `wrk` (C, event loop per thread) with a Lua script that reports JSON.

    stats = await drive("http://127.0.0.1:9100/v1/chat/completions", body, concurrency=16, seconds=10)

wrk rather than a Python client: one wrk thread pushes over 20,000 requests/s on this machine,
so the driver is never what limits a measurement (the `direct` column checks this every run).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from pydantic import BaseModel

SCRIPT = Path(__file__).with_name("wrk_report.lua")


class DriverMissing(RuntimeError):
    """Raised when `wrk` is not installed."""


class LoadStats(BaseModel):
    """One measurement: latency percentiles of the whole request, throughput, failed requests."""

    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float
    errors: int
    requests: int
    # CPU seconds the server process (and its children) spent per request: unlike latency, this
    # does not depend on what else the machine runs. None for the upstream (not measured).
    server_cpu_ms_per_request: float | None = None


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise DriverMissing("`wrk` is not installed: `apt-get install wrk` (Debian) — the load driver of `orchestrator loadtest`")
    return path


async def drive(url: str, body: dict, *, concurrency: int, seconds: float, threads: int = 1, api_key: str | None = None) -> LoadStats:
    """Keep `concurrency` connections busy against `url` for `seconds`; one POST of `body` each."""
    threads = max(1, min(threads, concurrency))
    env = {**os.environ, "LOADTEST_BODY": json.dumps(body)}
    if api_key:
        env["LOADTEST_AUTH"] = api_key
    proc = await asyncio.create_subprocess_exec(
        wrk_path(), f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(SCRIPT), url, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("LOADTEST_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(err or out).decode()[-500:]}")
    d = json.loads(line.removeprefix("LOADTEST_JSON "))
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return LoadStats(
        p50_ms=d["p50_us"] / 1000, p95_ms=d["p95_us"] / 1000, p99_ms=d["p99_us"] / 1000,
        rps=d["requests"] / (d["duration_us"] / 1e6), errors=errors, requests=d["requests"],
    )
