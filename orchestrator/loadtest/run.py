"""One overhead run: direct upstream vs our gateway (vs LiteLLM) at fixed concurrency levels.

    results = await run_loadtest([1, 16, 64], seconds=10, compare_litellm=True, workdir=Path("out"))
    # {"1": {"direct": {...}, "ours": {...}, "litellm": {...}}, ...}  (the ARCHITECTURE.md contract)

Each server runs in its own process; the driver (wrk) in another. The gateway runs as
`orchestrator serve` does: one uvicorn worker, the `single` router in front of one `openai`
expert pointing at the load-test upstream, every request recorded as a trace in SQLite.
"""

from __future__ import annotations

import secrets
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml
from pydantic import BaseModel

from orchestrator.loadtest import litellm
from orchestrator.loadtest.driver import LoadStats, drive
from orchestrator.loadtest.processes import free_port, served
from orchestrator.loadtest.upstream import MODEL as UPSTREAM_MODEL

Targets = dict[str, LoadStats]  # "direct" | "ours" | "litellm" -> stats


class LoadtestResult(BaseModel):
    levels: dict[int, Targets]
    traces_recorded: int | None = None
    gateway_requests: int = 0

    def contract_json(self) -> dict[str, Any]:
        keep = {"p50_ms", "p95_ms", "p99_ms", "rps", "errors"}
        return {str(c): {t: s.model_dump(include=keep) for t, s in targets.items()} for c, targets in self.levels.items()}


def gateway_config(workdir: Path, upstream_port: int) -> Path:
    cfg = {
        "store": f"sqlite+aiosqlite:///{workdir / 'loadtest.db'}",
        "default_router": "single",
        "experts": [{
            "name": "loadtest-upstream", "backend": "openai", "model": UPSTREAM_MODEL,
            "base_url": f"http://127.0.0.1:{upstream_port}/v1",
            "description": "the load-test upstream (instant canned answers, not a model)",
            # chat requests go one HTTP request each, so a batching window would only add latency
            "max_wait_ms": 0, "max_batch_size": 256, "max_concurrency": 256, "max_queue": 4096,
            "timeout_s": 30, "max_retries": 0,
        }],
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 8}


def count_traces(db: Path) -> int | None:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    except sqlite3.Error:
        return None


def _cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def _measure(name: str, url: str, body: dict[str, Any], levels: list[int], seconds: float,
                   out: dict[int, Targets], progress: Callable[[str], None], api_key: str | None = None,
                   server_pid: int | None = None) -> int:
    """Measure every level; returns how many requests the warm-up sent (they leave traces too)."""
    progress(f"{name}: warm-up")
    warm = await drive(url, body, concurrency=max(levels), seconds=1, api_key=api_key)
    for c in levels:
        progress(f"{name}: concurrency {c} for {seconds:g} s")
        cpu0 = _cpu_s(server_pid)
        stats = await drive(url, body, concurrency=c, seconds=seconds, api_key=api_key)
        if server_pid is not None and stats.requests:
            stats.server_cpu_ms_per_request = (_cpu_s(server_pid) - cpu0) * 1000 / stats.requests
        out.setdefault(c, {})[name] = stats
    return warm.requests - warm.errors


def workers_target(n: int) -> str:
    """The name of the `serve --workers n` measurement beside the one-worker "ours"."""
    return f"ours_{n}w"


