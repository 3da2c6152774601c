"""Soak: N minutes of moderate load through the gateway; its memory (RSS) over time.

    .venv/bin/python benchmarks/soak.py --minutes 10 --rps 100 [--sample-s 30]

Starts the load-test upstream and the gateway (`orchestrator serve`: one worker, traces
recorded in SQLite, `single` router) each in its own process, then sends requests at a fixed
rate from this process: chat completions (one in ten streamed), plus a few requests that fail on
purpose (an unknown model, a bad parameter) so that error paths run too. Prints the gateway's RSS
at the start (after a warm-up), at every sample and at the end, the growth, and checks that every
answered request left a trace.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import sys
import time
from pathlib import Path

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from orchestrator.loadtest.processes import free_port, served
from orchestrator.loadtest.run import count_traces, gateway_config


async def _one(client: httpx.AsyncClient, url: str, i: int, counts: dict[str, int]) -> None:
    body: dict = {"model": "single", "messages": [{"role": "user", "content": f"Question {i}: say ok."}], "max_tokens": 8}
    if i % 50 == 7:
        body["model"] = "no-such-model"
    elif i % 50 == 13:
        body["max_tokens"] = -1
    try:
        if i % 10 == 3 and body["model"] == "single":
            async with client.stream("POST", url, json={**body, "stream": True}) as r:
                async for _ in r.aiter_lines():
                    pass
                status = r.status_code
        else:
            status = (await client.post(url, json=body)).status_code
    except httpx.HTTPError:
        status = 0
    key = "ok" if status == 200 else ("expected_error" if status in (404, 422) else "unexpected")
    counts[key] = counts.get(key, 0) + 1


def _done(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k != "skipped_slots")


async def soak(minutes: float, rps: float, sample_s: float, workdir: Path, console: Console) -> dict:
    up_port, gw_port = free_port(), free_port()
    cfg = gateway_config(workdir, up_port)
    db = workdir / "loadtest.db"
    counts: dict[str, int] = {}
    samples: list[tuple[float, float, int]] = []
    async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(up_port)],
                      health=f"http://127.0.0.1:{up_port}/health", name="upstream", log=workdir / "upstream.log"):
        cmd = [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(cfg), "--port", str(gw_port), "--log-level", "warning"]
        async with served(cmd, health=f"http://127.0.0.1:{gw_port}/health", name="gateway", log=workdir / "gateway.log") as proc:
            gw = psutil.Process(proc.pid)
            url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                tasks: set[asyncio.Task[None]] = set()

                inflight = asyncio.Semaphore(32)

                async def one(i: int) -> None:
                    async with inflight:
                        await _one(client, url, i, counts)

                async def run_for(seconds: float, offset: int) -> int:
                    # Open-loop at `rps`, but never a catch-up burst: when this process falls behind
                    # (a busy machine), missed slots are dropped and counted, not fired at once.
                    start, i, slot = time.monotonic(), 0, 0
                    while (now := time.monotonic()) - start < seconds:
                        due = start + slot / rps
                        if due > now:
                            await asyncio.sleep(due - now)
                        elif now - due > 1.0:
                            missed = int((now - due) * rps)
                            counts["skipped_slots"] = counts.get("skipped_slots", 0) + missed
                            slot += missed
                            continue
                        if len(tasks) < 64:
                            t = asyncio.create_task(one(offset + i))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                            i += 1
                        else:
                            counts["skipped_slots"] = counts.get("skipped_slots", 0) + 1
                        slot += 1
                    return i

                warm = await run_for(min(30.0, minutes * 60 / 10), 0)
                t0 = time.monotonic()
                samples.append((0.0, gw.memory_info().rss / 2**20, _done(counts)))
                console.print(f"warm-up done ({warm} requests); RSS {samples[0][1]:.1f} MiB")
                sent = warm
                while (elapsed := time.monotonic() - t0) < minutes * 60:
                    sent += await run_for(min(sample_s, minutes * 60 - elapsed), sent)
                    samples.append((time.monotonic() - t0, gw.memory_info().rss / 2**20, _done(counts)))
                    console.print(f"  {samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MiB  requests {samples[-1][2]:,}  {counts}")
                await asyncio.gather(*tasks)
            end_rss = gw.memory_info().rss / 2**20
    return {"samples": samples, "counts": counts, "end_rss": end_rss, "traces": count_traces(db)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rps", type=float, default=100)
    ap.add_argument("--sample-s", type=float, default=30)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    console = Console()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="orchestrator-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = asyncio.run(soak(args.minutes, args.rps, args.sample_s, workdir, console))
    t = Table(title=f"Soak: {args.minutes:g} min at {args.rps:g} req/s — gateway RSS")
    for col in ("t (s)", "RSS (MiB)", "requests done"):
        t.add_column(col, justify="right")
    for s, rss, n in out["samples"]:
        t.add_row(f"{s:.0f}", f"{rss:.1f}", f"{n:,}")
    console.print(t)
    first, last = out["samples"][0][1], out["samples"][-1][1]
    mid = out["samples"][len(out["samples"]) // 2][1]
    console.print(f"RSS start {first:.1f} MiB, middle {mid:.1f} MiB, end {last:.1f} MiB "
                  f"(growth {last - first:+.1f} MiB; second half {last - mid:+.1f} MiB)")
    console.print(f"requests: {out['counts']}; traces in the store: {out['traces']:,} "
                  "(every answered request leaves one; 404/422 requests fail before routing and leave none)")


if __name__ == "__main__":
    main()
