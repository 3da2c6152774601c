"""What OpenTelemetry costs a request, off and on (orchestrator/telemetry.py).

    python benchmarks/telemetry_cost.py [--traces 2000]

Answers one MMLU-Pro question with `all-vote` over three recorded experts to get a real trace
record (a route step, three expert calls), then times, per request:
  off: what `Runtime.answer` runs when no endpoint is configured (`runtime.telemetry is None`);
  on:  `Telemetry.export` of that trace (five spans) into the SDK's batching processor with the
       OTLP/HTTP exporter, posting to a loopback receiver (tests/otlp_sink.py) in a subprocess;
       the synchronous part (on the request's path) and the process CPU including the SDK's
       export thread (encoding and posting, off the request's path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECEIVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from otlp_sink import OtlpSink
with OtlpSink() as sink:
    print(sink.url, flush=True)
    sys.stdin.read()
    print(len(sink.spans), flush=True)
"""


async def a_trace(tmp: Path):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import POOL3, RECORDED, mmlu_questions
    from experts import parse_config
    from orchestrator.pipeline import Runtime

    config = parse_config({"store": f"sqlite+aiosqlite:///{tmp / 'c.db'}", "experts": [
        {"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]})
    async with await Runtime.create(config) as rt:
        off_s = min(timeit.repeat("rt.telemetry is not None", globals={"rt": rt}, number=1_000_000, repeat=5)) / 1_000_000
        result = await rt.answer(mmlu_questions(1)[0], "all-vote")
        return rt.trace_record(mmlu_questions(1)[0], result), rt.registry, off_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trace, registry, off_s = asyncio.run(a_trace(Path(tmp)))
    print(f"off: {off_s * 1e9:.0f} ns per request (the `runtime.telemetry is not None` test; no provider, no SDK objects)")

    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(REPO / "tests")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdin is not None and receiver.stdout is not None
    url = receiver.stdout.readline().strip()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
    # a queue that holds the whole run: the default (2048 spans) drops spans this tight loop makes
    # faster than the receiver takes them, and a dropped span costs no encoding
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(8 * args.traces))
    from orchestrator.telemetry import Telemetry

    telemetry = Telemetry.from_env(os.environ)
    assert telemetry is not None
    for _ in range(200):  # warm-up
        telemetry.export(trace, registry)
    telemetry.provider.force_flush()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sync = 0.0
    for _ in range(args.traces):
        t = time.perf_counter()
        telemetry.export(trace, registry)
        sync += time.perf_counter() - t
    telemetry.shutdown()  # every span encoded and posted
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    receiver.stdin.close()
    received = int(receiver.stdout.readline())
    receiver.wait()
    spans = 1 + 1 + len(trace.calls)
    print(f"on:  {sync / args.traces * 1e6:.1f} µs per request on its path (building {spans} spans), "
          f"{cpu / args.traces * 1e6:.1f} µs process CPU per request with the export thread's encoding and posting; "
          f"{received:,} spans received ({wall:.1f} s)")


if __name__ == "__main__":
    main()