async def run_loadtest(levels: list[int], *, seconds: float, compare_litellm: bool, workdir: Path,
                       progress: Callable[[str], None] = lambda _: None, workers: int = 1) -> LoadtestResult:
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[int, Targets] = {}
    up_port, gw_port = free_port(), free_port()
    up_url = f"http://127.0.0.1:{up_port}"
    progress("starting the load-test upstream")
    async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(up_port)],
                      health=f"{up_url}/health", name="load-test upstream", log=workdir / "upstream.log"):
        await _measure("direct", f"{up_url}/v1/chat/completions", _body(UPSTREAM_MODEL), levels, seconds, out, progress)

        progress("starting the gateway")
        cfg = gateway_config(workdir, up_port)
        db = workdir / "loadtest.db"
        db.unlink(missing_ok=True)
        gw_cmd = [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(cfg), "--port", str(gw_port), "--log-level", "warning"]
        async with served(gw_cmd, health=f"http://127.0.0.1:{gw_port}/health", name="gateway", log=workdir / "gateway.log") as gw:
            warm = await _measure("ours", f"http://127.0.0.1:{gw_port}/v1/chat/completions", _body("single"), levels, seconds, out, progress,
                                  server_pid=gw.pid)
        # the gateway has stopped (and flushed): every answered request must have left a trace
        traces = count_traces(db)
        answered = warm + sum(t["ours"].requests - t["ours"].errors for t in out.values())

        if workers > 1:  # the same gateway as `serve --workers N`, measured right after the one-worker run
            progress(f"starting the gateway with {workers} workers")
            port = free_port()
            cmd = [*gw_cmd[:gw_cmd.index("--port")], "--port", str(port), "--workers", str(workers), "--log-level", "warning"]
            async with served(cmd, health=f"http://127.0.0.1:{port}/health", name=f"gateway ({workers} workers)",
                              log=workdir / "gateway-workers.log") as gw:
                before = count_traces(db) or 0
                warm_n = await _measure(workers_target(workers), f"http://127.0.0.1:{port}/v1/chat/completions", _body("single"), levels,
                                        seconds, out, progress, server_pid=gw.pid)
            traces = (traces or 0) + (count_traces(db) or 0) - before
            answered += warm_n + sum(t[workers_target(workers)].requests - t[workers_target(workers)].errors for t in out.values())

        if compare_litellm:
            progress("preparing the LiteLLM proxy (first use installs it into its own venv)")
            exe = litellm.ensure_venv(workdir / "litellm-install.log")
            key = f"sk-loadtest-{secrets.token_hex(16)}"
            lcfg = litellm.write_config(workdir / "litellm.yaml", f"{up_url}/v1", UPSTREAM_MODEL, key)
            ll_port = free_port()
            async with served(litellm.proxy_command(exe, lcfg, ll_port), health=f"http://127.0.0.1:{ll_port}/health/liveliness",
                              name="LiteLLM proxy", log=workdir / "litellm.log", timeout_s=180,
                              env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"}) as ll:  # no network fetch at start
                await _measure("litellm", f"http://127.0.0.1:{ll_port}/v1/chat/completions", _body(litellm.MODEL), levels, seconds, out, progress,
                               api_key=key, server_pid=ll.pid)
    return LoadtestResult(levels=out, traces_recorded=traces, gateway_requests=answered)


def added(stats: LoadStats, direct: LoadStats, pct: str) -> float:
    """Latency a proxy adds at this percentile: its percentile minus the upstream's own."""
    return getattr(stats, pct) - getattr(direct, pct)


def ratios(targets: Targets) -> dict[str, float | None]:
    """Our added latency over LiteLLM's (per percentile) and our throughput over LiteLLM's."""
    if "litellm" not in targets or "ours" not in targets:
        return {}
    d, o, l = targets["direct"], targets["ours"], targets["litellm"]
    out: dict[str, float | None] = {}
    for pct in ("p50_ms", "p95_ms", "p99_ms"):
        theirs = added(l, d, pct)
        out[f"added_{pct.removesuffix('_ms')}"] = added(o, d, pct) / theirs if theirs > 0 else None
    out["rps"] = o.rps / l.rps if l.rps > 0 else None
    return out


def worker_scaling(targets: Targets) -> float | None:
    """Throughput of the `--workers N` gateway over the one-worker gateway's, in the same run."""
    many = next((s for name, s in targets.items() if name.startswith("ours_")), None)
    one = targets.get("ours")
    return many.rps / one.rps if many is not None and one is not None and one.rps > 0 else None
