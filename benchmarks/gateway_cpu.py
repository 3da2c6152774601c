"""CPU per chat request inside the gateway app, without uvicorn or a load generator.

    python benchmarks/gateway_cpu.py --requests 3000 [--concurrency 16] [--profile out.prof]

Starts the load-test upstream (orchestrator/loadtest/upstream.py, instant canned answers, not a
model), builds the gateway app as `orchestrator loadtest` configures it (the `single` router, one
`openai` expert, traces recorded in SQLite through the batched writer) and calls the ASGI app
directly with a prebuilt request. Prints process CPU per request (every thread: the SQLite
writer thread included), so the number is the app's own cost: `orchestrator loadtest` adds
uvicorn's HTTP parsing and socket work on top.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from experts import parse_config
from orchestrator.gateway.app import GatewaySettings, create_app
from orchestrator.loadtest.processes import free_port, served
from orchestrator.loadtest.run import count_traces, gateway_config

BODY = json.dumps({"model": "single", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 8}).encode()


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                                     (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }


async def _one(app: Any, state: dict[str, Any]) -> int:
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)  # no disconnect while the app works
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = _scope()
    scope["state"] = dict(state)
    await app(scope, receive, send)
    return status


async def _lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]], dict[str, Any]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    state: dict[str, Any] = {}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set_result(None)
        elif message["type"] == "lifespan.startup.failed":
            started.set_exception(RuntimeError(message.get("message", "startup failed")))

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    await started
    return task, inbox, state


async def run(requests: int, concurrency: int, profile: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port = free_port()
        async with served([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(port)],
                          health=f"http://127.0.0.1:{port}/health", name="load-test upstream", log=work / "upstream.log"):
            import yaml

            config = parse_config(yaml.safe_load(gateway_config(work, port).read_text()))
            app = create_app(config, GatewaySettings())
            task, inbox, state = await _lifespan(app)
            try:
                for _ in range(200):  # warm-up: connections, caches, lazily built objects
                    assert await _one(app, state) == 200
                prof = cProfile.Profile() if profile and profile.suffix == ".prof" else None
                sampler = None
                if profile and prof is None:
                    from pyinstrument import Profiler

                    sampler = Profiler(interval=0.0002, async_mode="disabled")  # samples: little overhead
                    sampler.start()
                per_worker = requests // concurrency

                async def worker() -> None:
                    for _ in range(per_worker):
                        status = await _one(app, state)
                        if status != 200:
                            raise RuntimeError(f"gateway answered {status}")

                cpu0, wall0 = time.process_time(), time.perf_counter()
                if prof:
                    prof.enable()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                await app.state.gateway.runtime.trace_writer.flush(30)  # the traces' cost belongs to the requests
                if prof:
                    prof.disable()
                    prof.dump_stats(profile)
                if sampler:
                    sampler.stop()
                    profile.write_text(sampler.output_text(unicode=True, show_all=False))
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                n = per_worker * concurrency
                print(f"{n} requests at concurrency {concurrency}: {cpu * 1000 / n:.3f} ms CPU per request "
                      f"(process, all threads), {n / wall:,.0f} req/s in-process")
            finally:
                await inbox.put({"type": "lifespan.shutdown"})
                await task
            print(f"traces recorded: {count_traces(work / 'loadtest.db')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--profile", type=Path, default=None, help="profile the measured part: cProfile stats to a .prof file, else a pyinstrument text tree")
    args = ap.parse_args()
    uvloop.run(run(args.requests, args.concurrency, args.profile))


if __name__ == "__main__":
    main()
