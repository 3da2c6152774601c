"""The gateway the dashboard's tests run against: a real `orchestrator serve`
(tests/security/served.py) with recorded experts, an admin key and two user keys, and (for the
benchmarks page) two benchmark runs stored beforehand.

    with dashboard_gateway(tmp, bench_runs=True) as gw:
        httpx.post(f"{gw.url}/ui/login", data={"key": gw.admin})
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parents[1] / "security"))  # served.py: the attack tests' gateway process

from conftest import POOL3, RECORDED  # noqa: E402
from served import Served, recorded_experts  # noqa: E402

# list-price-like prices (USD per Mtok) so the pages show costs; the recorded outputs carry none
PRICES = {"Meta-Llama-3.1-8B-Instruct": (0.18, 0.18), "Phi-3-mini-4k-instruct": (0.1, 0.1), "Yi-34B": (0.8, 0.8)}


async def store_bench_runs(store_url: str, out: Path) -> list[str]:
    """Two real benchmark runs on the recorded pool, stored where the gateway reads them."""
    from orchestrator.bench.runner import BenchOptions, run_benchmark
    from store import Store

    ids = []
    async with await Store.open(store_url) as store:
        for seed, routers in ((7, ["best-single", "all-vote", "oracle", "random"]), (11, ["all-vote", "random", "oracle"])):
            opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=POOL3, routers=routers, limit=60, seed=seed,
                                out=out / f"bench-{seed}")
            ids.append((await run_benchmark(opts, store))["run_id"])
    return ids


@contextmanager
def dashboard_gateway(tmp: Path, *, bench_runs: bool = False) -> Iterator[SimpleNamespace]:
    experts = [{**e, "price_per_mtok": {"input": PRICES[e["name"]][0], "output": PRICES[e["name"]][1]}} for e in recorded_experts()]
    served = Served(tmp, env={"ORCHESTRATOR_REQUIRE_API_KEY": "true"}, config={"experts": experts})
    admin_id, admin = served.create_key("ops", admin=True)
    (alice_id, alice), (bob_id, bob) = served.make_keys(["alice", "bob"])
    runs = asyncio.run(store_bench_runs(served.store, tmp)) if bench_runs else []
    with served:
        yield SimpleNamespace(served=served, url=served.url, admin=admin, admin_id=admin_id, alice=alice, alice_id=alice_id,
                              bob=bob, bob_id=bob_id, runs=runs, tmp=tmp)
