"""`orchestrator serve --workers 2`: two processes on one port, one rate limit across them (issue #25).

A real `serve` subprocess on loopback; requests on fresh connections from several threads so the
kernel hands them to both workers (each success names the worker that answered it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from conftest import POOL3, RECORDED, REPO
from orchestrator.loadtest.processes import free_port, stop

RPM, BURST = 300, 8  # 5 tokens a second, 8 at once


def _serve(tmp_path: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(yaml.safe_dump({
        "store": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        "experts": [{"name": POOL3[0], "backend": "recorded", "path": str(RECORDED), "model": POOL3[0]}],
    }))
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRATOR_RATE_LIMIT_RPM": str(RPM),
           "ORCHESTRATOR_RATE_LIMIT_BURST": str(BURST)}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(cfg), "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise AssertionError("serve --workers did not start")


def _ready(port: int) -> tuple[int, str | None]:
    with httpx.Client(timeout=10) as c:  # a connection of its own: any worker may accept it
        r = c.get(f"http://127.0.0.1:{port}/ready", headers={"connection": "close"})
    return r.status_code, (r.json().get("replica") or {}).get("id") if r.status_code == 200 else None


def test_a_rate_limit_holds_across_two_workers(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, port, workers=2)
    try:
        # both workers up: each answers /health alone, and the rate limit starts full
        time.sleep(2.0)
        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda _: _ready(port), range(120)))
        elapsed = time.monotonic() - t0
    finally:
        stop(proc)
    ok = [w for s, w in outcomes if s == 200]
    limited = sum(1 for s, _ in outcomes if s == 429)
    assert len(ok) + limited == len(outcomes), outcomes
    allowed = BURST + elapsed * RPM / 60 + 1  # one bucket: its burst, its refill over the run, one in flight
    assert len(set(ok)) == 2, f"both workers must have answered some requests: {set(ok)}"
    # per-worker buckets would have let each worker take its own burst and refill: up to twice this
    assert len(ok) <= allowed, f"{len(ok)} requests allowed in {elapsed:.2f} s; one shared limit allows {allowed:.1f}"
    assert limited > 0
