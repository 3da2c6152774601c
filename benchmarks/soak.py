"""Soak: N minutes of moderate load through one or more gateway replicas on one store; their memory
(RSS) over time, every answered request's trace, and what a SIGKILL of a replica loses.

    .venv/bin/python benchmarks/soak.py --minutes 10 --rps 100 [--sample-s 30]
    .venv/bin/python benchmarks/soak.py --minutes 10 --rps 50 --replicas 2 --kills 2 --store postgresql+asyncpg://...

Starts the load-test upstream (instant canned answers, not a model) and the gateway replicas
(`orchestrator serve`, one worker each, the `single` router, traces recorded in the store given
— SQLite in the work directory by default — with one trace journal directory they share), then
sends requests at a fixed rate from this process, round robin over the replicas that are up:
chat completions (one in ten streamed), plus a few requests that fail on purpose (an unknown
model, a bad parameter) so that error paths run too.

With `--kills K`, the last replica is SIGKILLed K times at even intervals and started again at
once (its traces still uncommitted at the kill are in its journal; the new process replays them
at start). Afterwards every answered request must have exactly one trace in the store: each
non-streamed 200 carries its trace id (header `x-orchestrator-trace-id`), each is looked up.
For every kill it prints the answered requests of the killed replica in the last second before
the kill, how many of their traces survived, and how close to the kill the last of them was
answered (the loss window a SIGKILL could have).

RSS is sampled per process (a restarted replica is a new process, with its own warm-up); growth
is reported from the first sample after warm-up to the end, and over the second half.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml
from rich.console import Console
from rich.table import Table

from orchestrator.loadtest.processes import free_port, served, wait_healthy
from orchestrator.loadtest.upstream import MODEL as UPSTREAM_MODEL


def _config(workdir: Path, upstream_port: int, store: str) -> Path:
    cfg = {
        "store": store,
        "default_router": "single",
        "experts": [{
            "name": "loadtest-upstream", "backend": "openai", "model": UPSTREAM_MODEL,
            "base_url": f"http://127.0.0.1:{upstream_port}/v1", "max_wait_ms": 0, "max_batch_size": 256,
            "max_concurrency": 256, "max_queue": 4096, "timeout_s": 30, "max_retries": 0,
        }],
    }
    path = workdir / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@dataclass
class Incarnation:
    """One process of a replica: its RSS samples (seconds since the soak's start, MiB)."""

    pid: int
    started_s: float
    samples: list[tuple[float, float]] = field(default_factory=list)


class ReplicaProcess:
    """One gateway replica that can be SIGKILLed and started again on the same port."""

    def __init__(self, index: int, config: Path, workdir: Path, env: dict[str, str]) -> None:
        self.index, self.config, self.workdir, self.env = index, config, workdir, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.up = False
        self.incarnations: list[Incarnation] = []
        self.writer: dict = {}  # its trace writer's state at the end (/ready)

    async def start(self, t0: float) -> None:
        log = self.workdir / f"replica-{self.index}.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(self.config), "--port", str(self.port),
                 "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                cwd=self.workdir, start_new_session=True)
        await wait_healthy(f"{self.url}/health", self.proc, 120, f"replica {self.index}", log)
        self.incarnations.append(Incarnation(self.proc.pid, time.monotonic() - t0))
        self.up = True

    def kill(self) -> float:
        assert self.proc is not None
        self.up = False
        t = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        return t

    def rss_mib(self) -> float | None:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss / 2**20 if self.proc and self.up else None
        except psutil.Error:
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)
    answered: list[tuple[int, str, float]] = field(default_factory=list)  # (replica, trace id, monotonic when answered)

    def add(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    @property
    def done(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "skipped_slots")


async def _one(client: httpx.AsyncClient, replica: ReplicaProcess, i: int, tally: Tally) -> None:
    url = f"{replica.url}/v1/chat/completions"
    body: dict = {"model": "single", "messages": [{"role": "user", "content": f"Question {i}: say ok."}], "max_tokens": 8}
    if i % 50 == 7:
        body["model"] = "no-such-model"
    elif i % 50 == 13:
        body["max_tokens"] = -1
    trace_id = None
    try:
        if i % 10 == 3 and body["model"] == "single":
            async with client.stream("POST", url, json={**body, "stream": True}) as r:
                async for _ in r.aiter_lines():
                    pass
                status = r.status_code
            key = "ok_streamed" if status == 200 else None
        else:
            r = await client.post(url, json=body)
            status, trace_id = r.status_code, r.headers.get("x-orchestrator-trace-id")
            key = "ok" if status == 200 else None
    except httpx.HTTPError:
        status, key = 0, "connection_lost"  # in flight when its replica was killed
    if key is None:
        key = "expected_error" if status in (400, 404) else f"unexpected_{status}"
    tally.add(key)
    if key == "ok" and trace_id:
        tally.answered.append((replica.index, trace_id, time.monotonic()))


async def _stored(store: str, ids: list[str]) -> set[str]:
    from sqlalchemy import select

    from store import Store
    from store.models import RequestRow

    found: set[str] = set()
    async with await Store.open(store) as s, s._sessions() as session:
        for k in range(0, len(ids), 1000):
            q = select(RequestRow.id).where(RequestRow.id.in_(ids[k : k + 1000]))
            found.update((await session.execute(q)).scalars())
    return found


async def soak(args: argparse.Namespace, workdir: Path, console: Console) -> dict:
    up_port = free_port()
    store = args.store or f"sqlite+aiosqlite:///{workdir / 'soak.db'}"
    if args.store and args.fresh:
        await _reset_postgres(args.store)
    cfg = _config(workdir, up_port, store)
    env = {"ORCHESTRATOR_TRACE_JOURNAL_DIR": str(workdir / "trace-journal"), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    tally = Tally()
    kills: list[dict] = []
    replicas = [ReplicaProcess(i, cfg, workdir, env) for i in range(args.replicas)]
    t0 = time.monotonic()
    async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(up_port)],
                      health=f"http://127.0.0.1:{up_port}/health", name="upstream", log=workdir / "upstream.log"):
        try:
            for r in replicas:
                await r.start(t0)
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                tasks: set[asyncio.Task[None]] = set()
                inflight = asyncio.Semaphore(32)
                turn = 0

                async def one(i: int) -> None:
                    nonlocal turn
                    live = [r for r in replicas if r.up]
                    if not live:
                        tally.add("no_replica_up")
                        return
                    turn += 1
                    async with inflight:
                        await _one(client, live[turn % len(live)], i, tally)

                async def run_for(seconds: float, offset: int) -> int:
                    # Open-loop at `rps`, but never a catch-up burst: when this process falls behind
                    # (a busy machine), missed slots are dropped and counted, not fired at once.
                    start, i, slot = time.monotonic(), 0, 0
                    while (now := time.monotonic()) - start < seconds:
                        due = start + slot / args.rps
                        if due > now:
                            await asyncio.sleep(due - now)
                        elif now - due > 1.0:
                            missed = int((now - due) * args.rps)
                            tally.counts["skipped_slots"] = tally.counts.get("skipped_slots", 0) + missed
                            slot += missed
                            continue
                        if len(tasks) < 64:
                            t = asyncio.create_task(one(offset + i))
                            tasks.add(t)
                            t.add_done_callback(tasks.discard)
                            i += 1
                        else:
                            tally.counts["skipped_slots"] = tally.counts.get("skipped_slots", 0) + 1
                        slot += 1
                    return i

                def sample() -> None:
                    now = time.monotonic() - t0
                    for r in replicas:
                        rss = r.rss_mib()
                        if rss is not None:
                            r.incarnations[-1].samples.append((now, rss))
                    rss_text = "  ".join(f"r{r.index} {x:6.1f}" if (x := r.rss_mib()) is not None else f"r{r.index}  down " for r in replicas)
                    console.print(f"  {now:6.0f} s  RSS MiB {rss_text}  requests {tally.done:,}  {tally.counts}")

                total_s = args.minutes * 60
                warm_s = min(30.0, total_s / 10)
                sent = await run_for(warm_s, 0)
                sample()
                kill_at = [warm_s + (total_s - warm_s) * (k + 1) / (args.kills + 1) for k in range(args.kills)]
                victim = replicas[-1]
                while (elapsed := time.monotonic() - t0) < total_s:
                    nxt = min([t for t in kill_at if t > elapsed] + [elapsed + args.sample_s, total_s])
                    sent += await run_for(max(0.0, nxt - elapsed), sent)
                    if kill_at and time.monotonic() - t0 >= kill_at[0]:
                        kill_at.pop(0)
                        t_kill = victim.kill()
                        console.print(f"  SIGKILL replica {victim.index} (pid {victim.incarnations[-1].pid})")
                        await victim.start(t0)
                        kills.append({"t_kill": t_kill, "at_s": t_kill - t0, "restart_s": time.monotonic() - t_kill})
                    else:
                        sample()
                await asyncio.gather(*tasks)
                sample()
                for r in replicas:  # how long traces waited for their commit (the journal covers that time)
                    r.writer = (await client.get(f"{r.url}/ready")).json().get("trace_writer", {})
        finally:
            for r in replicas:
                r.stop()
    ids = [t for _, t, _ in tally.answered]
    found = await _stored(store, ids)
    for k in kills:  # what the killed replica had answered in the second before its kill
        recent = [(t, at) for idx, t, at in tally.answered if idx == victim.index and k["t_kill"] - 1.0 <= at <= k["t_kill"]]
        k["answered_last_second"] = len(recent)
        k["traces_kept"] = sum(t in found for t, _ in recent)
        k["closest_answer_ms"] = min(((k["t_kill"] - at) * 1000 for _, at in recent), default=None)
    return {"tally": tally, "found": found, "ids": ids, "kills": kills, "replicas": replicas, "store": store}


