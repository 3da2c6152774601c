"""Symbolic-MoE (Chen et al., arXiv 2503.05641): skill-based recruiting of k experts, then an
aggregator. Method as in `shared/reference/symbolic-moe-coe-routellm.md` §1.

Pipeline: tag fit questions with skill keywords → per-model ±1 keyword profiles → global prior
(shift, square, normalise) → per query: map its keywords to the nearest profile keywords
(MiniLM cosine), local score Σ P_m[k], keep positive scores, weight by the prior, draw k=3 with
replacement → experts answer (grouped batch inference) → aggregator synthesises.

Deliberate deviations (each one an option, the reference behaviour is the default where it can run):
* Tagger. The paper's keyword LLM (Qwen2.5-7B, 5 samples at T=0.7, kept if seen ≥2 times,
  ≤20 characters) is `tagger="llm"`, the default (`tagger="auto"`) when the pool has live
  experts (the keyword LLM is `keyword_expert`, else the pool's first expert) unless that model is
  known to be smaller than `MIN_KEYWORD_LLM_PARAMS_B` (1B): SmolLM2-135M, sampled as the paper
  says, gave no keyword at all for 9 of 20 MMLU-Pro questions and mostly the prompt's example skills
  for the rest, and its 100 samples took 11 minutes on 2 CPU cores. With no keyword LLM (recorded experts,
  or a tiny one) `auto` means `tagger="embedding"`: a question's 3 nearest skills of a
  built-in vocabulary (`vocabulary.py`) by MiniLM similarity; profiles are built over that
  vocabulary. Reports name the tagger.
* Aggregation. The paper picks one aggregator model per task with a synthetic 1-right/2-wrong
  benchmark over the whole validation set, every model sampled at T=0.7; we do the same (on all
  fit questions unless `aggregator_fit_limit` caps it, at `temperature`) when the pool has live
  experts, and the chosen aggregator synthesises at `temperature` too. Recorded experts cannot
  synthesise new text, so with a recorded pool the default is a majority vote over the recruited
  answers (reported as such); `aggregation="weighted-vote"` weights each vote by its recruiting weight.
* Duplicates. Drawing with replacement can recruit one model 2–3 times; live experts then give
  independent samples at T=0.7 as in the paper, recorded experts replay the same answer, which
  simply counts once per draw in the vote.
* `mode="topk"` (k distinct highest-weight experts) is an added deterministic variant.
* `mode="accuracy"` (extension, `profiles.py`): rank experts by their accuracy on the fit items of the
  query's skills, read off the same ±1 profile (right = (n_k + P[k]) / 2), Laplace-smoothed or,
  with `shrinkage` > 0, shrunk toward the expert's global fit accuracy with that many
  pseudo-items; take the k best, distinct, strongest first (it wins a tied vote). The paper's L·g weight mixes a
  count (L grows with how often a skill occurs) with a squared global prior; an accuracy estimate
  compares experts on one scale and does not let rare skills decide alone. In fit-split
  cross-validation (benchmarks/results/mmlu-pro-symbolic-moe/cv.md) it was the best 3-call variant.
* `vote_weights="log-odds"` weights each recruit's vote by log((K−1)·p/(1−p)) with p its skill
  accuracy (Laplace-smoothed, or shrunk when `shrinkage` > 0): the weighted-majority rule for
  independent voters of known accuracy. It is a weighted vote: with `aggregation="auto"` it
  selects `weighted-vote`, and any other aggregation with it is refused.
* Skill accuracy counts, per expert, only the fit items it has an outcome for (an item it never
  answered is neither right nor wrong).
* Unanswered fit items (`unanswered="impute"`, the default). The reference fits on every model's
  answer to every item; fitted from traffic, a model has outcomes only where it was recruited, and
  a raw ±1 sum then measures how often it was called as much as how good it is (the recruited
  grow, the rest stay at 0 and, keeping positive L only, are never drawn again). Before L and g,
  each unanswered item is filled with its expected ±1 under the model's shrunk skill accuracy
  (`profiles.impute_profiles`, `impute_strength` pseudo-items). With every item answered (any
  offline fit on complete outcomes) nothing changes; `unanswered="zero"` is the raw sums.

The scoring function is `score_skills`; `FittedRouter` turns its scores into plans, except that
`sample` draws its k recruits (`select`).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experts.spec import BackendKind
from experts.types import GenerationRequest
from evals.answers import extract_choice
from evals.prompts import aggregator_prompt
from routers.embeddings import shared_embedder
from routers.fitted import ExpertScores, FittedRouter, top_k
from routers.symbolic_moe import profiles as prof
from routers.symbolic_moe.keywords import EmbeddingTagger, LLMKeywordTagger, question_key
from routers.symbolic_moe.vocabulary import SKILLS
from routers.types import FIT_EMBED_PHASE, Aggregation, FitData, Plan, Query, RouterContext, RoutingError

AGGREGATIONS = ("auto", "vote", "weighted-vote", "llm")
MODES = ("sample", "topk", "accuracy")
UNANSWERED = ("impute", "zero")  # how a fit item a model has no outcome on enters its recruiting profile
# Below this size a keyword LLM is not worth its samples (see the module docstring); `auto` embeds.
MIN_KEYWORD_LLM_PARAMS_B = 1.0


@dataclass(frozen=True)
class SkillScores(ExpertScores):
    """Scores from a query's skills: `mapped` are its keywords mapped onto the profile keywords
    (empty: it has none), `local` each expert's local score L_m."""

    mapped: list[str] = field(default_factory=list)
    local: dict[str, float] = field(default_factory=dict)


