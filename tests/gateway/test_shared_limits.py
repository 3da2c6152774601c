"""The workers' shared token buckets: one bucket per caller across processes, a bounded table."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from orchestrator.gateway.shared_limits import PROBE, SharedRateLimiter


def _take(path: str, n: int, out: "multiprocessing.Queue[int]") -> None:
    limiter = SharedRateLimiter(Path(path), rpm=1, burst=10)  # refills one token a minute: none during the test
    out.put(sum(limiter.check("key_a") is None for _ in range(n)))


def test_two_processes_draw_from_one_bucket(tmp_path: Path) -> None:
    path = SharedRateLimiter.create(tmp_path / "rl.bin", slots=64)
    ctx = multiprocessing.get_context("spawn")
    out: "multiprocessing.Queue[int]" = ctx.Queue()
    procs = [ctx.Process(target=_take, args=(str(path), 20, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    allowed = out.get(timeout=5) + out.get(timeout=5)
    assert allowed == 10  # the burst once, not once per process
    assert SharedRateLimiter(path, rpm=1, burst=10).check("key_b") is None  # another caller has a bucket of its own


def test_the_table_never_grows_and_a_refund_gives_the_token_back(tmp_path: Path) -> None:
    path = SharedRateLimiter.create(tmp_path / "rl.bin", slots=PROBE)
    limiter = SharedRateLimiter(path, rpm=60, burst=1)
    for i in range(100):  # far more callers than slots: live buckets are taken over, the file stays its size
        assert limiter.check(f"caller-{i}") is None
    assert path.stat().st_size == PROBE * 24 and len(limiter) <= PROBE
    assert limiter.check("caller-99") is not None  # its one token is spent
    limiter.refund("caller-99")
    assert limiter.check("caller-99") is None
