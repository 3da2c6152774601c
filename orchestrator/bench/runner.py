"""The benchmark runner: several routers, one pool, the same questions, in grouped batch mode.

    report = await run_benchmark(BenchOptions(dataset="mmlu-pro", recorded=Path(...), routers=[...]))

Recorded mode replays real model outputs (no GPU); live mode runs registered experts. Fit data
(profiles, classifiers, best-single) is kept disjoint from evaluation data by question id.
Outcomes are written to the store chunk by chunk under a run id derived from the options, so a
killed run continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experts.errors import ConfigError
from experts.registry import ExpertRegistry
from experts.spec import ExpertSpec
from evals import recorded_pool
from evals.datasets import Question
from evals.metrics import mcnemar_exact, wilson_interval
from evals.splits import split_fit_eval
from orchestrator.dispatcher import Dispatcher
from orchestrator.residency import ResidencyManager
from orchestrator.scheduler import GroupedScheduler
from routers.types import FitData, FitOutcome, Query, RouterContext, RoutingError
from routers.registry import build_router
from store.records import BenchItemRecord
from store.repository import Store

ProgressHook = Callable[[str, int, int], None]
CHUNK = 1000
LIVE_FIT_DEFAULT = 50  # live experts on CPU: fit on a sample unless --fit-limit says otherwise


@dataclass
class BenchOptions:
    dataset: str = "mmlu-pro"
    routers: list[str] = field(default_factory=lambda: ["best-single", "all-vote", "oracle"])
    recorded: Path | None = None
    fit_recorded: Path | None = None
    pool: list[str] | None = None
    data: Path | None = None
    limit: int | None = None
    seed: int = 0
    out: Path | None = None
    fit_fraction: float = 0.3
    fit_limit: int | None = None
    prompt: str = "cot-5shot"  # cot-5shot | zero-shot | short (the option letter only: tiny CPU models)
    max_tokens: int = 512
    gpqa_subset: str = "diamond"
    gpqa_password: str | None = None
    router_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    residency: int = 1
    fresh: bool = False
    named_pools: dict[str, list[str]] = field(default_factory=dict)

    def run_id(self, pool: list[str]) -> str:
        key = {
            "dataset": self.dataset, "recorded": str(self.recorded) if self.recorded else None,
            "fit_recorded": str(self.fit_recorded) if self.fit_recorded else None, "pool": pool,
            "data": str(self.data) if self.data else None, "limit": self.limit, "seed": self.seed,
            "fit_fraction": self.fit_fraction, "fit_limit": self.fit_limit, "prompt": self.prompt,
            "max_tokens": self.max_tokens, "gpqa_subset": self.gpqa_subset, "router_options": self.router_options,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.dataset}-{digest}" + (f"-{int(time.time())}" if self.fresh else "")


@dataclass
class BenchSplit:
    registry: ExpertRegistry
    pool: list[str]
    pool_info: dict[str, Any]
    split_note: str
    eval_queries: list[Query]
    fit_queries: list[Query]


@dataclass
class RouterResult:
    name: str
    items: list[BenchItemRecord]
    wall_s: float
    fit_summary: dict[str, Any]


def question_query(q: Question, prompt: str | None, max_tokens: int) -> Query:
    """A dataset question as the query routers see (the gold answer kept for scoring only)."""
    return Query(
        text=q.question, choices=tuple(q.options), question_id=q.id, category=q.category, prompt=prompt,
        gold=q.answer, max_tokens=max_tokens,
    )


class BenchmarkRunner:
    def __init__(self, opts: BenchOptions, store: Store, *, registry: ExpertRegistry | None = None, progress: ProgressHook | None = None) -> None:
        self.opts = opts
        self.store = store
        self.live_registry = registry
        self.progress = progress
        self.notes: list[str] = []
        self.dispatcher: Dispatcher | None = None  # one per run, over the run's registry (set in `run`)
        self.services: dict[str, Any] = {}  # heavy helpers shared by every router of the run (the embedder)

    # ------------------------------------------------------------------ data
    def load_questions(self) -> tuple[list[Question], list[Question]]:
        """(test questions, validation exemplars)."""
        from evals import datasets

        if self.opts.dataset == "mmlu-pro":
            if self.opts.data is not None:
                test = datasets.load_mmlu_pro(self.opts.data)
                val_path = datasets.default_mmlu_pro_paths().get("validation")
            else:
                paths = datasets.default_mmlu_pro_paths()
                if "test" not in paths:  # no local copy: the hub, when `datasets` and a network exist
                    return datasets.load_mmlu_pro_split("test"), datasets.load_mmlu_pro_split("validation")
                test = datasets.load_mmlu_pro(paths["test"])
                val_path = paths.get("validation")
            val = datasets.load_mmlu_pro(val_path) if val_path else []
            return test, val
        if self.opts.dataset == "gpqa":
            zip_path = self.opts.data or datasets.default_gpqa_zip()
            if zip_path is None:
                raise ConfigError("GPQA dataset.zip not found: pass --data PATH/TO/dataset.zip")
            return datasets.load_gpqa(zip_path, subset=self.opts.gpqa_subset, password=self.opts.gpqa_password, seed=self.opts.seed), []
        raise ConfigError(f"--dataset must be mmlu-pro or gpqa, got {self.opts.dataset!r}")

    def prompt_for(self, q: Question, exemplars: dict[str, list[Question]]) -> str:
        from evals import prompts

        if self.opts.dataset == "gpqa":
            return prompts.gpqa_zero_shot_prompt(q)
        if self.opts.prompt == "short":
            return prompts.mmlu_pro_short_prompt(q)
        if self.opts.prompt == "zero-shot":
            return prompts.mmlu_pro_zero_shot_prompt(q)
        return prompts.mmlu_pro_cot_prompt(q, exemplars.get(q.category, []))

    # ------------------------------------------------------------------ pools
    def build_pool(self, questions: list[Question]) -> tuple[ExpertRegistry, list[str], list[Question], dict[str, Any]]:
        o = self.opts
        if o.recorded is not None:
            directory = o.recorded.resolve()
            pool = recorded_pool.resolve_pool(directory, self._named(o.pool))
            registry = ExpertRegistry.from_specs(recorded_pool.recorded_specs(directory, pool))
            for i, m in enumerate(pool):  # read each model's table once, visibly (seconds per model)
                registry.recorded_library.table(directory, m)
                self._report(f"prepare:read recorded outputs:{m}", i + 1, len(pool))
            ids = [q.id for q in questions]
            cov = recorded_pool.coverage(registry.recorded_library, directory, pool, ids)
            tables = [registry.recorded_library.table(directory, m) for m in pool]  # once, not per question
            covered = {q for q in ids if all(q in t for t in tables)}
            kept = [q for q in questions if q.id in covered]
            info = {
                "mode": "recorded", "directory": str(directory), "questions_in_dataset": cov.questions,
                "covered_by_every_model": cov.covered_by_all, "per_model": cov.per_model,
                "price_convention": f"USD {recorded_pool.PRICE_PER_BILLION_PARAMS} per Mtok per billion parameters",
                "answers": "each run's own parsed letter (`pred`); no answer counts as wrong",
            }
            if not kept:
                raise ConfigError(f"no question is covered by every model of the pool in {directory}")
            return registry, pool, kept, info
        if self.live_registry is None:
            raise ConfigError("live benchmark needs registered experts (--config) or --recorded DIR")
        registry = self.live_registry
        pool = self._named(o.pool) or registry.names
        for m in pool:
            registry.resolve(m)
        return registry, [registry.resolve(m) for m in pool], questions, {"mode": "live"}

    def _named(self, pool: list[str] | None) -> list[str] | None:
        """A single pool name from the config's `pools:` (or a built-in named pool) expands."""
        if pool and len(pool) == 1 and pool[0] in self.opts.named_pools:
            return list(self.opts.named_pools[pool[0]])
        return pool

    async def fit_data(self, registry: ExpertRegistry, pool: list[str], fit_questions: list[Query]) -> FitData:
        o = self.opts
        if o.recorded is not None or o.fit_recorded is not None:
            directory = (o.fit_recorded or o.recorded).resolve()  # type: ignore[union-attr]
            outcomes: dict[str, dict[str, FitOutcome]] = {}
            for i, m in enumerate(pool):
                table = registry.recorded_library.table(directory, m)
                outcomes[m] = {
                    q.question_id: FitOutcome(correct=table[q.question_id].correct, answer=table[q.question_id].pred, response=table[q.question_id].response)
                    for q in fit_questions if q.question_id in table
                }
                self._report(f"fit:read recorded outputs:{m}", i + 1, len(pool))
            return FitData(questions=fit_questions, outcomes=outcomes, source=f"recorded outputs in {directory}")
        # Live: every pool expert answers every fit question (grouped, each loaded once).
        from routers.baselines import AllVoteRouter

        scheduler = GroupedScheduler(registry, ResidencyManager(registry, o.residency), dispatcher=self.dispatcher,
                                     progress=self._phase("fit"))
        run = await scheduler.run(AllVoteRouter(RouterContext(pool=pool, registry=registry)), fit_questions)
        outcomes = defaultdict(dict)
        for out in run.outcomes:
            for o_ in out.outputs:
                outcomes[o_.expert][out.query.question_id] = FitOutcome(
                    correct=o_.answer is not None and o_.answer == out.query.gold, answer=o_.answer, response=o_.text
                )
        return FitData(questions=fit_questions, outcomes=dict(outcomes), source="live expert runs")

    def _report(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def _phase(self, prefix: str) -> ProgressHook | None:
        if self.progress is None:
            return None
        hook = self.progress
        return lambda phase, done, total: hook(f"{prefix}:{phase}", done, total)

    # ------------------------------------------------------------------ run
    def prepare(self) -> BenchSplit:
        """The pool and the questions: evaluation queries, and fit queries disjoint from them."""
        o = self.opts
        self._report("prepare:load questions", 0, 1)
        test, val = self.load_questions()
        self._report("prepare:load questions", 1, 1)
        registry, pool, questions, pool_info = self.build_pool(test)
        exemplars: dict[str, list[Question]] = defaultdict(list)
        for v in val:
            exemplars[v.category].append(v)

        ids = [q.id for q in questions]
        if o.fit_recorded is not None and o.fit_recorded.resolve() != (o.recorded.resolve() if o.recorded else None):
            fit_ids, eval_ids = split_fit_eval(ids, o.fit_fraction, o.seed)
            split_note = f"fit on {o.fit_recorded} ids disjoint from the evaluated ids (seeded split {o.fit_fraction:.0%}/{1 - o.fit_fraction:.0%})"
        else:
            fit_ids, eval_ids = split_fit_eval(ids, o.fit_fraction, o.seed)
            split_note = f"seeded split by question id: {o.fit_fraction:.0%} fit / {1 - o.fit_fraction:.0%} evaluation (seed {o.seed})"
        assert not fit_ids & eval_ids
        eval_qs = [q for q in questions if q.id in eval_ids]
        fit_qs = [q for q in questions if q.id in fit_ids]
        rng = random.Random(o.seed)
        if o.limit is not None and o.limit < len(eval_qs):
            position = {q: i for i, q in enumerate(ids)}
            eval_qs = sorted(rng.sample(eval_qs, o.limit), key=lambda q: position[q.id])
        fit_limit = o.fit_limit if o.fit_limit is not None else (None if o.recorded else LIVE_FIT_DEFAULT)
        if fit_limit is not None and fit_limit < len(fit_qs):
            fit_qs = rng.sample(fit_qs, fit_limit)
        return BenchSplit(
            registry=registry, pool=pool, pool_info=pool_info, split_note=split_note,
            eval_queries=[question_query(q, self.prompt_for(q, exemplars), o.max_tokens) for q in eval_qs],
            fit_queries=[question_query(q, self.prompt_for(q, exemplars), o.max_tokens) for q in fit_qs],
        )

    async def run(self) -> dict[str, Any]:
        o = self.opts
        t_all = time.perf_counter()
        split = self.prepare()
        registry, pool = split.registry, split.pool
        run_id = o.run_id(pool)
        resumed = await self.store.start_bench_run(run_id, {"options": _jsonable(vars(o)), "pool": pool})
        async with Dispatcher(registry) as self.dispatcher:
            needs_fit = any(getattr(_router_cls(r), "needs_fit", False) or _has_fit(r) for r in o.routers)
            fit = (await self.fit_data(registry, pool, split.fit_queries)
                   if (needs_fit and split.fit_queries) else FitData([], {}, "none"))
            results: dict[str, RouterResult] = {}
            for name in o.routers:
                results[name] = await self._run_router(name, registry, pool, split.eval_queries, fit, run_id)
        self.dispatcher = None

        report = self._summarise(results, split.eval_queries, registry, pool, split.pool_info, split.split_note, fit, run_id, resumed)
        report["wall_s_total"] = round(time.perf_counter() - t_all, 2)
        await self.store.finish_bench_run(run_id, report)
        return report

    async def fit_router(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fit (and so store) one router on this run's fit questions: `orchestrator profile build`."""
        split = self.prepare()
        async with Dispatcher(split.registry) as self.dispatcher:
            data = await self.fit_data(split.registry, split.pool, split.fit_queries)
            ctx = RouterContext(pool=split.pool, registry=split.registry, dispatcher=self._caller(name), store=self.store,
                                seed=self.opts.seed, services=self.services)
            router = build_router(name, ctx, options or {})
            summary = await router.fit(data)
        self.dispatcher = None
        stored = await _stored_version(self.store, router)
        return {"router": name, "pool": split.pool, "fit_questions": len(split.fit_queries), "source": data.source,
                **(summary or {}), **({"stored": stored} if stored else {})}

    def _caller(self, step: str) -> Any:
        """The dispatcher as a router's own caller; with a progress hook, its calls are counted."""
        if self.progress is None:
            return self.dispatcher
        from orchestrator.progress import CountedCalls

        return CountedCalls(self.dispatcher, self.progress, step)

    async def _run_router(self, name: str, registry: ExpertRegistry, pool: list[str], queries: list[Query], fit: FitData, run_id: str) -> RouterResult:
        opts = dict(self.opts.router_options.get(name, {}))
        router_pool = opts.pop("pool", None) or pool
        caller = self._caller(name)
        ctx = RouterContext(pool=router_pool, registry=registry, dispatcher=caller, store=self.store,
                            seed=self.opts.seed, services=self.services)
        router = build_router(base_router_name(name), ctx, opts)
        fit_summary: dict[str, Any] = {}
        t_fit = time.perf_counter()
        if fit.questions:
            fit_summary = await router.fit(fit) or {}
        elif router.needs_fit:
            raise RoutingError(f"router {name!r} needs fit data, but the fit split is empty")
        fit_s = time.perf_counter() - t_fit
        if caller is not self.dispatcher:
            caller.what = "route calls"

        done = {i.question_id: i for i in await self.store.bench_items(run_id, name)}
        todo = [q for q in queries if q.question_id not in done]
        scheduler = GroupedScheduler(
            registry, ResidencyManager(registry, self.opts.residency if self.opts.recorded is None else len(registry)),
            dispatcher=self.dispatcher, progress=self._phase(name), keep_outputs=self.opts.recorded is None,
        )
        if self.progress and done:
            self.progress(f"{name}:resume", len(done), len(queries))
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            visible = chunk if router.uses_gold else [q.model_copy(update={"gold": None}) for q in chunk]
            t_chunk = time.perf_counter()
            run = await scheduler.run(router, visible)
            share = (time.perf_counter() - t_chunk) / max(len(chunk), 1)  # kept per item: a resumed run adds it up
            items = []
            for q, out in zip(chunk, run.outcomes, strict=True):
                expert_calls = [c for c in out.calls if c.role in ("expert", "callee")]  # callee: Router-R1's routed calls
                agg_calls = [c for c in out.calls if c.role == "aggregator"]
                items.append(
                    BenchItemRecord(
                        router=name, question_id=q.question_id or "", category=q.category or "", pred=out.final.answer,
                        correct=out.final.answer is not None and out.final.answer == q.gold,
                        detail={
                            "experts": [c.expert for c in expert_calls],
                            "expert_calls": len(expert_calls),
                            "aggregator_calls": len(agg_calls),
                            "errors": sum(1 for c in out.calls if c.error_kind),
                            "prompt_tokens": sum(c.prompt_tokens for c in out.calls),
                            "completion_tokens": sum(c.completion_tokens for c in out.calls),
                            "tokens_estimated": any(c.tokens_estimated for c in out.calls),
                            "cost_usd": sum(c.cost_usd for c in out.calls),
                            "method": out.final.method,
                            "wall_s": share,
                            **({"plan": out.plan.detail} if out.plan.detail and len(json.dumps(out.plan.detail, default=str)) < 2000 else {}),
                        },
                    )
                )
            await self.store.add_bench_items(run_id, items)
            if self.progress:
                self.progress(f"{name}:done", len(done) + start + len(chunk), len(queries))
        all_items = {i.question_id: i for i in await self.store.bench_items(run_id, name)}
        ordered = [all_items[q.question_id] for q in queries if q.question_id in all_items]
        # This session's fit, plus every item's share of the run that answered it (earlier
        # sessions' work included: a resumed run's wall time is not just what was left).
        wall = fit_s + sum(float(i.detail.get("wall_s", 0.0)) for i in ordered)
        return RouterResult(name=name, items=ordered, wall_s=wall, fit_summary=fit_summary)

    # ------------------------------------------------------------------ report
    def _summarise(self, results: dict[str, RouterResult], queries: list[Query], registry: ExpertRegistry, pool: list[str],
                   pool_info: dict[str, Any], split_note: str, fit: FitData, run_id: str, resumed: bool) -> dict[str, Any]:
        n = len(queries)
        routers: dict[str, Any] = {}
        for name, rr in results.items():
            items = rr.items
            correct = sum(i.correct for i in items)
            lo, hi = wilson_interval(correct, len(items))
            per_cat: dict[str, dict[str, Any]] = {}
            by_cat: dict[str, list[bool]] = defaultdict(list)
            for i in items:
                by_cat[i.category].append(i.correct)
            for cat in sorted(by_cat):
                per_cat[cat] = {"n": len(by_cat[cat]), "accuracy": round(sum(by_cat[cat]) / len(by_cat[cat]), 4)}
            usage = Counter(e for i in items for e in i.detail.get("experts", []))
            tokens = sum(i.detail.get("prompt_tokens", 0) + i.detail.get("completion_tokens", 0) for i in items)
            cost = sum(i.detail.get("cost_usd", 0.0) for i in items)
            m = max(len(items), 1)
            params = {e: registry.spec(e).params_b for e in registry.names}
            used = [params.get(e) for i in items for e in i.detail.get("experts", [])]
            avg_params = round(sum(p for p in used if p) / m, 3) if used and all(p is not None for p in used) else None
            routers[name] = {
                "accuracy": round(correct / m, 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "n": len(items),
                "correct": correct,
                "unparsed": sum(1 for i in items if i.pred is None),
                "expert_calls_per_question": round(sum(i.detail.get("expert_calls", 0) for i in items) / m, 3),
                "aggregator_calls_per_question": round(sum(i.detail.get("aggregator_calls", 0) for i in items) / m, 3),
                "errors": sum(i.detail.get("errors", 0) for i in items),
                "tokens": tokens,
                "tokens_estimated": any(i.detail.get("tokens_estimated") for i in items),
                "cost_usd": round(cost, 6),
                "cost_per_question_usd": round(cost / m, 8),
                "active_params_b_per_question": avg_params,
                "wall_s": round(rr.wall_s, 3),
                "per_category": per_cat,
                "expert_usage": dict(usage.most_common()),
                "fit": rr.fit_summary,
                **_category_stats(items),
                "upper_bound": base_router_name(name) == "oracle",
            }
        # Paired test between the two most accurate routers that are not upper bounds.
        ranked = sorted((r for r in routers if not routers[r]["upper_bound"]), key=lambda r: -routers[r]["accuracy"])
        paired: dict[str, Any] | None = None
        if len(ranked) >= 2:
            a, b = ranked[:2]
            ia = {i.question_id: i.correct for i in results[a].items}
            ib = {i.question_id: i.correct for i in results[b].items}
            common = [q for q in ia if q in ib]
            paired = {"a": a, "b": b, "n": len(common), "test": "exact McNemar (two-sided)",
                      **mcnemar_exact([ia[q] for q in common], [ib[q] for q in common])}
        return {
            "dataset": self.opts.dataset if self.opts.dataset != "gpqa" else f"gpqa-{self.opts.gpqa_subset}",
            "n_questions": n,
            "pool": pool,
            "fit": f"{split_note}; {fit.source}; {len(fit.questions)} fit questions",
            "prompt": "recorded 5-shot CoT outputs (TIGER-Lab format)" if self.opts.recorded else self.opts.prompt,
            "scoring": "a missing answer counts as wrong (no random guess)",
            "pool_info": pool_info,
            "prices_usd_per_mtok": {s.name: s.price_per_mtok.input for s in (registry.spec(p) for p in pool)},
            "params_b": {p: registry.spec(p).params_b for p in pool},
            "run_id": run_id,
            "resumed": resumed,
            "routers": routers,
            "paired_test": paired,
        }


def _category_stats(items: list[BenchItemRecord]) -> dict[str, Any]:
    """Routers that predict a category (CoE) get its accuracy against the dataset's labels."""
    pred = [(i.detail.get("plan", {}).get("predicted_category"), i.category, i.detail.get("plan", {}).get("fallback_used")) for i in items]
    pred = [p for p in pred if p[0] is not None]
    if not pred:
        return {}
    return {
        "classifier_accuracy": round(sum(p == c for p, c, _ in pred) / len(pred), 4),
        "fallback_rate": round(sum(bool(f) for _, _, f in pred) / len(pred), 4),
    }


async def _stored_version(store: Store, router: Any) -> dict[str, Any] | None:
    """The artefact a fit just stored (kind, name, version), for the closing line of `profile build`."""
    kind = getattr(router, "artefact_kind", None)
    if kind is None:
        return None
    rec = await store.load_artefact(kind, getattr(router, "artefact", "default"))
    return {"kind": kind, "name": rec.name, "version": rec.version} if rec else None


def base_router_name(label: str) -> str:
    """`symbolic-moe@topk` → `symbolic-moe`: one method compared in several configurations."""
    return label.split("@", 1)[0]


def _router_cls(name: str):  # type: ignore[no-untyped-def]
    from routers.registry import router_class

    return router_class(base_router_name(name))


def _has_fit(name: str) -> bool:
    from routers.base import Router

    return _router_cls(name).fit is not Router.fit


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


async def run_benchmark(opts: BenchOptions, store: Store, *, registry: ExpertRegistry | None = None,
                        progress: ProgressHook | None = None) -> dict[str, Any]:
    report = await BenchmarkRunner(opts, store, registry=registry, progress=progress).run()
    if opts.out is not None:
        from orchestrator.bench.report import write_reports

        write_reports(report, opts.out)
    return report


__all__ = ["BenchOptions", "BenchmarkRunner", "ExpertSpec", "run_benchmark", "split_fit_eval"]