class SymbolicMoERouter(FittedRouter[SkillScores]):
    name = "symbolic-moe"
    description = "skill-based recruiting of k experts (Symbolic-MoE), then aggregation"
    fit_hint = "run `orchestrator profile build` or `orchestrator bench`"
    artefact_kind = "symbolic-moe-profile"
    cold_start = True  # learns from traffic: routes on a uniform prior until its first fit
    counts_labels = True  # exploration may pick the expert with the fewest fit outcomes on the query's skills

    def __init__(
        self,
        ctx: RouterContext,
        *,
        k: int = 3,
        mode: str = "sample",
        tagger: str = "auto",
        keyword_expert: str | None = None,
        skills_per_question: int = 3,
        aggregation: str = "auto",
        aggregator: str | None = None,
        aggregator_fit_limit: int | None = None,
        vote_weights: str = "recruit",
        temperature: float = 0.7,
        shrinkage: float = 0.0,
        unanswered: str = "impute",
        impute_strength: float = prof.IMPUTE_STRENGTH,
        **options: Any,
    ) -> None:
        super().__init__(ctx, **options)
        if k < 1:
            raise RoutingError(f"router 'symbolic-moe': k must be at least 1, got {k}")
        if mode not in MODES:
            raise RoutingError(f"router 'symbolic-moe': mode must be one of {', '.join(MODES)}, got {mode!r}")
        if shrinkage < 0:
            raise RoutingError(f"router 'symbolic-moe': shrinkage must be ≥ 0, got {shrinkage}")
        if unanswered not in UNANSWERED:
            raise RoutingError(f"router 'symbolic-moe': unanswered must be one of {', '.join(UNANSWERED)}, got {unanswered!r}")
        if impute_strength <= 0:
            raise RoutingError(f"router 'symbolic-moe': impute_strength (pseudo-items) must be > 0, got {impute_strength}")
        if tagger not in ("auto", "embedding", "llm"):
            raise RoutingError(f"router 'symbolic-moe': tagger must be 'auto', 'embedding' or 'llm', got {tagger!r}")
        if aggregator_fit_limit is not None and aggregator_fit_limit < 1:
            raise RoutingError(f"router 'symbolic-moe': aggregator_fit_limit must be ≥ 1 (or unset: all fit questions), got {aggregator_fit_limit}")
        if aggregation not in AGGREGATIONS:
            raise RoutingError(f"router 'symbolic-moe': aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if vote_weights not in ("recruit", "log-odds"):
            raise RoutingError(f"router 'symbolic-moe': vote_weights must be 'recruit' or 'log-odds', got {vote_weights!r}")
        if vote_weights == "log-odds" and aggregation not in ("auto", "weighted-vote"):
            raise RoutingError(f"router 'symbolic-moe': vote_weights='log-odds' weights a vote; it needs aggregation='weighted-vote' "
                               f"(or 'auto'), not {aggregation!r}")
        self.k, self.mode, self.tagger_kind, self.aggregation_kind = k, mode, tagger, aggregation
        self.vote_weights = vote_weights
        self.temperature = temperature
        self.shrinkage = float(shrinkage)
        self.unanswered, self.impute_strength = unanswered, float(impute_strength)
        self.keyword_expert = keyword_expert
        self.skills_per_question = skills_per_question
        self.aggregator = aggregator
        self.aggregator_fit_limit = aggregator_fit_limit
        self.profiles: prof.Profiles | None = None
        self.recruit_profiles: dict[str, dict[str, float]] = {}  # what L and g are computed from (`unanswered`)
        self.prior: dict[str, float] = {}
        self.profile_keywords: list[str] = []
        self.keyword_counts: dict[str, int] = {}
        self.model_keyword_counts: dict[str, dict[str, int]] = {}  # n_m[k]: fit items of k that m has an outcome for
        self.global_acc: dict[str, float] = {}
        self._kw_vecs: np.ndarray | None = None
        self._tagger_cache: tuple[Any, Any] | None = None
        self.aggregation = Aggregation(kind="vote")

    @property
    def fitted(self) -> bool:
        return self.profiles is not None

    # ------------------------------------------------------------------ tagging
    def resolved_tagger(self) -> str:
        """`auto`: the keyword LLM when the pool has a live expert of at least
        `MIN_KEYWORD_LLM_PARAMS_B` to run it (or one of unknown size), else the embedding tagger."""
        if self.tagger_kind != "auto":
            return self.tagger_kind
        if self._recorded_pool() or self.ctx.dispatcher is None:
            return "embedding"
        params_b = self.ctx.registry.spec(self.keyword_expert or self.pool[0]).params_b
        return "embedding" if params_b is not None and params_b < MIN_KEYWORD_LLM_PARAMS_B else "llm"

    def _tagger(self) -> Any:
        # Kept between calls: a new EmbeddingTagger re-embeds the whole skill vocabulary (measured
        # by benchmarks/routing_cost.py: most of the cost of routing one new question).
        key = (self.resolved_tagger(), self.keyword_expert, id(self.ctx.services.get("embedder")), self.skills_per_question)
        cached = self._tagger_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        tagger = self._build_tagger()
        self._tagger_cache = (key, tagger)
        return tagger

    def _build_tagger(self) -> Any:
        if self.resolved_tagger() == "llm":
            if self.ctx.dispatcher is None:
                raise RoutingError("router 'symbolic-moe': the LLM tagger needs a dispatcher (live experts)")
            expert = self.keyword_expert or self.pool[0]
            return LLMKeywordTagger(self.ctx.dispatcher, self.ctx.registry.resolve(expert))
        return EmbeddingTagger(shared_embedder(self.ctx.services), SKILLS, top_n=self.skills_per_question)

    async def tag(self, texts: list[str], progress: Callable[[int, int], None] | None = None) -> list[list[str]]:
        """Keywords per text; the keyword LLM's are cached in the store per (question hash, tagger).
        The embedding tagger's are not: they are a product with the (cached) embedding, cheaper
        than the store round trip that would cache them (about 20 ms a new question, measured by
        benchmarks/routing_cost.py)."""
        tagger = self._tagger()
        if isinstance(tagger, EmbeddingTagger):
            self.fit_info.setdefault("tagger", tagger.name)
            return await tagger.tag(texts, progress)
        keys = [question_key(t) for t in texts]
        cached: dict[str, list[str]] = {}
        if self.ctx.store is not None:
            cached = await self.ctx.store.get_keywords(list(dict.fromkeys(keys)), tagger.name)
        todo = [i for i, k in enumerate(keys) if k not in cached]
        if todo:
            tags = await tagger.tag([texts[i] for i in todo])
            new = {keys[i]: t for i, t in zip(todo, tags, strict=True)}
            cached.update(new)
            if self.ctx.store is not None:
                await self.ctx.store.put_keywords(new, tagger.name)
        self.fit_info.setdefault("tagger", tagger.name)
        return [cached[k] for k in keys]

    # ------------------------------------------------------------------ fitting
    async def fit(self, data: FitData) -> dict[str, Any]:
        qs = [q for q in data.questions if q.question_id]
        if not qs:
            raise RoutingError("router 'symbolic-moe': no fit questions")
        keywords = await self.tag([q.text for q in qs], self.ctx.progress_of(FIT_EMBED_PHASE))
        item_kws = {q.question_id: kw for q, kw in zip(qs, keywords, strict=True) if kw}
        correctness = {m: {qid: o.correct for qid, o in data.outcomes.get(m, {}).items()} for m in self.pool}
        self.profiles = prof.build_profiles(item_kws, correctness, self.pool)
        self.tagger_kind = self.resolved_tagger()  # query keywords must come from the tagger the profiles used
        self.model_keyword_counts = prof.model_keyword_counts(item_kws, correctness, self.pool)
        self.profile_keywords = sorted({k for kws in item_kws.values() for k in kws})
        self.keyword_counts = prof.keyword_counts(item_kws)
        self._derive_recruiting()
        self._kw_vecs = None
        tagged = list(item_kws)
        answered = {m: [i for i in tagged if i in correctness[m]] for m in self.pool}
        self.global_acc = {m: sum(correctness[m][i] for i in answered[m]) / max(len(answered[m]), 1) for m in self.pool}
        self.fit_info = {}
        self.aggregation = await self._select_aggregation(data)
        self.fit_info = {
            **self.fit_info,
            "tagger": self._tagger().name,
            "fit_questions": len(qs),
            "tagged_questions": len(item_kws),
            "profile_keywords": len(self.profile_keywords),
            "prior": {m: round(p, 4) for m, p in sorted(self.prior.items(), key=lambda kv: -kv[1])},
            "aggregation": self.aggregation.model_dump(),
            "k": self.k,
            "mode": self.mode,
            "unanswered": self.unanswered,
            **({"shrinkage": self.shrinkage} if self.mode == "accuracy" or self.shrinkage else {}),
        }
        await self.save()
        return self.fit_info

    def _derive_recruiting(self) -> None:
        """The profiles L and g are computed from, and g: the ±1 sums as fitted (`zero`: an
        unanswered item counts 0, the reference), or with every unanswered item filled with its
        expected value (`impute`, `profiles.impute_profiles`). Both are the same when every model
        answered every fit item (an offline fit); from traffic, where only the recruits are
        labelled, raw sums rank models by how often they were called."""
        assert self.profiles is not None
        if self.unanswered == "zero":
            self.recruit_profiles = {m: {k: float(v) for k, v in p.items()} for m, p in self.profiles.items()}
        else:
            counts = {m: self.model_keyword_counts.get(m, self.keyword_counts) for m in self.profiles}  # older artefacts: every item answered
            self.recruit_profiles = prof.impute_profiles(self.profiles, counts, self.keyword_counts, self.impute_strength)
        self.prior = prof.global_prior(self.recruit_profiles)

    def _recorded_pool(self) -> bool:
        return all(self.ctx.registry.spec(m).backend is BackendKind.RECORDED for m in self.pool)

    async def _select_aggregation(self, data: FitData) -> Aggregation:
        kind = self.aggregation_kind
        if kind == "auto" and self.vote_weights == "log-odds":
            kind = "weighted-vote"  # log-odds weights are vote weights
        if kind in ("vote", "weighted-vote"):
            return Aggregation(kind=kind)
        if self.aggregator:
            return Aggregation(kind="llm", expert=self.ctx.registry.resolve(self.aggregator), temperature=self.temperature)
        if self._recorded_pool() or self.ctx.dispatcher is None:
            if kind == "llm":
                raise RoutingError("router 'symbolic-moe': recorded experts cannot act as aggregators; use aggregation=vote")
            self.fit_info["aggregator_note"] = "recorded pool: aggregated by majority vote (no live aggregator)"
            return Aggregation(kind="vote")
        scores = await self.score_aggregators(data)
        best = max(self.pool, key=lambda m: (scores.get(m, 0.0), -self.pool.index(m)))
        self.fit_info["aggregator_scores"] = scores
        self.fit_info["aggregator_benchmark"] = {"questions": len(self.synthetic_aggregation_set(data, self.aggregator_fit_limit)),
                                                 "temperature": self.temperature}
        return Aggregation(kind="llm", expert=best, temperature=self.temperature)

    def synthetic_aggregation_set(self, data: FitData, limit: int | None) -> list[tuple[Query, list[str]]]:
        """Per fit question (all of them unless `limit`): 1 correct + 2 incorrect responses (empty
        strings when missing; their slots stay in the prompt), shuffled."""
        rng = self.ctx.rng("aggregator-set")
        out = []
        for q in data.questions[:limit]:
            right = [o.response for m in self.pool if (o := data.outcomes.get(m, {}).get(q.question_id or "")) and o.correct]
            wrong = [o.response for m in self.pool if (o := data.outcomes.get(m, {}).get(q.question_id or "")) and not o.correct]
            picked = [rng.choice(right) if right else ""]
            picked += rng.sample(wrong, 2) if len(wrong) >= 2 else ["", ""]
            rng.shuffle(picked)
            out.append((q, picked))
        return out

    async def score_aggregators(self, data: FitData) -> dict[str, float]:
        """Accuracy of every pool expert as aggregator on the synthetic set (one per task)."""
        items = self.synthetic_aggregation_set(data, self.aggregator_fit_limit)
        if not items:
            return {}

        async def run(expert: str) -> float:
            reqs = [
                GenerationRequest.chat(aggregator_prompt(q.text_with_options(), resp, q.answer_instruction(), keep_empty=True),
                                       max_tokens=q.max_tokens or 256, temperature=self.temperature, seed=self.ctx.seed + i,
                                       question_id=None)
                for i, (q, resp) in enumerate(items)
            ]
            results = await asyncio.gather(*(self.ctx.dispatcher.submit_or_error(expert, r) for r in reqs))
            right = sum(
                1 for (q, _), r in zip(items, results, strict=True)
                if r.ok and q.gold is not None and extract_choice(r.text, q.n_options) == q.gold
            )
            return right / len(items)

        return {m: await run(m) for m in dict.fromkeys(self.pool)}

    # ------------------------------------------------------------------ persistence
    def dump_state(self) -> bytes:
        return json.dumps({
            "pool": self.pool, "profiles": self.profiles, "prior": self.prior, "profile_keywords": self.profile_keywords,
            "keyword_counts": self.keyword_counts,
            "aggregation": self.aggregation.model_dump(), "fit_info": self.fit_info,
            "tagger": self.tagger_kind, "keyword_expert": self.keyword_expert, "k": self.k, "mode": self.mode,
            "global_acc": self.global_acc, "model_keyword_counts": self.model_keyword_counts,
        }).encode()

    def load_state(self, payload: bytes) -> None:
        data = json.loads(payload)
        self.profiles, self.prior = data["profiles"], data["prior"]
        # The profile vocabulary came from this tagger: query keywords must come from it too.
        self.tagger_kind = data.get("tagger", self.tagger_kind)
        self.keyword_expert = data.get("keyword_expert", self.keyword_expert)
        self.profile_keywords = data["profile_keywords"]
        self.keyword_counts = data.get("keyword_counts", {})
        self.global_acc = data.get("global_acc", {})
        self.model_keyword_counts = data.get("model_keyword_counts", {})
        self._kw_vecs = None
        self._derive_recruiting()  # this router's `unanswered` decides, whichever the fit used
        self.aggregation = Aggregation(**data["aggregation"])
        self.fit_info = data.get("fit_info", {})

    # ------------------------------------------------------------------ scoring
    async def _keyword_vectors(self) -> np.ndarray:
        if self._kw_vecs is None:
            self._kw_vecs = await shared_embedder(self.ctx.services).embed(self.profile_keywords)
        return self._kw_vecs

    async def map_keywords(self, keywords: list[list[str]]) -> list[list[str]]:
        """Each query keyword → its single nearest profile keyword (cosine; no threshold;
        duplicates kept)."""
        flat = sorted({k for kws in keywords for k in kws})
        if not flat or not self.profile_keywords:
            return [[] for _ in keywords]
        known = set(self.profile_keywords)
        unknown = [k for k in flat if k not in known]
        mapping = {k: k for k in flat if k in known}
        if unknown:
            vecs = await shared_embedder(self.ctx.services).embed(unknown)
            sims = vecs @ (await self._keyword_vectors()).T
            for k, j in zip(unknown, sims.argmax(axis=1), strict=True):
                mapping[k] = self.profile_keywords[int(j)]
        return [[mapping[k] for k in kws] for kws in keywords]

    def skill_accuracy(self, expert: str, mapped: list[str]) -> float:
        """The expert's accuracy on the fit items of the query's skills (from the profile:
        right = (n_k + P[k]) / 2), Laplace-smoothed, or shrunk toward its global fit accuracy
        with `shrinkage` pseudo-items when that is > 0."""
        assert self.profiles is not None
        counts = self.model_keyword_counts.get(expert, self.keyword_counts)  # older artefacts: every item answered
        n = sum(counts.get(k, 0) for k in mapped)
        right = sum((counts.get(k, 0) + self.profiles[expert].get(k, 0)) / 2 for k in mapped)
        if self.shrinkage > 0:
            return prof.shrunk_accuracy(right, n, self.global_acc.get(expert, 0.5), self.shrinkage)
        return (right + 1) / (n + 2)

    def skill_log_odds(self, expert: str, mapped: list[str], n_options: int) -> float:
        """Weighted-majority vote weight log((K−1)·p/(1−p)), p = `skill_accuracy`."""
        p = min(max(self.skill_accuracy(expert, mapped), 1e-6), 1 - 1e-6)
        return float(np.log(max(n_options - 1, 1) * p / (1 - p)))

    async def score_batch(self, queries: Sequence[Query]) -> list[SkillScores]:
        keywords = await self.tag([q.text for q in queries])
        mapped = await self.map_keywords(keywords)
        return [self.score_skills(kws, mkws) for kws, mkws in zip(keywords, mapped, strict=True)]

    def score_skills(self, keywords: list[str], mapped: list[str]) -> SkillScores:
        """Each expert's recruiting score for the query's mapped skills: the sampling weight
        w ∝ L·g over the candidates (`sample`, `topk`), or the skill accuracy (`accuracy`).
        With no keywords the experts are alike (`sample` draws uniformly; the deterministic
        modes take the globally strongest, by fit accuracy)."""
        detail = {"keywords": keywords, "mapped": mapped, "tagger": self.fit_info.get("tagger", self.tagger_kind)}
        if not mapped:
            uniform = {m: 1.0 / len(self.pool) for m in self.pool}
            scores = uniform if self.mode == "sample" else {m: self.global_acc.get(m, 0.0) for m in self.pool}
            return SkillScores(scores, reason="no keywords: uniform draw", detail=detail, weights=uniform)
        assert self.profiles is not None
        local = prof.local_scores(self.recruit_profiles, mapped)
        if self.mode == "accuracy":
            scores = {m: self.skill_accuracy(m, mapped) for m in dict.fromkeys(self.pool)}
        else:
            scores = prof.recruit_weights(local, self.prior)
        return SkillScores(scores, reason=f"skills {', '.join(mapped)}", detail=detail, weights=scores, mapped=mapped, local=local)

    def select(self, query: Query, scored: SkillScores) -> list[str]:
        """`sample`: k draws with replacement ∝ the scores, seeded per query (the reference);
        `topk` fills up by L·g when fewer than k experts scored; else the k best (strongest
        first: a tied vote goes to the first answer)."""
        if self.mode == "sample":
            rng = random.Random(f"{self.ctx.seed}:symbolic-moe:{query.question_id or query.text}")
            if not scored.mapped:  # no keywords: k uniformly random experts, with replacement (the reference)
                return rng.choices(self.pool, k=self.k)
            return prof.draw(scored.scores, self.k, rng)
        if self.mode == "topk" and scored.mapped:
            backup = top_k({m: scored.local[m] * self.prior.get(m, 0.0) for m in self.pool}, len(self.pool))
            return prof.draw(scored.scores, self.k, mode="topk", backup=backup)
        return super().select(query, scored)

    def request(self, query: Query, index: int) -> GenerationRequest:
        # T=0.7 as in the paper, one seed per draw: a model drawn twice gives two samples.
        return query.expert_request(temperature=self.temperature, seed=self.ctx.seed * 100 + index)

    def vote_weight(self, query: Query, scored: SkillScores, expert: str) -> float:
        """The recruiting score, or with `vote_weights="log-odds"` the skill log-odds."""
        if self.vote_weights == "log-odds" and scored.mapped and self.keyword_counts:
            return self.skill_log_odds(expert, scored.mapped, max(query.n_options, 2))
        return super().vote_weight(query, scored, expert)

    def label_counts(self, query: Query, plan: Plan) -> dict[str, float] | None:
        """Each expert's fit outcomes on the query's mapped skills, Σ_k n_m[k] (every skill when
        it has none); None on the prior (nothing fitted yet)."""
        if not self.fitted:
            return None
        mapped = plan.detail.get("mapped") or []
        counts = {m: self.model_keyword_counts.get(m, self.keyword_counts) for m in dict.fromkeys(self.pool)}
        if mapped:
            return {m: float(sum(c.get(k, 0) for k in mapped)) for m, c in counts.items()}
        return {m: float(sum(c.values())) for m, c in counts.items()}

    def explain(self, scored: SkillScores, expert: str, weight: float) -> str:
        return f"{scored.reason}; local {scored.local.get(expert, 0):g}, weight {weight:.3f}"