async def _reset_postgres(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def _report(out: dict, args: argparse.Namespace, console: Console) -> None:
    t = Table(title=f"Soak: {args.minutes:g} min at {args.rps:g} req/s over {args.replicas} replica(s), {args.kills} SIGKILL(s) — RSS per process")
    for col in ("replica", "pid", "started (s)", "first RSS (MiB)", "middle", "last", "growth", "second half"):
        t.add_column(col, justify="right")
    for r in out["replicas"]:
        for inc in r.incarnations:
            s = inc.samples
            if not s:
                continue
            first, mid, last = s[0][1], s[len(s) // 2][1], s[-1][1]
            t.add_row(str(r.index), str(inc.pid), f"{inc.started_s:.0f}", f"{first:.1f}", f"{mid:.1f}", f"{last:.1f}",
                      f"{last - first:+.1f}", f"{last - mid:+.1f}")
    console.print(t)
    for k in out["kills"]:
        console.print(f"SIGKILL at {k['at_s']:.0f} s: restarted in {k['restart_s']:.1f} s; it had answered {k['answered_last_second']} "
                      f"request(s) in the last second, the last {k['closest_answer_ms']:.1f} ms before the kill; traces kept: "
                      f"{k['traces_kept']} of {k['answered_last_second']}" if k["closest_answer_ms"] is not None else
                      f"SIGKILL at {k['at_s']:.0f} s: nothing answered by that replica in the last second")
    for r in out["replicas"]:
        w = r.writer
        console.print(f"replica {r.index} (last process): {w.get('written', 0):,} traces in {w.get('commits', 0):,} commits; "
                      f"commit lag over the last 1000 commits (ms): {w.get('commit_lag_ms')}")
    missing = len(out["ids"]) - len(out["found"])
    console.print(f"requests: {out['tally'].counts}")
    console.print(f"answered with a trace id: {len(out['ids']):,}; their traces in the store: {len(out['found']):,} "
                  f"(missing: {missing}; each at most once: trace ids are the primary key). Streamed answers carry no "
                  "trace id and are not checked one by one; 400/404 requests fail before routing and leave none.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rps", type=float, default=100)
    ap.add_argument("--sample-s", type=float, default=30)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--kills", type=int, default=0, help="SIGKILL the last replica this many times (restarting it each time)")
    ap.add_argument("--store", default=None, help="database URL the replicas share (default: SQLite in the work directory)")
    ap.add_argument("--fresh", action="store_true", help="drop and recreate the public schema of --store first (Postgres)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    console = Console()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="orchestrator-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = asyncio.run(soak(args, workdir, console))
    _report(out, args, console)


if __name__ == "__main__":
    main()
