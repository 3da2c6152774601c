"""Replay: routers that learn from the gateway's own traffic and feedback (issue 23).

    .venv/bin/python benchmarks/replay_feedback.py --questions 3000 --router symbolic-moe --router coe \
        --refit-threshold 500 --out benchmarks/results/replay-feedback

A stream of MMLU-Pro questions (every one recorded for each model of the 16-model pool `small16`,
in a fixed seeded order) goes through the real gateway app (in-process ASGI, with its lifespan:
trace writer, replica loops, the refit job) one request at a time. Each router starts cold (an
empty store: the uniform prior); after each answer the client posts its correctness as feedback
(1 right, -1 wrong; the gold answer never reaches the router); the refit job refits the router
when `--refit-threshold` new outcomes arrived, and the gateway swaps the new fit version in
between requests (`fit_poll_s`).

Reported per window of `--window` questions: accuracy, expert calls, exploration (shadow) calls
and their cost, and the fit versions the window routed with; then the accuracy over the last
1,000 beside the same router fitted offline on the stream's first N questions (every pool
expert's recorded outcome on each, N = questions before the last 1,000) and evaluated on the same
last 1,000. Failed requests, duplicated traces and traces without a fit version are counted.
`--router-opt KEY=VALUE` sets a router option for both the online and the offline router (the same
router with the same options; exploration's shadow calls never change an answer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from evals.recorded_pool import NAMED_POOLS, recorded_specs  # noqa: E402
from experts.spec import OrchestratorConfig  # noqa: E402
from orchestrator.gateway.app import create_app  # noqa: E402
from orchestrator.pipeline import Runtime  # noqa: E402
from orchestrator.settings import GatewaySettings  # noqa: E402
from routers.registry import build_router  # noqa: E402
from routers.types import FitData, FitOutcome, Query  # noqa: E402

SHARED = REPO.parent / "shared" if (REPO.parent / "shared").is_dir() else Path("/work/shared")
RECORDED = SHARED / "data" / "recorded" / "mmlu_pro_tiger"
MMLU = SHARED / "data" / "mmlu_pro" / "test.jsonl"


@dataclass
class Stream:
    """The questions in replay order, and every pool model's recorded outcome on each."""

    questions: list[Query]
    outcomes: dict[str, dict[str, FitOutcome]]

    def fit_data(self, qs: list[Query]) -> FitData:
        ids = {q.question_id for q in qs}
        return FitData(qs, {m: {i: o for i, o in rows.items() if i in ids} for m, rows in self.outcomes.items()}, "recorded (offline)")


def load_stream(pool: list[str], n: int, seed: int) -> Stream:
    import gzip

    rows: dict[str, dict[str, dict]] = {}
    for m in pool:
        with gzip.open(RECORDED / "responses" / f"{m}.jsonl.gz", "rt") as f:
            rows[m] = {str(d["question_id"]): d for d in map(json.loads, f)}
    qs = []
    with open(MMLU) as f:
        for line in f:
            d = json.loads(line)
            qid = str(d["question_id"])
            if all(qid in rows[m] for m in pool):
                qs.append(Query(text=d["question"], choices=tuple(d["options"]), question_id=qid, category=d["category"], gold=d["answer"]))
    random.Random(seed).shuffle(qs)
    if len(qs) < n:
        raise SystemExit(f"only {len(qs)} questions are recorded for every model of the pool; asked for {n}")
    qs = qs[:n]
    outcomes = {m: {q.question_id: FitOutcome(bool(rows[m][q.question_id]["correct"]), rows[m][q.question_id]["pred"],
                                              rows[m][q.question_id].get("response") or "") for q in qs} for m in pool}
    return Stream(qs, outcomes)


@dataclass
class Window:
    n: int = 0
    right: int = 0
    expert_calls: int = 0
    shadow_calls: int = 0
    shadow_cost: float = 0.0
    cost: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)

    def row(self, start: int) -> dict[str, Any]:
        return {"questions": f"{start + 1}-{start + self.n}", "accuracy": round(self.right / max(self.n, 1), 4),
                "expert_calls_per_q": round(self.expert_calls / max(self.n, 1), 3), "exploration_calls": self.shadow_calls,
                "exploration_cost_usd": round(self.shadow_cost, 4), "cost_usd": round(self.cost, 4), "fit_versions": self.versions}


def config_for(store: str, pool: list[str]) -> OrchestratorConfig:
    return OrchestratorConfig(store=store, experts=recorded_specs(RECORDED, pool))


