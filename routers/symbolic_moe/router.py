"""Symbolic-MoE (Chen et al., arXiv 2503.05641): skill-based recruiting of k experts, then an
aggregator. Method as in `shared/reference/symbolic-moe-coe-routellm.md` §1.

Pipeline: tag fit questions with skill keywords → per-model ±1 keyword profiles → global prior
(shift, square, normalise) → per query: map its keywords to the nearest profile keywords
(MiniLM cosine), local score Σ P_m[k], keep positive scores, weight by the prior, draw k=3 with
replacement → experts answer (grouped batch inference) → aggregator synthesises.

Deliberate deviations (each one an option, the reference behaviour is the default where it can run):
* Tagger. The paper's keyword LLM (Qwen2.5-7B, 5 samples at T=0.7, kept if seen ≥2 times,
  ≤20 characters) is `tagger="llm"`. With no capable keyword LLM (CPU, recorded experts) the
  default `tagger="embedding"` maps a question to its 3 nearest skills of a built-in vocabulary
  (`vocabulary.py`); profiles are built over that vocabulary. Reports name the tagger.
* Aggregation. The paper picks one aggregator model per task with a synthetic 1-right/2-wrong
  benchmark; we do the same when the pool has live experts. Recorded experts cannot synthesise
  new text, so with a recorded pool the default is a majority vote over the recruited answers
  (reported as such); `aggregation="weighted-vote"` weights each vote by its recruiting weight.
* Duplicates. Drawing with replacement can recruit one model 2–3 times; live experts then give
  independent samples at T=0.7 as in the paper, recorded experts replay the same answer, which
  simply counts once per draw in the vote.
* `mode="topk"` (k distinct highest-weight experts) is an added deterministic variant.
* `mode="accuracy"` (extension, `teams.py`): rank experts by their accuracy on the fit items of the
  query's skills, read off the same ±1 profile (right = (n_k + P[k]) / 2), Laplace-smoothed or,
  with `shrinkage` > 0, shrunk toward the expert's global fit accuracy with that many
  pseudo-items; take the k best, distinct, strongest first (it wins a tied vote). The paper's L·g weight mixes a
  count (L grows with how often a skill occurs) with a squared global prior; an accuracy estimate
  compares experts on one scale and does not let rare skills decide alone.
* `mode="team"` (extension, `teams.py`): profiles of *teams* — the paper's ±1-per-keyword
  arithmetic applied to the majority vote of every k-subset of the `team_candidates` strongest
  experts — and recruit the team with the best shrunk skill accuracy. Recruiting stays
  skill-based (only the query's keywords and fit profiles decide), but it sees correlated errors:
  three experts that fail on the same items are no better than one.
  `team_shortlist=N` limits the teams to the query's N most skill-accurate experts. Team
  profiles are computed with members in global-accuracy order (the first breaks ties); at routing
  the recruited team is reordered by skill accuracy (`team_order="skill"`), since with 3 voters
  and up to 10 options a three-way split is common and the first answer then decides.
  In fit-split cross-validation (benchmarks/results/mmlu-pro-symbolic-moe/cv.md) team profiles
  lost to `mode="accuracy"` in every setting (overfitting a choice among many teams), so the
  recommended 3-call extension is `mode="accuracy"`; `team` stays as a documented option.
* `vote_weights="log-odds"` weights each recruit's vote by log((K−1)·p/(1−p)) with p its skill
  accuracy (Laplace-smoothed, or shrunk when `shrinkage` > 0): the weighted-majority rule for
  independent voters of known accuracy.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import numpy as np

from experts.spec import BackendKind
from experts.types import GenerationRequest
from evals.answers import extract_choice
from evals.prompts import aggregator_prompt
from routers.base import Router
from routers.types import Aggregation, Assignment, FitData, Plan, Query, RouterContext, RoutingError
from routers.embeddings import shared_embedder
from routers.symbolic_moe import profiles as prof
from routers.symbolic_moe import teams as tm
from routers.symbolic_moe.keywords import EmbeddingTagger, LLMKeywordTagger, question_key
from routers.symbolic_moe.vocabulary import SKILLS

ARTEFACT_KIND = "symbolic-moe-profile"
AGGREGATIONS = ("auto", "vote", "weighted-vote", "llm")
MODES = ("sample", "topk", "accuracy", "team")


class SymbolicMoERouter(Router):
    name = "symbolic-moe"
    description = "skill-based recruiting of k experts (Symbolic-MoE), then aggregation"
    needs_fit = True

    def __init__(
        self,
        ctx: RouterContext,
        *,
        k: int = 3,
        mode: str = "sample",
        tagger: str = "embedding",
        keyword_expert: str | None = None,
        skills_per_question: int = 3,
        aggregation: str = "auto",
        aggregator: str | None = None,
        aggregator_fit_limit: int = 40,
        vote_weights: str = "recruit",
        temperature: float = 0.7,
        shrinkage: float = 0.0,
        team_candidates: int = 16,
        team_shortlist: int = 0,
        team_order: str = "skill",
        artefact: str = "default",
        **options: Any,
    ) -> None:
        super().__init__(ctx, **options)
        if k < 1:
            raise RoutingError(f"router 'symbolic-moe': k must be at least 1, got {k}")
        if mode not in MODES:
            raise RoutingError(f"router 'symbolic-moe': mode must be one of {', '.join(MODES)}, got {mode!r}")
        if shrinkage < 0:
            raise RoutingError(f"router 'symbolic-moe': shrinkage must be ≥ 0, got {shrinkage}")
        if team_shortlist and team_shortlist < k:
            raise RoutingError(f"router 'symbolic-moe': team_shortlist must be 0 (off) or at least k={k}, got {team_shortlist}")
        if team_candidates < k:
            raise RoutingError(f"router 'symbolic-moe': team_candidates must be at least k={k}, got {team_candidates}")
        if tagger not in ("embedding", "llm"):
            raise RoutingError(f"router 'symbolic-moe': tagger must be 'embedding' or 'llm', got {tagger!r}")
        if aggregation not in AGGREGATIONS:
            raise RoutingError(f"router 'symbolic-moe': aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if vote_weights not in ("recruit", "log-odds"):
            raise RoutingError(f"router 'symbolic-moe': vote_weights must be 'recruit' or 'log-odds', got {vote_weights!r}")
        self.k, self.mode, self.tagger_kind, self.aggregation_kind = k, mode, tagger, aggregation
        self.vote_weights = vote_weights
        self.temperature = temperature
        self.shrinkage = float(shrinkage)
        self.team_candidates = team_candidates
        self.team_shortlist = team_shortlist
        if team_order not in ("skill", "global"):
            raise RoutingError(f"router 'symbolic-moe': team_order must be 'skill' or 'global', got {team_order!r}")
        self.team_order = team_order
        self.global_acc: dict[str, float] = {}
        self.teams: list[tm.Team] = []
        self._team_prof: np.ndarray | None = None
        self._team_acc: np.ndarray | None = None
        self.keyword_counts: dict[str, int] = {}
        self.keyword_expert = keyword_expert
        self.skills_per_question = skills_per_question
        self.aggregator = aggregator
        self.aggregator_fit_limit = aggregator_fit_limit
        self.artefact = artefact
        self.profiles: prof.Profiles | None = None
        self.prior: dict[str, float] = {}
        self.profile_keywords: list[str] = []
        self._kw_vecs: np.ndarray | None = None
        self.chosen_aggregation: Aggregation = Aggregation(kind="vote")
        self.fit_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ tagging
    def _tagger(self) -> Any:
        # Kept between calls: a new EmbeddingTagger re-embeds the whole skill vocabulary (measured
        # by benchmarks/routing_cost.py: most of the cost of routing one new question).
        key = (self.tagger_kind, self.keyword_expert, id(self.ctx.services.get("embedder")), self.skills_per_question)
        cached = getattr(self, "_tagger_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        tagger = self._build_tagger()
        self._tagger_cache = (key, tagger)
        return tagger

    def _build_tagger(self) -> Any:
        if self.tagger_kind == "llm":
            if self.ctx.dispatcher is None:
                raise RoutingError("router 'symbolic-moe': the LLM tagger needs a dispatcher (live experts)")
            expert = self.keyword_expert or self.pool[0]
            return LLMKeywordTagger(self.ctx.dispatcher, self.ctx.registry.resolve(expert))
        return EmbeddingTagger(shared_embedder(self.ctx.services), SKILLS, top_n=self.skills_per_question)

    async def tag(self, texts: list[str]) -> list[list[str]]:
        """Keywords per text, cached in the store per (question hash, tagger)."""
        tagger = self._tagger()
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
        keywords = await self.tag([q.text for q in qs])
        item_kws = {q.question_id: kw for q, kw in zip(qs, keywords, strict=True) if kw}
        correctness = {m: {qid: o.correct for qid, o in data.outcomes.get(m, {}).items()} for m in self.pool}
        self.profiles = prof.build_profiles(item_kws, correctness, self.pool)
        self.prior = prof.global_prior(self.profiles)
        self.profile_keywords = sorted({k for kws in item_kws.values() for k in kws})
        self.keyword_counts = {}
        for kws in item_kws.values():
            for kw in kws:
                self.keyword_counts[kw] = self.keyword_counts.get(kw, 0) + 1
        self._kw_vecs = None
        tagged = list(item_kws)
        self.global_acc = {m: sum(correctness[m].get(i, False) for i in tagged) / max(len(tagged), 1) for m in self.pool}
        self.teams, self._team_prof, self._team_acc = [], None, None
        if self.mode == "team":
            self._fit_teams(data, item_kws)
        self.fit_info = {}
        self.chosen_aggregation = await self._select_aggregation(data)
        self.fit_info = {
            **self.fit_info,
            "tagger": self._tagger().name,
            "fit_questions": len(qs),
            "tagged_questions": len(item_kws),
            "profile_keywords": len(self.profile_keywords),
            "prior": {m: round(p, 4) for m, p in sorted(self.prior.items(), key=lambda kv: -kv[1])},
            "aggregation": self.chosen_aggregation.model_dump(),
            "k": self.k,
            "mode": self.mode,
            **({"shrinkage": self.shrinkage} if self.mode in ("accuracy", "team") or self.shrinkage else {}),
            **({"teams": len(self.teams)} if self.mode == "team" else {}),
        }
        await self._save()
        return self.fit_info

    def _fit_teams(self, data: FitData, item_kws: dict[str, list[str]]) -> None:
        order = sorted(dict.fromkeys(self.pool), key=lambda m: (-self.global_acc[m], self.pool.index(m)))
        candidates = order[: self.team_candidates]
        if len(candidates) < self.k:
            raise RoutingError(f"router 'symbolic-moe': mode=team needs at least k={self.k} distinct experts in the pool")
        self.teams = tm.candidate_teams(candidates, self.k, order)
        answers = {m: {qid: o.answer for qid, o in data.outcomes.get(m, {}).items()} for m in candidates}
        gold = {q.question_id: q.gold for q in data.questions if q.question_id}
        self._team_prof, self._team_acc = tm.team_profiles(item_kws, answers, gold, self.teams, self.profile_keywords)

    def _recorded_pool(self) -> bool:
        return all(self.ctx.registry.spec(m).backend is BackendKind.RECORDED for m in self.pool)

    async def _select_aggregation(self, data: FitData) -> Aggregation:
        kind = self.aggregation_kind
        if kind in ("vote", "weighted-vote"):
            return Aggregation(kind=kind)
        if self.aggregator:
            return Aggregation(kind="llm", expert=self.ctx.registry.resolve(self.aggregator))
        if self._recorded_pool() or self.ctx.dispatcher is None:
            if kind == "llm":
                raise RoutingError("router 'symbolic-moe': recorded experts cannot act as aggregators; use aggregation=vote")
            self.fit_info["aggregator_note"] = "recorded pool: aggregated by majority vote (no live aggregator)"
            return Aggregation(kind="vote")
        scores = await self.score_aggregators(data)
        best = max(self.pool, key=lambda m: (scores.get(m, 0.0), -self.pool.index(m)))
        self.fit_info["aggregator_scores"] = scores
        return Aggregation(kind="llm", expert=best)

    def synthetic_aggregation_set(self, data: FitData, limit: int) -> list[tuple[Query, list[str]]]:
        """Per fit question: 1 correct + 2 incorrect responses (empty strings when missing), shuffled."""
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
                GenerationRequest.chat(aggregator_prompt(q.text_with_options(), resp, q.answer_instruction()),
                                       max_tokens=q.max_tokens or 256, question_id=None)
                for q, resp in items
            ]
            results = await asyncio.gather(*(self.ctx.dispatcher.submit_or_error(expert, r) for r in reqs))
            right = sum(
                1 for (q, _), r in zip(items, results, strict=True)
                if r.ok and q.gold is not None and extract_choice(r.text, q.n_options) == q.gold
            )
            return right / len(items)

        return {m: await run(m) for m in dict.fromkeys(self.pool)}

    # ------------------------------------------------------------------ persistence
    def _payload(self) -> dict[str, Any]:
        return {
            "pool": self.pool, "profiles": self.profiles, "prior": self.prior, "profile_keywords": self.profile_keywords,
            "keyword_counts": self.keyword_counts,
            "aggregation": self.chosen_aggregation.model_dump(), "fit_info": self.fit_info,
            "tagger": self.tagger_kind, "keyword_expert": self.keyword_expert, "k": self.k, "mode": self.mode,
            "global_acc": self.global_acc, "teams": [list(t) for t in self.teams],
            "team_profiles": self._team_prof.tolist() if self._team_prof is not None else None,
            "team_accuracy": self._team_acc.tolist() if self._team_acc is not None else None,
        }

    async def _save(self) -> None:
        if self.ctx.store is not None:
            await self.ctx.store.save_artefact(ARTEFACT_KIND, self.artefact, json.dumps(self._payload()).encode(), {"pool": self.pool})

    async def restore(self) -> bool:
        """Load the newest stored profile for this pool (used by `ask` and the gateway)."""
        if self.ctx.store is None:
            return False
        rec = await self.ctx.store.load_artefact(ARTEFACT_KIND, self.artefact)
        if rec is None:
            return False
        data = json.loads(rec.payload)
        if sorted(data["pool"]) != sorted(self.pool):
            raise RoutingError(
                f"router 'symbolic-moe': the stored profile '{self.artefact}' (v{rec.version}) was built for pool "
                f"{data['pool']}, not {self.pool}; rebuild it with `orchestrator profile build`"
            )
        self.profiles, self.prior = data["profiles"], data["prior"]
        # The profile vocabulary came from this tagger: query keywords must come from it too.
        self.tagger_kind = data.get("tagger", self.tagger_kind)
        self.keyword_expert = data.get("keyword_expert", self.keyword_expert)
        self.profile_keywords = data["profile_keywords"]
        self.keyword_counts = data.get("keyword_counts", {})
        self.global_acc = data.get("global_acc", {})
        if self.mode == "team":
            if not data.get("team_profiles") or len(data["teams"][0]) != self.k:
                raise RoutingError(
                    f"router 'symbolic-moe': the stored profile '{self.artefact}' (v{rec.version}) has no team profiles "
                    f"for k={self.k}; rebuild it with `orchestrator profile build --router-opt mode=team`"
                )
            self.teams = [tuple(t) for t in data["teams"]]
            self._team_prof = np.asarray(data["team_profiles"], dtype=np.int64)
            self._team_acc = np.asarray(data["team_accuracy"], dtype=float)
        self.chosen_aggregation = Aggregation(**data["aggregation"])
        self.fit_info = {**data.get("fit_info", {}), "version": rec.version}
        return True

    # ------------------------------------------------------------------ routing
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
        n = sum(self.keyword_counts.get(k, 0) for k in mapped)
        right = sum((self.keyword_counts.get(k, 0) + self.profiles[expert].get(k, 0)) / 2 for k in mapped)
        if self.shrinkage > 0:
            return tm.shrunk_accuracy(right, n, self.global_acc.get(expert, 0.5), self.shrinkage)
        return (right + 1) / (n + 2)

    def skill_log_odds(self, expert: str, mapped: list[str], n_options: int) -> float:
        """Weighted-majority vote weight log((K−1)·p/(1−p)), p = `skill_accuracy`."""
        p = min(max(self.skill_accuracy(expert, mapped), 1e-6), 1 - 1e-6)
        return float(np.log(max(n_options - 1, 1) * p / (1 - p)))

    def _recruit_team(self, mapped: list[str]) -> tuple[list[str], str]:
        assert self._team_prof is not None and self._team_acc is not None
        col = {k: j for j, k in enumerate(self.profile_keywords)}
        counts = np.array([self.keyword_counts.get(k, 0) for k in self.profile_keywords], dtype=float)
        allowed = None
        if self.team_shortlist:
            acc = {m: self.skill_accuracy(m, mapped) for m in dict.fromkeys(self.pool)}
            short = set(sorted(acc, key=lambda m: (-acc[m], self.pool.index(m)))[: self.team_shortlist])
            allowed = np.array([all(m in short for m in t) for t in self.teams])
        best, scores = tm.best_team(self._team_prof, self._team_acc, counts, [col[k] for k in mapped if k in col], self.shrinkage, allowed)
        team = list(self.teams[best])
        if self.team_order == "skill":  # the member most accurate on the query's skills breaks a tied vote
            team.sort(key=lambda m: (-self.skill_accuracy(m, mapped), self.pool.index(m)))
        return team, f"team score {scores[best]:.3f}"

    async def route(self, query: Query) -> Plan:
        return (await self.route_batch([query]))[0]

    async def route_batch(self, queries: list[Query]) -> list[Plan]:  # type: ignore[override]
        if self.profiles is None:
            raise RoutingError("router 'symbolic-moe' is not fitted: run `orchestrator profile build` or `orchestrator bench`")
        keywords = await self.tag([q.text for q in queries])
        mapped = await self.map_keywords(keywords)
        plans = []
        for q, kws, mkws in zip(queries, keywords, mapped, strict=True):
            rng = random.Random(f"{self.ctx.seed}:symbolic-moe:{q.question_id or q.text}")
            if mkws:
                local = prof.local_scores(self.profiles, mkws)
                weights = prof.recruit_weights(local, self.prior)
                why = f"skills {', '.join(mkws)}"
                if self.mode == "team":
                    chosen, note = self._recruit_team(mkws)
                    why += f"; {note}"
                elif self.mode == "accuracy":
                    acc = {m: self.skill_accuracy(m, mkws) for m in dict.fromkeys(self.pool)}
                    # strongest first: a tied vote goes to the first answer
                    chosen = sorted(acc, key=lambda m: (-acc[m], self.pool.index(m)))[: self.k]
                    weights = acc
                else:
                    backup = sorted(self.pool, key=lambda m: (-local[m] * self.prior.get(m, 0.0), self.pool.index(m)))
                    chosen = prof.draw(weights, self.k, rng, mode=self.mode, backup=backup)
            else:  # no keywords: k uniformly random experts, with replacement (the reference)
                local, weights = {}, {m: 1.0 / len(self.pool) for m in self.pool}
                if self.mode == "sample":
                    chosen = rng.choices(self.pool, k=self.k)
                else:  # deterministic modes: the k globally strongest (fit accuracy), else pool order
                    chosen = sorted(self.pool, key=lambda m: (-self.global_acc.get(m, 0.0), self.pool.index(m)))[: self.k]
                why = "no keywords: uniform draw"
            agg = self.chosen_aggregation
            if self.vote_weights == "log-odds" and mkws and self.keyword_counts:
                weights = {m: self.skill_log_odds(m, mkws, max(q.n_options, 2)) for m in set(chosen)}
            plans.append(
                Plan(
                    router=self.name,
                    # T=0.7 as in the paper, one seed per draw: a model drawn twice gives two samples.
                    assignments=[
                        Assignment(expert=m, request=q.expert_request(temperature=self.temperature, seed=self.ctx.seed * 100 + i),
                                   weight=weights.get(m, 0.0),
                                   reason=f"{why}; local {local.get(m, 0):g}, weight {weights.get(m, 0.0):.3f}")
                        for i, m in enumerate(chosen)
                    ],
                    aggregation=agg,
                    detail={"keywords": kws, "mapped": mkws, "tagger": self.fit_info.get("tagger", self.tagger_kind)},
                )
            )
        return plans
