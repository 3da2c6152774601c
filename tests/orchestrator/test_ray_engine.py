"""The Ray engine on a real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`):
a head node with no CPUs (the driver and the group ledger live there) and two worker nodes with
four logical CPUs each (room for the 16 recorded experts' actors, 0.5 CPU each, resident at once),
so every expert actor lives on a worker node and one of them can be killed.

* a recorded 16-model bench through the engine equals the in-process bench item for item, each
  expert group ran exactly once, and each model loaded exactly once for the whole run (every
  router and phase);
* a batch job of local and recorded experts in several chunks through the engine equals the
  in-process job item for item, each group ran once, each item stored once, each model (the
  local one too) loaded once for the job, not once per chunk;
* killing the worker node that runs a group mid-job: Ray restarts that expert's actor on the
  other node and sends it the group again, the job completes, and every result is stored exactly
  once (one item, one trace per request).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray  # in the test extra (pyproject.toml): a missing Ray fails this module, never skips it
from ray.cluster_utils import Cluster

from conftest import POOL3, RECORDED, REPO, mmlu_questions
from experts import parse_config
from experts.backends.base import ExpertBackend
from experts.backends.recorded import available_models
from experts.spec import ExpertSpec
from experts.types import GenerationRequest, GenerationResult, HealthStatus
from orchestrator.bench.runner import BenchOptions, run_benchmark
from orchestrator.gateway.batch_runner import BatchRunner
from orchestrator.pipeline import Runtime
from orchestrator.protocol import BatchCreate
from orchestrator.ray_engine import RayEngine, default_backend
from store import Store

NODE = {"num_cpus": 4, "object_store_memory": 100 * 1024**2}
SLOW = POOL3[2]  # the recorded expert whose group is slowed down, to be caught mid-run
DELAY_S = 4.0


class DelayedBackendForTest(ExpertBackend):
    """Test-only: a real backend whose every batch starts `DELAY_S` late (time to kill its node)."""

    def __init__(self, inner: ExpertBackend) -> None:
        super().__init__(inner.spec)
        self.inner = inner

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        await asyncio.sleep(DELAY_S)
        return await self.inner.generate(requests)

    async def health(self) -> HealthStatus:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


def slow_backend_for_test(spec: ExpertSpec, api_key: str | None) -> ExpertBackend:
    backend = default_backend(spec, api_key)
    return DelayedBackendForTest(backend) if spec.name == SLOW else backend


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # the test module's backend wrapper travels to the workers by value (they cannot import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")  # the workers inherit this environment
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        t0 = time.perf_counter()
        c = Cluster(initialize_head=True, connect=True,
                    head_node_args={"num_cpus": 0, "object_store_memory": 100 * 1024**2, "include_dashboard": False})
        for _ in range(2):
            c.add_node(**NODE)
        c.wait_for_nodes()
        print(f"\nRay cluster (head + 2 worker nodes) up in {time.perf_counter() - t0:.1f} s")
        try:
            yield c
        finally:
            ray.shutdown()
            c.shutdown()
            ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def finished_once(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(phase, expert) -> groups finished; asserts no group id finished twice."""
    ids = Counter(e["group_id"] for e in events if e["event"] == "finished")
    assert all(n == 1 for n in ids.values()), ids
    return Counter((e["phase"], e["expert"]) for e in events if e["event"] == "finished")


def loads(events: list[dict[str, Any]]) -> Counter[str]:
    """expert -> times its model was loaded (reported by its actor)."""
    return Counter(e["expert"] for e in events if e["event"] == "loaded")