async def replay(router: str, stream: Stream, pool: list[str], workdir: Path, *, window: int, threshold: int,
                 router_options: dict[str, Any] | None = None, log: Any = print, pace_refits: bool = False) -> dict[str, Any]:
    """Stream every question through a fresh gateway (cold `router`), posting feedback after each.

    `pace_refits`: when a refit is due, the client waits (up to 300 s) until the job has taken it
    (its watermark moved) before sending more: the small-scale test's way of being independent of
    how long a fit takes on a loaded machine. The benchmark streams without waiting."""
    store = f"sqlite+aiosqlite:///{workdir / f'{router}.db'}"
    cfg = config_for(store, pool).model_copy(update={"routers": {router: dict(router_options or {})}})
    settings = GatewaySettings(refit_routers=[router], refit_threshold=threshold, refit_check_s=1.0, fit_poll_s=0.5,
                               trace_journal_dir=workdir / f"journal-{router}", require_api_key=False, gc_tuning=False)
    app = create_app(cfg, settings)
    windows: list[Window] = []
    failures: list[str] = []
    trace_ids: list[str] = []
    unversioned = 0
    t0 = time.perf_counter()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replay", timeout=120) as client:
            for i, q in enumerate(stream.questions):
                if i % window == 0:
                    windows.append(Window())
                w = windows[-1]
                body = {"model": router, "messages": [{"role": "user", "content": q.text}],
                        "metadata": {"question_id": q.question_id, "choices": list(q.choices or ()), "category": q.category}}
                r = await client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    failures.append(f"{q.question_id}: {r.status_code} {r.text[:200]}")
                    continue
                tid = r.json()["trace_id"]
                trace_ids.append(tid)
                trace = (await client.get(f"/v1/traces/{tid}")).json()
                right = trace.get("answer") is not None and trace["answer"] == q.gold
                rating = {"trace_id": tid, "score": 1 if right else -1}
                fb = await client.post("/v1/feedback", json=rating)
                for _ in range(3):  # 503 trace_pending: answered, not yet committed (a slow store); as the client does
                    if fb.status_code != 503:
                        break
                    await asyncio.sleep(float(fb.headers.get("Retry-After", 1)))
                    fb = await client.post("/v1/feedback", json=rating)
                if fb.status_code != 201:
                    failures.append(f"feedback {tid}: {fb.status_code} {fb.text[:200]}")
                if pace_refits:
                    await wait_for_refit(app, router, i + 1, threshold)
                version = (trace.get("plan") or {}).get("detail", {}).get("fit_version", "missing")
                if version == "missing":
                    unversioned += 1
                label = "prior" if version is None else f"v{version}"
                w.n += 1
                w.right += right
                w.versions[label] = w.versions.get(label, 0) + 1
                for c in trace["calls"]:
                    if c["role"] == "shadow":
                        w.shadow_calls += 1
                        w.shadow_cost += c["cost_usd"]
                    elif c["role"] == "expert":
                        w.expert_calls += 1
                    w.cost += c["cost_usd"]
                if (i + 1) % window == 0:
                    log(f"{router}: {i + 1}/{len(stream.questions)} · window accuracy {w.right / w.n:.3f} · versions {w.versions} · "
                        f"{time.perf_counter() - t0:.0f} s")
        st = app.state.gateway
        await st.runtime.trace_writer.flush(30.0)
        stored = await st.runtime.store.count_traces(router)
        versions = [a.version for a in await st.runtime.store.list_artefacts()]
        refits = app.state.replica.refit.refits if app.state.replica.refit else []
        job_error = app.state.replica.errors.get("refit job")  # the last check's failure, if it failed
    rows = [w.row(i * window) for i, w in enumerate(windows)]
    return {"router": router, "windows": rows, "failed_requests": len(failures), "failures": failures[:10],
            "distinct_traces": len(set(trace_ids)), "stored_traces": stored, "requests": len(stream.questions),
            "traces_without_fit_version": unversioned, "fit_versions_stored": versions, "refits_by_job": len(refits),
            "refit_job_error": job_error, "refit_outcomes": [r["outcomes"] for r in refits], "refit_s": [r.get("refit_s") for r in refits],
            "wall_s": round(time.perf_counter() - t0, 1)}


async def wait_for_refit(app: Any, router: str, outcomes: int, threshold: int, timeout_s: float = 300.0) -> None:
    """Until the refit job's watermark is within `threshold` of `outcomes` (it took a due refit)."""
    rt = app.state.gateway.runtime
    r = await rt.router(router)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = await rt.store.refit_state(r.artefact_kind, r.artefact, r.pool)
        if outcomes - (state or {}).get("outcomes_used", 0) < threshold:
            return
        await asyncio.sleep(0.2)


