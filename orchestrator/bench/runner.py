"""The benchmark runner: several routers, one pool, the same questions, in grouped batch mode.

    report = await run_benchmark(BenchOptions(dataset="mmlu-pro", recorded=Path(...), routers=[...]))

Recorded mode replays real model outputs (no GPU); live mode runs registered experts. Fit data
(profiles, classifiers, best-single) is kept disjoint from evaluation data by question id.
Outcomes are written to the store chunk by chunk under a run id derived from the options, so a
killed run continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experts.backends.recorded import RecordedRow
from experts.errors import ConfigError
from experts.registry import ExpertRegistry
from experts.spec import ExpertSpec
from evals import recorded_pool
from evals.datasets import Question
from evals.metrics import mcnemar_exact, wilson_interval
from evals.splits import split_fit_eval
from orchestrator.dispatcher import Dispatcher
from orchestrator.execution import GroupEngine
from orchestrator.memo import GenerationMemo
from orchestrator.residency import ResidencyManager
from orchestrator.scheduler import GroupedScheduler
from routers.base import Router
from routers.types import FitData, FitOutcome, Query, QueryOutcome, RouterContext, RoutingError
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
    # Where expert groups run: "in-process", or "ray" (one Ray actor per expert at `ray_address`;
    # None: a local Ray instance). Not part of the run id: both give the same results.
    engine: str = "in-process"
    ray_address: str | None = None
    embedder: str | None = None  # routers' embedding backend (None: ORCHESTRATOR_EMBEDDER, else torch)

    def run_id(self, pool: list[str]) -> str:
        key = {
            "dataset": self.dataset, "recorded": str(self.recorded) if self.recorded else None,
            "fit_recorded": str(self.fit_recorded) if self.fit_recorded else None, "pool": pool,
            "data": str(self.data) if self.data else None, "limit": self.limit, "seed": self.seed,
            "fit_fraction": self.fit_fraction, "fit_limit": self.fit_limit, "prompt": self.prompt,
            "max_tokens": self.max_tokens, "gpqa_subset": self.gpqa_subset, "router_options": self.router_options,
            **({"embedder": self.embedder} if self.embedder else {}),
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
    fit_dir: Path | None = None  # the recorded directory the fit outcomes come from (None: live runs)


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


def recorded_query(q: recorded_pool.RecordedQuery, max_tokens: int) -> Query:
    """A query of the generic outcomes format: no gold answer; each output is scored by its
    recorded `score` (metadata `scoring="outcomes"` tells the oracle so)."""
    return Query(text=q.text, choices=q.choices, question_id=q.question_id, category=q.category, max_tokens=max_tokens,
                 metadata={"scoring": "outcomes"})


class BenchmarkRunner:
    def __init__(self, opts: BenchOptions, store: Store, *, registry: ExpertRegistry | None = None, progress: ProgressHook | None = None,
                 engine: GroupEngine | None = None) -> None:
        self.opts = opts
        self.engine = engine  # set: expert groups run there (else `opts.engine` decides, in `run`)
        self.store = store
        self.live_registry = registry
        self.progress = progress
        self.notes: list[str] = []
        self.dispatcher: Dispatcher | None = None  # one per run, over the run's registry (set in `run`)
        self.services: dict[str, Any] = {"embedder_backend": opts.embedder}  # heavy helpers shared by every router of the run (the embedder)
        self._eval_dir: Path | None = None  # set by `prepare` for recorded runs: where outputs are scored
        self._tables: dict[str, dict[str, RecordedRow]] = {}  # that directory's rows per expert (set per router run)

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
        """The registry and pool; with recorded outputs, the dataset questions every pool model
        covers (MMLU-Pro layout) and what the directory holds."""
        o = self.opts
        if o.recorded is not None:
            directory = o.recorded.resolve()
            pool = recorded_pool.resolve_pool(directory, self._named(o.pool))
            registry = ExpertRegistry.from_specs(recorded_pool.recorded_specs(directory, pool))
            info: dict[str, Any] = {"mode": "recorded", "directory": str(directory), "layout": recorded_pool.layout(directory),
                                    "price_sources": recorded_pool.price_sources(directory, pool)}
            if info["layout"] == "outcomes":
                info["answers"] = "each output's recorded score (partial scores averaged); a vote groups outputs by `pred`"
                return registry, pool, questions, info
            for i, m in enumerate(pool):  # read each model's table once, visibly (seconds per model)
                registry.recorded_library.table(directory, m)
                self._report(f"prepare:read recorded outputs:{m}", i + 1, len(pool))
            ids = [q.id for q in questions]
            cov = recorded_pool.coverage(registry.recorded_library, directory, pool, ids)
            covered = set(recorded_pool.covered_ids(registry.recorded_library, directory, pool, ids))
            kept = [q for q in questions if q.id in covered]
            info.update({
                "questions_in_dataset": cov.questions, "covered_by_every_model": cov.covered_by_all, "per_model": cov.per_model,
                "answers": "each run's own parsed letter (`pred`); no answer counts as wrong",
            })
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

    def _fit_ids(self, fit_dir: Path, registry: ExpertRegistry, pool: list[str], candidates: list[str]) -> list[str]:
        """The candidate ids every pool model has a recorded outcome for in `fit_dir`; refuses a
        directory that lacks a pool model or covers none of them."""
        try:
            available = set(recorded_pool.resolve_pool(fit_dir, None))
        except ConfigError as e:
            raise ConfigError(f"--fit-recorded {fit_dir}: {e}") from None
        missing = [m for m in pool if m not in available]
        if missing:
            raise ConfigError(f"--fit-recorded {fit_dir}: no recorded outcomes for pool model(s) {', '.join(missing)}; "
                              f"it has {', '.join(sorted(available))}")
        ids = recorded_pool.covered_ids(registry.recorded_library, fit_dir, pool, candidates)
        if not ids:
            raise ConfigError(f"--fit-recorded {fit_dir}: covers none of the pool's questions "
                              f"(no question has an outcome of every pool model: {', '.join(pool)})")
        return ids

    async def fit_data(self, registry: ExpertRegistry, pool: list[str], fit_questions: list[Query], fit_dir: Path | None = None) -> FitData:
        o = self.opts
        directory = fit_dir or (o.fit_recorded or o.recorded)
        if directory is not None:
            directory = directory.resolve()
            outcomes: dict[str, dict[str, FitOutcome]] = {}
            for i, m in enumerate(pool):
                table = registry.recorded_library.table(directory, m)
                outcomes[m] = {
                    q.question_id: FitOutcome(correct=(r := table[q.question_id]).correct, answer=r.pred, response=r.response,
                                              score=r.score, cost_usd=r.cost_usd)
                    for q in fit_questions if q.question_id in table
                }
                if fit_questions and not outcomes[m]:
                    raise RoutingError(f"fit data: {directory} has no outcome of {m!r} for any of the {len(fit_questions)} fit questions")
                self._report(f"fit:read recorded outputs:{m}", i + 1, len(pool))
            return FitData(questions=fit_questions, outcomes=outcomes, source=f"recorded outputs in {directory}")
        # Live: every pool expert answers every fit question (grouped, each loaded once).
        from routers.baselines import AllVoteRouter

        scheduler = GroupedScheduler(registry, ResidencyManager(registry, o.residency), dispatcher=self.dispatcher,
                                     progress=self._phase("fit"), engine=self.engine)
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
        """The pool, the evaluation queries and the fit queries, disjoint by question id.

        * `--fit-recorded B` (a directory other than `--recorded A`): fit on every question B
          covers (an outcome of every pool model), evaluate on every question A covers; refused
          when the two share a question id or B covers none of the pool's questions.
        * one directory in the generic format whose queries carry `split`: train fits, test evaluates.
        * otherwise: the seeded split by question id (`fit_fraction`, `seed`).
        """
        o = self.opts
        eval_dir = o.recorded.resolve() if o.recorded is not None else None
        fit_dir = o.fit_recorded.resolve() if o.fit_recorded is not None else None
        separate = fit_dir is not None and fit_dir != eval_dir
        self._eval_dir = eval_dir
        generic = eval_dir is not None and recorded_pool.layout(eval_dir) == "outcomes"
        if fit_dir is not None and separate and (recorded_pool.layout(fit_dir) == "outcomes") != generic:
            raise ConfigError(f"--fit-recorded {fit_dir} and --recorded {eval_dir} use different layouts "
                              "(one is the generic outcomes format, the other MMLU-Pro's responses/)")

        # Every candidate question, as (id, query) in dataset order.
        if generic:
            assert eval_dir is not None
            registry, pool, _, pool_info = self.build_pool([])
            rows = recorded_pool.load_queries(eval_dir)
            by_id = {q.question_id: q for q in rows}
            eval_ids = recorded_pool.covered_ids(registry.recorded_library, eval_dir, pool, list(by_id))
            pool_info.update({"queries": len(rows), "covered_by_every_model": len(eval_ids)})
            if not eval_ids:
                raise ConfigError(f"{eval_dir}: no query has an outcome of every pool model ({', '.join(pool)})")
            queries = {i: recorded_query(by_id[i], o.max_tokens) for i in eval_ids}
            fit_queries: dict[str, Query] = {}
            if separate:
                assert fit_dir is not None
                fit_rows = {q.question_id: q for q in recorded_pool.load_queries(fit_dir)}
                fit_queries = {i: recorded_query(fit_rows[i], o.max_tokens) for i in self._fit_ids(fit_dir, registry, pool, list(fit_rows))}
            splits = {by_id[i].split for i in eval_ids}
        else:
            self._report("prepare:load questions", 0, 1)
            test, val = self.load_questions()
            self._report("prepare:load questions", 1, 1)
            registry, pool, questions, pool_info = self.build_pool(test)
            exemplars: dict[str, list[Question]] = defaultdict(list)
            for v in val:
                exemplars[v.category].append(v)
            queries = {q.id: question_query(q, self.prompt_for(q, exemplars), o.max_tokens) for q in questions}
            fit_queries = {}
            if separate:
                assert fit_dir is not None
                by_id = {q.id: q for q in test}
                fit_queries = {i: question_query(by_id[i], self.prompt_for(by_id[i], exemplars), o.max_tokens)
                               for i in self._fit_ids(fit_dir, registry, pool, list(by_id))}
            splits = {None}
        eval_ids = list(queries)

        if separate:
            shared = set(fit_queries) & set(queries)
            if shared:
                raise ConfigError(
                    f"--fit-recorded {fit_dir} and --recorded {eval_dir or '(live)'} share {len(shared)} question id(s) "
                    f"(of {len(fit_queries)} fit and {len(queries)} evaluated): fit and evaluation questions must be "
                    "disjoint; build disjoint directories with `orchestrator recorded split`"
                )
            fit_ids, eval_set = list(fit_queries), eval_ids
            split_note = (f"fit on every question {fit_dir} covers ({len(fit_ids)}), evaluated on every question "
                          f"{eval_dir or 'the live pool answers'} covers ({len(eval_set)}); no shared question id")
            fit_qs = [fit_queries[i] for i in fit_ids]
        elif generic and splits != {None}:
            split_of = {q.question_id: q.split for q in rows}
            fit_ids = [i for i in eval_ids if split_of[i] == "train"]
            eval_set = [i for i in eval_ids if split_of[i] == "test"]
            split_note = f"the queries' own split: {len(fit_ids)} train (fit) / {len(eval_set)} test (evaluation)"
            fit_qs = [queries[i] for i in fit_ids]
        else:
            fit_set, eval_side = split_fit_eval(eval_ids, o.fit_fraction, o.seed)
            fit_qs = [queries[i] for i in eval_ids if i in fit_set]
            eval_set = [i for i in eval_ids if i in eval_side]
            split_note = (f"seeded split by question id: {o.fit_fraction:.0%} fit / {1 - o.fit_fraction:.0%} evaluation "
                          f"(seed {o.seed})")
        eval_qs = [queries[i] for i in eval_set]
        assert not {q.question_id for q in fit_qs} & {q.question_id for q in eval_qs}
        rng = random.Random(o.seed)
        if o.limit is not None and o.limit < len(eval_qs):
            position = {q.question_id: i for i, q in enumerate(eval_qs)}
            eval_qs = sorted(rng.sample(eval_qs, o.limit), key=lambda q: position[q.question_id])
        fit_limit = o.fit_limit if o.fit_limit is not None else (None if (o.recorded or o.fit_recorded) else LIVE_FIT_DEFAULT)
        if fit_limit is not None and fit_limit < len(fit_qs):
            fit_qs = rng.sample(fit_qs, fit_limit)
        return BenchSplit(
            registry=registry, pool=pool, pool_info=pool_info, split_note=split_note, eval_queries=eval_qs, fit_queries=fit_qs,
            fit_dir=fit_dir if separate else eval_dir,
        )

    async def run(self) -> dict[str, Any]:
        o = self.opts
        t_all = time.perf_counter()
        split = self.prepare()
        registry, pool = split.registry, split.pool
        run_id = o.run_id(pool)
        resumed = await self.store.start_bench_run(run_id, {"options": _jsonable(vars(o)), "pool": pool})
        # Live: a generation one router already made (same expert, same request, temperature 0)
        # is reused by the next, not generated again. Recorded replays cost nothing to repeat.
        memo = GenerationMemo() if o.recorded is None else None
        async with Dispatcher(registry, memo=memo) as self.dispatcher, self._engine():
            needs_fit = any(getattr(_router_cls(r), "needs_fit", False) or _has_fit(r) for r in o.routers)
            fit = (await self.fit_data(registry, pool, split.fit_queries, split.fit_dir)
                   if (needs_fit and split.fit_queries) else FitData([], {}, "none"))
            results: dict[str, RouterResult] = {}
            for name in o.routers:
                results[name] = await self._run_router(name, registry, pool, split.eval_queries, fit, run_id)
        self.dispatcher = None

        report = self._summarise(results, split.eval_queries, registry, pool, split.pool_info, split.split_note, fit, run_id, resumed)
        report["wall_s_total"] = round(time.perf_counter() - t_all, 2)
        if memo is not None:
            report["generation_memo"] = {"reused": memo.hits, "generated": memo.misses}
        await self.store.finish_bench_run(run_id, report)
        return report

    async def fit_router(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fit (and so store) one router on this run's fit questions: `orchestrator profile build`."""
        split = self.prepare()
        if not split.fit_queries:
            raise RoutingError(f"router {name!r}: no fit questions (the fit split is empty)")
        async with Dispatcher(split.registry) as self.dispatcher:
            data = await self.fit_data(split.registry, split.pool, split.fit_queries, split.fit_dir)
            ctx = RouterContext(pool=split.pool, registry=split.registry, dispatcher=self._caller(name), store=self.store,
                                seed=self.opts.seed, services=self.services, progress=self._phase(name))
            router = build_router(name, ctx, options or {})
            summary = await router.fit(data)
        self.dispatcher = None
        stored = await _stored_version(self.store, router)
        return {"router": name, "pool": split.pool, "fit_questions": len(split.fit_queries), "split": split.split_note,
                "source": data.source, **(summary or {}), **({"stored": stored} if stored else {})}

    @contextlib.asynccontextmanager
    async def _engine(self) -> AsyncIterator[None]:
        """The run is one job of the engine (each model loaded once for all its phases and
        routers); `opts.engine == "ray"` and no engine given: a RayEngine for the run, closed after it."""
        given = self.engine
        if given is None and self.opts.engine == "in-process":
            yield
            return
        async with contextlib.AsyncExitStack() as stack:
            if given is None:
                if self.opts.engine != "ray":
                    raise ValueError(f"unknown engine {self.opts.engine!r}: in-process or ray")
                from orchestrator.ray_engine import RayEngine

                outer: GroupEngine = stack.enter_context(RayEngine.connect(self.opts.ray_address))
            else:
                outer = given
            self.engine = stack.enter_context(outer.job())
            try:
                yield
            finally:
                self.engine = given

    def _caller(self, step: str) -> Any:
        """The dispatcher as a router's own caller; with a progress hook, its calls are counted."""
        if self.progress is None:
            return self.dispatcher
        from orchestrator.progress import CountedCalls

        return CountedCalls(self.dispatcher, self.progress, step)

    def _score(self, router: Router, query: Query, outcome: QueryOutcome) -> float:
        """The outcome's score: 1/0 for the answer against the key, or, in the generic format,
        the recorded score of the output the answer came from (an upper bound: the best output)."""
        if query.gold is not None or self._eval_dir is None or recorded_pool.layout(self._eval_dir) != "outcomes":
            return float(outcome.final.answer is not None and outcome.final.answer == query.gold)
        table = self._tables.__getitem__  # the evaluated directory's rows, per expert
        qid = query.question_id or ""
        oks = [o for o in outcome.outputs if o.ok]
        if router.uses_gold:
            return max((table(o.expert)[qid].score for o in oks if qid in table(o.expert)), default=0.0)
        final = outcome.final
        rep = final.detail.get("representative") or final.detail.get("expert") or final.detail.get("by")
        if rep is None:
            rep = next((o.expert for o in oks if final.answer is not None and o.answer == final.answer), None)
        if rep is None or qid not in table(rep):
            return 0.0
        return table(rep)[qid].score

    async def _run_router(self, name: str, registry: ExpertRegistry, pool: list[str], queries: list[Query], fit: FitData, run_id: str) -> RouterResult:
        opts = dict(self.opts.router_options.get(name, {}))
        router_pool = opts.pop("pool", None) or pool
        caller = self._caller(name)
        ctx = RouterContext(pool=router_pool, registry=registry, dispatcher=caller, store=self.store,
                            seed=self.opts.seed, services=self.services, progress=self._phase(name))
        router = build_router(base_router_name(name), ctx, opts)
        if self._eval_dir is not None:
            self._tables = {e: registry.recorded_library.table(self._eval_dir, registry.spec(e).model) for e in registry.names
                            if registry.spec(e).backend == "recorded"}  # not a policy model a router registered (Router-R1)
        fit_summary: dict[str, Any] = {}
        t_fit = time.perf_counter()
        if router.needs_fit and not fit.questions:
            raise RoutingError(f"router {name!r} needs fit data, but there are no fit questions ({self.opts.fit_recorded or 'fit split'} is empty)")
        if fit.questions:
            fit_summary = await router.fit(fit) or {}
        fit_s = time.perf_counter() - t_fit
        if caller is not self.dispatcher:
            caller.what = "route calls"

        done = {i.question_id: i for i in await self.store.bench_items(run_id, name)}
        todo = [q for q in queries if q.question_id not in done]
        scheduler = GroupedScheduler(
            registry, ResidencyManager(registry, self.opts.residency if self.opts.recorded is None else len(registry)),
            dispatcher=self.dispatcher, progress=self._phase(name), keep_outputs=self.opts.recorded is None, engine=self.engine,
        )
        known_cost = self._known_cost_experts(registry)
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
                score = self._score(router, q, out)
                items.append(
                    BenchItemRecord(
                        router=name, question_id=q.question_id or "", category=q.category or "", pred=out.final.answer,
                        correct=score >= 0.5,
                        detail={
                            "score": score,
                            "experts": [c.expert for c in expert_calls],
                            "expert_calls": len(expert_calls),
                            "aggregator_calls": len(agg_calls),
                            "errors": sum(1 for c in out.calls if c.error_kind),
                            "prompt_tokens": sum(c.prompt_tokens for c in out.calls),
                            "completion_tokens": sum(c.completion_tokens for c in out.calls),
                            "tokens_estimated": any(c.tokens_estimated for c in out.calls),
                            "cost_usd": sum(c.cost_usd for c in out.calls),
                            "cost_known": all(not c.tokens_estimated or c.expert in known_cost for c in out.calls),
                            "price_units": sum(_price_units(registry, c.expert) for c in out.calls),
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

    def _known_cost_experts(self, registry: ExpertRegistry) -> set[str]:
        """Recorded experts whose every evaluated row carries a dollar cost (their calls' costs are
        known even though their token counts are estimated)."""
        if self._eval_dir is None:
            return set()
        return {e for e, t in self._tables.items() if t and all(r.cost_usd is not None for r in t.values())}

    # ------------------------------------------------------------------ report
    def _summarise(self, results: dict[str, RouterResult], queries: list[Query], registry: ExpertRegistry, pool: list[str],
                   pool_info: dict[str, Any], split_note: str, fit: FitData, run_id: str, resumed: bool) -> dict[str, Any]:
        n = len(queries)
        usd = all(i.detail.get("cost_known", False) for rr in results.values() for i in rr.items)
        routers: dict[str, Any] = {}
        for name, rr in results.items():
            items = rr.items
            scores = [_item_score(i) for i in items]
            m = max(len(items), 1)
            mean = sum(scores) / m
            lo, hi = score_interval(scores)
            per_cat: dict[str, dict[str, Any]] = {}
            by_cat: dict[str, list[float]] = defaultdict(list)
            for i, sc in zip(items, scores, strict=True):
                by_cat[i.category].append(sc)
            for cat in sorted(by_cat):
                per_cat[cat] = {"n": len(by_cat[cat]), "accuracy": round(sum(by_cat[cat]) / len(by_cat[cat]), 4)}
            usage = Counter(e for i in items for e in i.detail.get("experts", []))
            tokens = sum(i.detail.get("prompt_tokens", 0) + i.detail.get("completion_tokens", 0) for i in items)
            params = {e: registry.spec(e).params_b for e in registry.names}
            used = [params.get(e) for i in items for e in i.detail.get("experts", [])]
            avg_params = round(sum(p for p in used if p) / m, 3) if used and all(p is not None for p in used) else None
            if usd:
                cost = sum(i.detail.get("cost_usd", 0.0) for i in items)
                cost_fields = {"cost_usd": round(cost, 6), "cost_per_question_usd": round(cost / m, 8)}
            else:
                units = sum(i.detail.get("price_units", 0.0) for i in items)
                cost_fields = {"cost_units": round(units, 4), "cost_units_per_question": round(units / m, 6)}
            routers[name] = {
                "accuracy": round(mean, 4),
                "ci95": [round(lo, 4), round(hi, 4)],
                "n": len(items),
                "correct": sum(i.correct for i in items),
                "unparsed": sum(1 for i in items if i.pred is None),
                "expert_calls_per_question": round(sum(i.detail.get("expert_calls", 0) for i in items) / m, 3),
                "aggregator_calls_per_question": round(sum(i.detail.get("aggregator_calls", 0) for i in items) / m, 3),
                "errors": sum(i.detail.get("errors", 0) for i in items),
                "tokens": tokens,
                "tokens_estimated": any(i.detail.get("tokens_estimated") for i in items),
                **cost_fields,
                "cost_per_question": cost_fields.get("cost_per_question_usd", cost_fields.get("cost_units_per_question")),
                "active_params_b_per_question": avg_params,
                "wall_s": round(rr.wall_s, 3),
                "per_category": per_cat,
                "expert_usage": dict(usage.most_common()),
                "fit": rr.fit_summary,
                **_category_stats(items),
                "upper_bound": base_router_name(name) == "oracle",
            }
        # Paired tests: the two most accurate routers that are not upper bounds, and the best router
        # at ≤ 3 expert calls per question against all-vote.
        ranked = sorted((r for r in routers if not routers[r]["upper_bound"]), key=lambda r: -routers[r]["accuracy"])
        paired = _paired(results, *ranked[:2]) if len(ranked) >= 2 else None
        vote = next((r for r in ranked if base_router_name(r) == "all-vote"), None)
        at3 = next((r for r in ranked if routers[r]["expert_calls_per_question"] <= 3.0 and r != vote), None)
        binary = all(s in (0.0, 1.0) for rr in results.values() for s in map(_item_score, rr.items))
        return {
            "dataset": self._dataset_name(pool_info),
            "n_questions": n,
            "eval_questions": n,
            "fit_questions": len(fit.questions),
            "pool": pool,
            "fit": f"{split_note}; {fit.source}; {len(fit.questions)} fit questions, {n} evaluated",
            "prompt": self._prompt_note(pool_info),
            "scoring": ("a missing answer counts as wrong (no random guess)" if binary
                        else "mean recorded score of the answering output (partial scores averaged)"),
            "pool_info": pool_info,
            "cost_axis": "usd" if usd else "price_units",
            "cost_note": ("USD per question, from logged costs or real token counts" if usd else
                          "price units per question: the sum of the called experts' prices in USD per Mtok (token counts are "
                          "not known, so this is not a dollar cost)"),
            "prices_usd_per_mtok": {s.name: s.price_per_mtok.input for s in (registry.spec(p) for p in pool)},
            "params_b": {p: registry.spec(p).params_b for p in pool},
            "run_id": run_id,
            "resumed": resumed,
            "routers": routers,
            "paired_test": paired,
            "paired_test_best_at_3_vs_all_vote": _paired(results, at3, vote) if at3 and vote else None,
        }

    def _dataset_name(self, pool_info: dict[str, Any]) -> str:
        if pool_info.get("layout") == "outcomes":
            return f"outcomes:{Path(pool_info['directory']).name}"
        return self.opts.dataset if self.opts.dataset != "gpqa" else f"gpqa-{self.opts.gpqa_subset}"

    def _prompt_note(self, pool_info: dict[str, Any]) -> str:
        if pool_info.get("layout") == "outcomes":
            return "recorded outcomes (the prompts of their own runs)"
        return "recorded 5-shot CoT outputs (TIGER-Lab format)" if self.opts.recorded else self.opts.prompt


def _item_score(item: BenchItemRecord) -> float:
    return float(item.detail.get("score", float(item.correct)))


def score_interval(scores: list[float]) -> tuple[float, float]:
    """95% interval of a mean score: Wilson for right/wrong scores, else a normal interval."""
    n = len(scores)
    if n == 0:
        return (0.0, 0.0)
    if all(s in (0.0, 1.0) for s in scores):
        return wilson_interval(int(sum(scores)), n)
    mean = sum(scores) / n
    sd = (sum((s - mean) ** 2 for s in scores) / max(n - 1, 1)) ** 0.5
    half = 1.959964 * sd / n**0.5
    return (max(0.0, mean - half), min(1.0, mean + half))


def _paired(results: dict[str, RouterResult], a: str, b: str) -> dict[str, Any]:
    """Paired test of routers a and b on their shared questions: exact McNemar on right/wrong
    scores, a paired t-test on partial scores."""
    ia = {i.question_id: _item_score(i) for i in results[a].items}
    ib = {i.question_id: _item_score(i) for i in results[b].items}
    common = [q for q in ia if q in ib]
    xa, xb = [ia[q] for q in common], [ib[q] for q in common]
    if all(x in (0.0, 1.0) for x in xa + xb):
        return {"a": a, "b": b, "n": len(common), "test": "exact McNemar (two-sided)",
                **mcnemar_exact([x == 1.0 for x in xa], [x == 1.0 for x in xb])}
    from scipy.stats import ttest_rel

    p = float(ttest_rel(xa, xb).pvalue) if len(common) > 1 and xa != xb else 1.0
    return {"a": a, "b": b, "n": len(common), "test": "paired t-test (two-sided)", "a_only": sum(x > y for x, y in zip(xa, xb)),
            "b_only": sum(y > x for x, y in zip(xa, xb)), "p_value": p}


def _price_units(registry: ExpertRegistry, expert: str) -> float:
    """One call's price units: the expert's mean of input and output USD per Mtok."""
    try:
        price = registry.spec(expert).price_per_mtok
    except KeyError:
        return 0.0
    return (price.input + price.output) / 2


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
                        progress: ProgressHook | None = None, engine: GroupEngine | None = None) -> dict[str, Any]:
    report = await BenchmarkRunner(opts, store, registry=registry, progress=progress, engine=engine).run()
    if opts.out is not None:
        from orchestrator.bench.report import write_reports

        write_reports(report, opts.out)
    return report


__all__ = ["BenchOptions", "BenchmarkRunner", "ExpertSpec", "run_benchmark", "split_fit_eval"]