async def test_recorded_16_model_bench_on_two_nodes_equals_in_process(cluster: Cluster, tmp_path: Path) -> None:
    pool = available_models(RECORDED)[:16]
    assert len(pool) == 16
    routers = ["all-vote", "oracle", "best-single"]
    opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=pool, routers=routers, limit=60, seed=3)
    items: dict[str, dict[str, dict[str, Any]]] = {}
    wall: dict[str, float] = {}
    engine = RayEngine()
    for name, eng in (("in-process", None), ("ray", engine)):
        async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / name}.db") as store:
            t0 = time.perf_counter()
            report = await run_benchmark(opts, store, engine=eng)
            wall[name] = time.perf_counter() - t0
            items[name] = {r: {i.question_id: {"pred": i.pred, "correct": i.correct, "experts": i.detail["experts"]}
                               for i in await store.bench_items(report["run_id"], r)} for r in routers}
    print(f"recorded 16-model bench, {opts.limit} questions, {len(routers)} routers: "
          f"in-process {wall['in-process']:.2f} s, two-node Ray {wall['ray']:.2f} s")
    assert all(len(items["ray"][r]) == 60 for r in routers)
    assert items["ray"] == items["in-process"]

    events = engine.ledger_events()
    done = finished_once(events)
    # all-vote and oracle: one group per pool expert; best-single: one group, its chosen expert
    assert sum(done.values()) == 33 and all(done[("generate", m)] in (2, 3) for m in pool)
    assert sum(1 for e in events if e["event"] == "started") == 33  # nothing ran twice
    print(f"bench: {sum(done.values())} groups, {sum(loads(events).values())} model loads for {len(pool)} models")
    assert loads(events) == Counter({m: 1 for m in pool})  # each model once for the run: 2-3 groups, fit and eval
    workers = {n.node_id for n in cluster.worker_nodes}
    assert {e["node_id"] for e in events} <= workers and len({e["node_id"] for e in events}) == 2  # both worker nodes worked
    engine.close()


def _batch_config(tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    return parse_config({
        "store": f"sqlite+aiosqlite:///{tmp_path / name}.db",
        "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]
        + [{"name": "smol", "backend": "local", "model": "smollm2-135m-instruct", "max_new_tokens": 6, "max_batch_size": 8}],
    })


def _requests(n: int) -> BatchCreate:
    reqs = []
    for i, q in enumerate(mmlu_questions(n)):
        body = {"model": "all-vote", "messages": [{"role": "user", "content": q.text}], "max_tokens": 6,
                "metadata": {"question_id": q.question_id, "choices": list(q.choices or ())}}
        reqs.append({"custom_id": f"q{i}", "body": body})
    return BatchCreate.model_validate({"requests": reqs})


async def _run_batch(tmp_path: Path, name: str, n: int, engine: RayEngine | None, *,
                     while_running: Any = None) -> tuple[list[tuple[int, bool, Any]], int, str]:
    """(idx, ok, answer text) of every stored item, the number of traces, the final status."""
    async with await Runtime.create(_batch_config(tmp_path, name)) as rt:
        runner = BatchRunner(rt, chunk_size=CHUNK, engine=engine)
        rec = await runner.submit(_requests(n), owner=None)
        if while_running is not None:
            await while_running()
        await asyncio.wait_for(runner.wait(rec.id), 240)
        items = await rt.store.batch_items(rec.id)
        traces = await rt.store.count_traces()
        status = (await rt.store.get_batch(rec.id)).status  # type: ignore[union-attr]
        await runner.aclose()
    return [(i.idx, i.ok, i.body["choices"][0]["message"]["content"] if i.ok else i.body) for i in items], traces, status


N_BATCH = 6
CHUNK = 2  # three chunks per job: each model must still load once per job, not per chunk


@pytest.fixture(scope="module")
def in_process_batch(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, bool, Any]]:
    items, traces, status = asyncio.run(_run_batch(tmp_path_factory.mktemp("inproc"), "inproc", N_BATCH, None))
    assert status == "completed" and traces == N_BATCH and all(ok for _, ok, _ in items)
    return items