async def accuracy_by_question(router: str, stream: Stream, pool: list[str], workdir: Path, fit_on: list[Query], evaluate: list[Query],
                               router_options: dict[str, Any] | None = None) -> float:
    """The router fitted offline on `fit_on` (every pool expert's recorded outcome), its accuracy on `evaluate`."""
    async with await Runtime.create(config_for(f"sqlite+aiosqlite:///{workdir / f'offline-{router}.db'}", pool)) as rt:
        r = build_router(router, rt.router_context(), dict(router_options or {}))
        await r.fit(stream.fit_data(fit_on))
        right = 0
        for q in evaluate:
            res = await rt.answer(q.model_copy(update={"gold": None}), router, options=router_options or None)
            right += res.final.answer == q.gold
        return right / max(len(evaluate), 1)


def router_options(explore: float, pairs: list[str]) -> dict[str, Any]:
    """`--explore` and `--router-opt KEY=VALUE` as router options (values parsed as JSON when they parse)."""
    opts: dict[str, Any] = {"explore": explore} if explore else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--router-opt takes KEY=VALUE, got {pair!r}")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def online_accuracy(result: dict[str, Any], window: int, last: int) -> float:
    """Accuracy over the stream's last `last` questions, from whole windows."""
    rows = result["windows"]
    k = max(1, last // window)
    tail = rows[-k:]
    n = sum(int(r["questions"].split("-")[1]) - int(r["questions"].split("-")[0]) + 1 for r in tail)
    return sum(r["accuracy"] * (int(r["questions"].split("-")[1]) - int(r["questions"].split("-")[0]) + 1) for r in tail) / max(n, 1)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    pool = NAMED_POOLS[args.pool] if args.pool in NAMED_POOLS else args.pool.split(",")
    stream = load_stream(pool, args.questions, args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="replay-"))
    report: dict[str, Any] = {"questions": args.questions, "pool": pool, "window": args.window, "refit_threshold": args.refit_threshold,
                              "seed": args.seed, "explore": args.explore, "router_options": router_options(args.explore, args.router_opt),
                              "routers": {}}
    last = min(1000, args.questions // 2)
    for router in args.router:
        opts = router_options(args.explore, args.router_opt) or None
        res = await replay(router, stream, pool, workdir, window=args.window, threshold=args.refit_threshold, router_options=opts)
        res["accuracy_last"] = round(online_accuracy(res, args.window, last), 4)
        res["accuracy_first_window"] = res["windows"][0]["accuracy"]
        if not args.skip_offline:
            fit_on, evaluate = stream.questions[: args.questions - last], stream.questions[args.questions - last:]
            res["offline_accuracy_last"] = round(await accuracy_by_question(router, stream, pool, workdir, fit_on, evaluate, opts), 4)
            res["offline_fit_questions"] = len(fit_on)
        report["routers"][router] = res
        print(json.dumps({k: v for k, v in res.items() if k != "windows"}, default=str))
    report["last_n"] = last
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Replay with feedback: {report['questions']} MMLU-Pro questions, pool of {len(report['pool'])}, "
             f"window {report['window']}, refit every {report['refit_threshold']} outcomes", ""]
    if report.get("router_options"):
        lines += ["router options (online and offline): " + ", ".join(f"`{k}={v}`" for k, v in report["router_options"].items()), ""]
    for name, res in report["routers"].items():
        lines += [f"## {name}", "", "| questions | accuracy | expert calls / q | exploration calls | exploration cost $ | fit versions |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for w in res["windows"]:
            lines.append(f"| {w['questions']} | {w['accuracy']:.3f} | {w['expert_calls_per_q']:.2f} | {w['exploration_calls']} | "
                         f"{w['exploration_cost_usd']:.4f} | {', '.join(f'{k}: {v}' for k, v in w['fit_versions'].items())} |")
        off = res.get("offline_accuracy_last")
        lines += ["", f"last {report['last_n']}: online {res['accuracy_last']:.3f}"
                  + (f", offline fit on {res['offline_fit_questions']} labelled questions {off:.3f}" if off is not None else "")
                  + f"; first window {res['accuracy_first_window']:.3f}. Failed requests {res['failed_requests']}, "
                  f"traces {res['distinct_traces']} distinct / {res['stored_traces']} stored for {res['requests']} requests, "
                  f"without a fit version {res['traces_without_fit_version']}, refits by the job {res['refits_by_job']}, "
                  f"wall {res['wall_s']} s.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=3000)
    p.add_argument("--router", action="append", default=None)
    p.add_argument("--pool", default="small16")
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--refit-threshold", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--explore", type=float, default=0.0, help="share of queries with a shadow call to an unpicked expert")
    p.add_argument("--router-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a router option, online and offline (repeatable): explore_pick=least-labelled, unanswered=zero")
    p.add_argument("--skip-offline", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    args.router = args.router or ["symbolic-moe", "coe"]
    report = asyncio.run(main_async(args))
    md = markdown(report)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str))
        (args.out / "report.md").write_text(md)


if __name__ == "__main__":
    main()
