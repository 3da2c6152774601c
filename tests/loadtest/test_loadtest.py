"""`orchestrator loadtest` end to end on loopback (short), and the load-test upstream itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import REPO
from orchestrator.loadtest.driver import LoadStats
from orchestrator.loadtest.processes import free_port, served
from orchestrator.loadtest.run import ratios


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        if os.environ.get("ORCH_SKIP_WRK") == "1":
            pytest.skip("ORCH_SKIP_WRK=1 set explicitly")
        pytest.fail("wrk is not installed: `apt-get install wrk` (scripts/test.sh installs it), or set ORCH_SKIP_WRK=1")


async def test_load_test_upstream_speaks_openai(tmp_path: Path) -> None:
    port = free_port()
    async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(port)],
                      health=f"http://127.0.0.1:{port}/health", name="upstream", log=tmp_path / "u.log"):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            r = await c.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
            assert r.json()["usage"]["total_tokens"] == 9
            assert (await c.get("/v1/models")).json()["data"][0]["id"] == "loadtest-upstream"
            assert (await c.get("/nope")).status_code == 404
            # keep-alive: many requests on one connection
            for _ in range(50):
                assert (await c.post("/v1/chat/completions", content=b"{}")).status_code == 200


def test_loadtest_command_writes_the_contract_json(tmp_path: Path) -> None:
    require_wrk()
    out = tmp_path / "lt.json"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "loadtest", "--concurrency", "1,4", "--seconds", "1",
         "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert set(data) == {"1", "4"}
    for level in data.values():
        assert set(level) == {"direct", "ours"}
        for stats in level.values():
            assert set(stats) == {"p50_ms", "p95_ms", "p99_ms", "rps", "errors"}
            assert stats["errors"] == 0 and stats["rps"] > 0 and 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
        assert level["ours"]["p50_ms"] > level["direct"]["p50_ms"]  # the gateway does real work per request
    assert "added p50" in proc.stdout and "ours" in proc.stdout
    # every answered request left a trace (the gateway flushed its writer on shutdown)
    import re

    m = re.search(r"traces recorded by the gateway: ([\d,]+); answered requests wrk counted: ([\d,]+)", " ".join(proc.stdout.split()))
    assert m, proc.stdout
    traces, answered = (int(g.replace(",", "")) for g in m.groups())
    assert traces >= answered > 0


def test_ratios_are_added_latency_over_litellms_and_throughput() -> None:
    def s(p50: float, rps: float) -> LoadStats:
        return LoadStats(p50_ms=p50, p95_ms=p50 * 2, p99_ms=p50 * 3, rps=rps, errors=0, requests=100)

    r = ratios({"direct": s(1.0, 5000), "ours": s(2.0, 1000), "litellm": s(11.0, 100)})
    assert r["added_p50"] == pytest.approx(0.1) and r["added_p95"] == pytest.approx(2 / 20) and r["rps"] == pytest.approx(10)
    assert ratios({"direct": s(1.0, 5000), "ours": s(2.0, 1000)}) == {}


def test_loadtest_measures_serve_workers_beside_one_worker(tmp_path: Path) -> None:
    require_wrk()
    out = tmp_path / "lt.json"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "loadtest", "--concurrency", "4", "--seconds", "1", "--workers", "2",
         "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    level = json.loads(out.read_text())["4"]
    assert set(level) == {"direct", "ours", "ours_2w"}
    assert level["ours_2w"]["errors"] == 0 and level["ours_2w"]["rps"] > 0
    assert "workers / one worker" in " ".join(proc.stdout.split())


def test_worker_scaling_is_the_workers_throughput_over_one_workers() -> None:
    from orchestrator.loadtest.run import worker_scaling

    def s(rps: float) -> LoadStats:
        return LoadStats(p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, rps=rps, errors=0, requests=100)

    assert worker_scaling({"direct": s(9000), "ours": s(1000), "ours_2w": s(1700)}) == pytest.approx(1.7)
    assert worker_scaling({"direct": s(9000), "ours": s(1000)}) is None
