"""CPU per upstream POST: httpx.AsyncClient vs aiohttp.ClientSession (why the openai backend uses aiohttp).

    python benchmarks/http_client_cpu.py --requests 3000

Sends the same chat body sequentially to the load-test upstream (instant canned answers, not a
model) over one keep-alive connection with each client and prints process CPU per request.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import aiohttp
import httpx
import uvloop

from orchestrator.loadtest.processes import free_port

PAYLOAD = {"model": "loadtest-upstream", "max_tokens": 8, "temperature": 0.7, "top_p": 1.0,
           "messages": [{"role": "user", "content": "Say ok."}]}


async def measure(url: str, n: int) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, connect=5)) as c:
        for _ in range(100):
            (await c.post(url, json=PAYLOAD)).raise_for_status()
        t = time.process_time()
        for _ in range(n):
            (await c.post(url, json=PAYLOAD)).json()
        print(f"httpx    {(time.process_time() - t) * 1000 / n:.3f} ms CPU per request")
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)) as s:
        for _ in range(100):
            async with s.post(url, data=json.dumps(PAYLOAD).encode(), headers=headers) as r:
                r.raise_for_status()
                await r.read()
        t = time.process_time()
        for _ in range(n):
            async with s.post(url, data=json.dumps(PAYLOAD).encode(), headers=headers) as r:
                json.loads(await r.read())
        print(f"aiohttp  {(time.process_time() - t) * 1000 / n:.3f} ms CPU per request")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.loadtest.upstream", "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):  # until it listens
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        uvloop.run(measure(f"http://127.0.0.1:{port}/v1/chat/completions", args.requests))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