async def test_batch_job_of_local_and_recorded_experts_on_ray_equals_in_process(
        cluster: Cluster, tmp_path: Path, in_process_batch: list[tuple[int, bool, Any]]) -> None:
    engine = RayEngine()
    items, traces, status = await _run_batch(tmp_path, "ray", N_BATCH, engine)
    assert status == "completed"
    assert items == in_process_batch  # item for item: index, ok, the answer text
    assert traces == N_BATCH  # one trace per item
    events = engine.ledger_events()
    done = finished_once(events)
    assert done == Counter({("generate", e): N_BATCH // CHUNK for e in [*POOL3, "smol"]})  # each group (one per chunk) once
    print(f"batch job, {N_BATCH // CHUNK} chunks: groups finished {dict(done)}, model loads {dict(loads(events))}")
    assert loads(events) == Counter({e: 1 for e in [*POOL3, "smol"]})  # the local model too: once per job, not per chunk
    engine.close()


async def test_an_http_expert_group_uses_the_key_the_driver_resolved(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker nodes started before the key was set: only the driver has it, the task carries it."""
    from experts.backends.openai import MODEL_HEADER
    from experts.registry import ExpertRegistry
    from orchestrator.scheduler import GroupedScheduler
    from recording_upstream import RecordingUpstream
    from routers.registry import build_router
    from routers.types import Query, RouterContext

    monkeypatch.setenv("RAY_TEST_FLEET_KEY", "sk-driver-only")
    engine = RayEngine()
    with RecordingUpstream() as up:
        config = parse_config({"secrets": {"fleet": "RAY_TEST_FLEET_KEY"}, "experts": [
            {"name": "fleet-small", "backend": "openai", "base_url": up.base_url, "model": "fleet/small", "api_key_secret": "fleet"}]})
        registry = ExpertRegistry.from_specs(config.experts, secrets=config.secrets)
        router = build_router("all-vote", RouterContext(pool=["fleet-small"], registry=registry), {})
        run = await GroupedScheduler(registry, engine=engine).run(router, [Query(text="2+2?"), Query(text="3+3?")])
        await registry.aclose()
    assert all(o.final.text == "The answer is 4." for o in run.outcomes)
    posts = [h for h in up.hits if h.path.endswith("/chat/completions")]
    assert len(posts) == 2 and all(h.headers["authorization"] == "Bearer sk-driver-only" for h in posts)
    assert all(h.headers[MODEL_HEADER.lower()] == "fleet/small" for h in posts)
    [done] = [e for e in engine.ledger_events() if e["event"] == "finished"]
    assert done["node_id"] in {n.node_id for n in cluster.worker_nodes} and "sk-driver-only" not in repr(engine.ledger_events())
    engine.close()


def test_the_cli_bench_runs_its_groups_on_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    """`orchestrator bench --engine ray --ray-address ADDR`: a second driver on the same cluster;
    the same report as the in-process bench of the same options."""
    pool = POOL3
    args = ["--recorded", str(RECORDED), "--pool", ",".join(pool), "--limit", "30", "--seed", "5", "-r", "all-vote", "-r", "best-single"]

    def bench(name: str, *extra: str) -> dict[str, Any]:
        env = {**os.environ, "ORCHESTRATOR_STORE": f"sqlite+aiosqlite:///{tmp_path / name}.db", "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "bench", *args, "--json", *extra], capture_output=True,
                             text=True, env=env, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    here, on_ray = bench("inproc"), bench("ray", "--engine", "ray", "--ray-address", cluster.address)
    for r in ("all-vote", "best-single"):
        assert on_ray["routers"][r]["accuracy"] == here["routers"][r]["accuracy"]
        assert on_ray["routers"][r]["expert_calls_per_question"] == here["routers"][r]["expert_calls_per_question"]
    assert on_ray["n_questions"] == here["n_questions"] == 30


def test_a_gateway_with_orchestrator_batch_engine_ray_runs_batch_jobs_there(cluster: Cluster, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from orchestrator.gateway.app import create_app
    from orchestrator.settings import GatewaySettings

    monkeypatch.setenv("ORCHESTRATOR_BATCH_ENGINE", "ray")
    monkeypatch.setenv("ORCHESTRATOR_RAY_ADDRESS", cluster.address)
    config = parse_config({"store": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
                           "experts": [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]})
    app = create_app(config, GatewaySettings())
    with TestClient(app) as client:
        created = client.post("/v1/batches", json=_requests(4).model_dump(mode="json", exclude_none=True))
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        deadline = time.monotonic() + 120
        while (status := client.get(f"/v1/batches/{batch_id}").json()["status"]) != "completed":
            assert time.monotonic() < deadline and status == "in_progress", status
            time.sleep(0.2)
        engine = app.state.gateway.batches.engine
        assert isinstance(engine, RayEngine)
        events = engine.ledger_events()
    assert finished_once(events) == Counter({("generate", m): 1 for m in POOL3})
    assert loads(events) == Counter({m: 1 for m in POOL3})
    assert {e["node_id"] for e in events} <= {n.node_id for n in cluster.worker_nodes}


async def test_killing_a_worker_node_mid_job_still_stores_every_result_once(
        cluster: Cluster, tmp_path: Path, in_process_batch: list[tuple[int, bool, Any]]) -> None:
    engine = RayEngine(backend_factory=slow_backend_for_test)
    killed: list[str] = []

    async def kill_the_slow_groups_node() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # loaded: its model is resident there and its first group is in flight (the delay)
            started = [e for e in engine.ledger_events() if e["event"] == "loaded" and e["expert"] == SLOW]
            if started:
                node = next(n for n in cluster.worker_nodes if n.node_id == started[0]["node_id"])
                cluster.remove_node(node, allow_graceful=False)
                killed.append(node.node_id)
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the slow group never started")

    try:
        items, traces, status = await _run_batch(tmp_path, "ray-kill", N_BATCH, engine, while_running=kill_the_slow_groups_node)
    finally:
        cluster.add_node(**NODE)  # back to two worker nodes for any later test
    assert killed
    assert status == "completed"
    assert items == in_process_batch and len({i for i, _, _ in items}) == N_BATCH  # every result, exactly once
    assert traces == N_BATCH  # the re-run group caused no second write
    events = engine.ledger_events()
    slow = [e for e in events if e["expert"] == SLOW and e["event"] != "loaded"]
    first = [e for e in slow if e["group_id"] == slow[0]["group_id"]]
    # the slow expert's first group: started on the killed node, sent again (by Ray) to its actor
    # restarted on the other node, finished once; its later chunks' groups ran there once each
    assert [e["event"] for e in first] == ["started", "started", "finished"]
    assert first[0]["node_id"] == killed[0] != first[1]["node_id"]
    assert finished_once(events)[("generate", SLOW)] == N_BATCH // CHUNK
    assert len(slow) == len(first) + 2 * (N_BATCH // CHUNK - 1)
    # the restarted actor loaded its model once more, on the surviving node, and kept it for the
    # later chunks; no model loaded twice on one node
    assert [e["node_id"] for e in events if e["expert"] == SLOW and e["event"] == "loaded"] == [killed[0], first[1]["node_id"]]
    print(f"node killed mid-job: model loads {dict(loads(events))}")
    assert all(n == 1 for n in Counter((e["expert"], e["node_id"]) for e in events if e["event"] == "loaded").values())
    engine.close()


def test_a_job_whose_resident_experts_cannot_all_fit_is_refused_not_left_hanging(cluster: Cluster) -> None:
    """Each expert's actor holds its CPU (or GPU) for the whole job: a job needing more than the
    cluster has would wait for ever on the last actor. It is refused with a reason instead."""
    from experts.errors import ConfigError
    from orchestrator.ray_engine import resources_for

    local = ExpertSpec(name="local-extra", backend="local", model="smollm2")  # type: ignore[arg-type]
    recorded = ExpertSpec(name="recorded-extra", backend="recorded", path=str(RECORDED), model="Yi-34B")  # type: ignore[arg-type]
    cpus = int(ray.cluster_resources()["CPU"])
    held = resources_for(local, cluster_gpus=0)
    engine = RayEngine()
    total = ray.cluster_resources()
    try:
        # resident local experts of this job already hold all the cluster's CPUs but one (entries
        # without actors: the check runs before an actor is made)
        engine._actors = {f"held-{i}": ("spec", None, held) for i in range(cpus - 1)}
        engine._check_capacity(local, total)  # the last CPU: fits
        engine._check_capacity(recorded, total)  # a recorded expert's sliver fits too
        engine._actors["held-last"] = ("spec", None, held)  # now every CPU is held
        with pytest.raises(ConfigError, match=r"'local-extra' needs 1 CPU .* hold %d of the cluster's %d" % (cpus, cpus)):
            engine._check_capacity(local, total)
        with pytest.raises(ConfigError, match=r"'recorded-extra' needs 0.05 CPU"):
            engine._check_capacity(recorded, total)
    finally:
        engine._actors.clear()
        engine.close()
