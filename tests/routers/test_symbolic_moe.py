"""Symbolic-MoE: the method's arithmetic on hand-computed examples, and the router end to end."""

import json
import random

import httpx
import numpy as np
import pytest

from conftest import POOL3, RECORDED, mmlu_questions, recorded_specs
from experts import ExpertRegistry, ExpertSpec
from experts.backends.openai import OpenAIBackend
from orchestrator.dispatcher import Dispatcher
from routers.types import FitData, FitOutcome, RouterContext
from routers.symbolic_moe import SymbolicMoERouter
from routers.symbolic_moe import profiles as prof
from routers.symbolic_moe.keywords import filter_keywords, parse_keywords


def test_keyword_parsing_and_self_consistency_filter() -> None:
    assert parse_keywords("Sure!\nKeywords: Genetics, Cell Biology., molecular biology") == ["genetics", "cell biology", "molecular biology"]
    assert parse_keywords("Keywords: a\nKeywords: Organic Chemistry, Stoichiometry") == ["organic chemistry", "stoichiometry"]
    samples = [
        ["genetics", "evolution", "a very long keyword indeed"],
        ["genetics", "evolution", "a very long keyword indeed"],
        ["genetics", "ecology"],
        ["ecology", "genetics", "genetics"],  # counted once per sample
        ["botany"],
    ]
    # seen ≥ 2 times (per sample), ≤ 20 characters, most frequent first
    assert filter_keywords(samples) == ["genetics", "evolution", "ecology"]
    assert filter_keywords([["x"], ["y"]]) == []  # a query can end up with no keywords


def test_profiles_on_a_hand_computed_example() -> None:
    items = {"q1": ["algebra", "calculus"], "q2": ["algebra"], "q3": ["law"]}
    correct = {"A": {"q1": True, "q2": True, "q3": False}, "B": {"q1": False, "q2": True, "q3": True}}
    p = prof.build_profiles(items, correct, ["A", "B"])
    assert p == {"A": {"algebra": 2, "calculus": 1, "law": -1}, "B": {"algebra": 0, "calculus": -1, "law": 1}}
    # G_A = 2, G_B = 0 → no shift; squared: 4, 0 → g = (1, 0)
    assert prof.global_prior(p) == {"A": 1.0, "B": 0.0}


def test_prior_shifts_negative_totals_then_squares() -> None:
    p = {"A": {"k": -3}, "B": {"k": 1}, "C": {"k": 0}}
    # shift by -min + 1 = 4: A 1, B 5, C 4 → squares 1, 25, 16 → / 42
    g = prof.global_prior(p)
    assert g == pytest.approx({"A": 1 / 42, "B": 25 / 42, "C": 16 / 42})


def test_recruiting_weights_keep_positive_local_scores() -> None:
    p = {"A": {"x": 3, "y": -1}, "B": {"x": -2, "y": 2}, "C": {"x": 1, "y": 1}}
    local = prof.local_scores(p, ["x", "x", "y"])  # duplicates count twice
    assert local == {"A": 5.0, "B": -2.0, "C": 3.0}
    w = prof.recruit_weights(local, {"A": 0.5, "B": 0.3, "C": 0.2})
    assert w == pytest.approx({"A": 2.5 / 3.1, "C": 0.6 / 3.1})  # B dropped (not positive)
    none_positive = prof.recruit_weights({"A": -1.0, "B": -3.0}, {"A": 0.5, "B": 0.5})
    assert none_positive == pytest.approx({"A": 3 / 4, "B": 1 / 4})  # shifted: L − min L + 1 → 3, 1


def test_draws_are_seeded_and_topk_is_distinct() -> None:
    w = {"A": 0.6, "B": 0.3, "C": 0.1}
    a = prof.draw(w, 3, random.Random(5))
    assert a == prof.draw(w, 3, random.Random(5))
    draws = [m for s in range(300) for m in prof.draw(w, 3, random.Random(s))]
    assert draws.count("A") > draws.count("B") > draws.count("C")  # ∝ weights, with replacement
    assert prof.draw(w, 2, random.Random(0), mode="topk") == ["A", "B"]
    assert prof.draw({"A": 1.0}, 3, random.Random(0), mode="topk", backup=["A", "C", "B"]) == ["A", "C", "B"]


def fit_data(n: int = 300) -> FitData:
    import gzip

    qs = mmlu_questions(n, offset=500)
    outcomes = {}
    for m in POOL3:
        with gzip.open(RECORDED / "responses" / f"{m}.jsonl.gz", "rt") as f:
            rows = {str(d["question_id"]): d for d in map(json.loads, f)}
        outcomes[m] = {q.question_id: FitOutcome(rows[q.question_id]["correct"], rows[q.question_id]["pred"], rows[q.question_id]["response"]) for q in qs}
    return FitData(qs, outcomes, "recorded")


async def test_router_fits_routes_deterministically_and_restores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from store import Store

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as store:
        ctx = RouterContext(pool=POOL3, registry=reg, store=store, seed=3)
        router = SymbolicMoERouter(ctx)
        info = await router.fit(fit_data())
        assert info["tagger"].startswith("embedding:minilm") and info["aggregation"]["kind"] == "vote"
        assert "recorded pool" in info["aggregator_note"]
        queries = mmlu_questions(20, offset=900)
        plans = await router.route_batch(queries)
        assert all(len(p.assignments) == 3 and p.detail["mapped"] for p in plans)
        # A second router restored from the store plans identically (same seed, same profile).
        restored = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg, store=store, seed=3))
        assert await restored.restore()
        assert [p.experts for p in await restored.route_batch(queries)] == [p.experts for p in plans]
        other_seed = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg, store=store, seed=4))
        await other_seed.restore()
        assert [p.experts for p in await other_seed.route_batch(queries)] != [p.experts for p in plans]


async def test_unknown_query_keywords_map_to_the_nearest_profile_keyword() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    router = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg))
    router.profiles = {m: {"organic chemistry": 1, "criminal law": 1, "probability": 1} for m in POOL3}
    router.profile_keywords = ["criminal law", "organic chemistry", "probability"]
    mapped = await router.map_keywords([["chemistry of carbon compounds", "felony"], ["probability"], []])
    assert mapped == [["organic chemistry", "criminal law"], ["probability"], []]


async def test_aggregator_selection_scores_each_expert_on_the_synthetic_set() -> None:
    """Two OpenAI-compatible experts behind httpx's mock transport: `careful` answers with the
    letter of the one correct response in the prompt, `lazy` always says (A)."""
    data = fit_data(12)
    gold = {q.text_with_options(): q.gold for q in data.questions}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        if body["model"] == "careful":
            q = next(t for t in gold if t in prompt)
            letter = gold[q]
        else:
            letter = "A"
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": f"The answer is ({letter})"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    specs = [ExpertSpec(name=n, backend="openai", base_url="http://agg.test/v1", model=n) for n in ("careful", "lazy")]
    reg = ExpertRegistry()
    for s in specs:
        reg.add(s, OpenAIBackend(s, transport=httpx.MockTransport(handler)))
    outcomes = {"careful": data.outcomes[POOL3[0]], "lazy": data.outcomes[POOL3[1]]}
    async with Dispatcher(reg) as d:
        router = SymbolicMoERouter(RouterContext(pool=["careful", "lazy"], registry=reg, dispatcher=d))
        items = router.synthetic_aggregation_set(FitData(data.questions, outcomes), 12)
        assert all(len(r) == 3 for _, r in items)
        scores = await router.score_aggregators(FitData(data.questions, outcomes))
        chosen = await router._select_aggregation(FitData(data.questions, outcomes))
    expected_lazy = sum(q.gold == "A" for q in data.questions) / len(data.questions)
    assert scores == {"careful": 1.0, "lazy": pytest.approx(expected_lazy)}
    assert chosen.kind == "llm" and chosen.expert == "careful"


# ---------------------------------------------------------------- extensions (mode=accuracy, log-odds votes)
def test_shrunk_accuracy_pulls_rare_skills_toward_the_global_accuracy() -> None:
    assert prof.shrunk_accuracy(6, 10, 0.5, 10) == pytest.approx(11 / 20)  # (6 + 10·0.5) / (10 + 10)
    assert prof.shrunk_accuracy(2, 2, 0.4, 0) == 1.0
    assert prof.shrunk_accuracy(0, 0, 0.4, 0) == 0.4  # nothing known: the global accuracy


async def test_skill_accuracy_and_shrunk_recruiting() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    a, b, c = POOL3
    router = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), k=2, mode="accuracy", shrinkage=4)
    router.profiles = {a: {"x": 2, "y": -4}, b: {"x": -2, "y": 4}, c: {"x": 0, "y": 0}}
    router.keyword_counts = {"x": 4, "y": 4}
    router.global_acc = {a: 0.5, b: 0.5, c: 0.75}
    # a on x: right (4 + 2) / 2 = 3 of 4 → (3 + 4·0.5) / (4 + 4) = 5/8; b: (1 + 2) / 8; c: (2 + 3) / 8
    assert [router.skill_accuracy(m, ["x"]) for m in POOL3] == pytest.approx([5 / 8, 3 / 8, 5 / 8])
    assert router.skill_log_odds(a, ["x"], 4) == pytest.approx(np.log(3 * (5 / 8) / (3 / 8)))
    router.shrinkage = 0  # Laplace, as before: (3 + 1) / (4 + 2)
    assert router.skill_accuracy(a, ["x"]) == pytest.approx(4 / 6)


async def test_accuracy_mode_fits_routes_and_restores(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from store import Store

    mode = "accuracy"
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    opts = {"k": 2, "mode": mode, "shrinkage": 20}
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 's.db'}") as store:
        router = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg, store=store, seed=1), **opts)
        info = await router.fit(fit_data(200))
        assert info["mode"] == mode and info["shrinkage"] == 20
        queries = mmlu_questions(15, offset=900)
        plans = await router.route_batch(queries)
        assert all(len(set(p.experts)) == 2 for p in plans)  # k distinct recruits
        restored = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg, store=store, seed=1), **opts)
        assert await restored.restore()
        assert [p.experts for p in await restored.route_batch(queries)] == [p.experts for p in plans]


def test_extension_options_are_checked() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    from routers.types import RoutingError

    with pytest.raises(RoutingError, match="mode must be one of"):
        SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), mode="best")
    with pytest.raises(RoutingError, match="shrinkage"):
        SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), shrinkage=-1)


# ---------------------------------------------------------------- defects fixed (issue 17)
async def test_the_aggregator_benchmark_covers_every_fit_question_at_the_papers_temperature() -> None:
    """The paper benchmarks each candidate aggregator on the whole validation set at T=0.7 and
    shows three response slots even when a wrong answer is missing (an empty one)."""
    data = fit_data(50)  # more than the 40 the router used to stop at
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is (A)"},
                                                      "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}})

    reg = ExpertRegistry()
    for n in ("one", "two"):
        s = ExpertSpec(name=n, backend="openai", base_url="http://agg.test/v1", model=n)
        reg.add(s, OpenAIBackend(s, transport=httpx.MockTransport(handler)))
    outcomes = {"one": data.outcomes[POOL3[0]], "two": data.outcomes[POOL3[1]]}
    async with Dispatcher(reg) as d:
        router = SymbolicMoERouter(RouterContext(pool=["one", "two"], registry=reg, dispatcher=d))
        chosen = await router._select_aggregation(FitData(data.questions, outcomes))
    assert len(seen) == 2 * 50 and {b["model"] for b in seen} == {"one", "two"}
    assert all(b["temperature"] == 0.7 for b in seen)
    prompts = [b["messages"][0]["content"] for b in seen]
    # two pool models give at most one wrong answer: an empty slot keeps its place
    assert all("### Model 3's response:" in p for p in prompts)
    assert chosen.kind == "llm" and chosen.temperature == 0.7
    assert router.fit_info["aggregator_benchmark"] == {"questions": 50, "temperature": 0.7}


def test_log_odds_vote_weights_need_a_weighted_vote() -> None:
    from routers.types import RoutingError

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    with pytest.raises(RoutingError, match="log-odds.*weighted-vote"):
        SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), vote_weights="log-odds", aggregation="vote")


async def test_log_odds_with_auto_aggregation_is_a_weighted_vote() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    router = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), vote_weights="log-odds", mode="accuracy")
    info = await router.fit(fit_data(60))
    assert info["aggregation"]["kind"] == "weighted-vote"


async def test_an_unanswered_item_is_neither_right_nor_wrong_in_skill_accuracy() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    a, b, c = POOL3
    item_kws = {"i1": ["x"], "i2": ["x"], "i3": ["x"], "i4": ["x"]}
    # a answered only i1 (right); b answered all four, right on three
    correctness = {a: {"i1": True}, b: {"i1": True, "i2": True, "i3": True, "i4": False}, c: {}}
    router = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), mode="accuracy")
    router.profiles = prof.build_profiles(item_kws, correctness, POOL3)
    router.keyword_counts = prof.keyword_counts(item_kws)
    router.model_keyword_counts = prof.model_keyword_counts(item_kws, correctness, POOL3)
    assert router.model_keyword_counts[a] == {"x": 1} and router.model_keyword_counts[c] == {}
    # a: 1 right of 1 answered → (1 + 1) / (1 + 2); counting its 3 unanswered items as half right
    # would give (1 + 1.5 + 1) / (4 + 2)
    assert router.skill_accuracy(a, ["x"]) == pytest.approx(2 / 3)
    assert router.skill_accuracy(b, ["x"]) == pytest.approx(4 / 6)
    assert router.skill_accuracy(c, ["x"]) == pytest.approx(1 / 2)


def test_the_tagger_defaults_to_the_keyword_llm_when_experts_are_live() -> None:
    reg = ExpertRegistry()
    s = ExpertSpec(name="live", backend="openai", base_url="http://live.test/v1", model="live")
    reg.add(s, OpenAIBackend(s, transport=httpx.MockTransport(lambda r: httpx.Response(500))))
    live = SymbolicMoERouter(RouterContext(pool=["live"], registry=reg, dispatcher=Dispatcher(reg)))
    assert live.resolved_tagger() == "llm"
    recorded = SymbolicMoERouter(RouterContext(pool=POOL3, registry=ExpertRegistry.from_specs(recorded_specs(POOL3))))
    assert recorded.resolved_tagger() == "embedding"


def test_auto_does_not_ask_a_tiny_model_for_keywords() -> None:
    """A keyword LLM known to be under 1B parameters (the embedded default's) is not worth its five
    samples per question: `auto` embeds; a 7B one, or one of unknown size, is asked; `llm` insists."""
    reg = ExpertRegistry()
    for name, params_b in (("tiny", 0.135), ("big", 7.0), ("unknown", None)):
        s = ExpertSpec(name=name, backend="openai", base_url="http://live.test/v1", model=name, params_b=params_b)
        reg.add(s, OpenAIBackend(s, transport=httpx.MockTransport(lambda r: httpx.Response(500))))

    def tagger(pool: list[str], **opts: str) -> str:
        return SymbolicMoERouter(RouterContext(pool=pool, registry=reg, dispatcher=Dispatcher(reg)), **opts).resolved_tagger()

    assert tagger(["tiny", "big"]) == "embedding"
    assert tagger(["tiny", "big"], keyword_expert="big") == "llm"
    assert tagger(["unknown", "tiny"]) == "llm"
    assert tagger(["tiny"], tagger="llm") == "llm"


def test_imputed_profiles_on_a_hand_computed_example() -> None:
    items = {"q1": ["x"], "q2": ["x"], "q3": ["x"], "q4": ["y"]}
    correct = {"A": {"q1": True, "q2": True, "q3": False, "q4": True}, "B": {"q1": True}}
    p = prof.build_profiles(items, correct, ["A", "B"])
    assert p == {"A": {"x": 1, "y": 1}, "B": {"x": 1, "y": 0}}
    filled = prof.impute_profiles(p, prof.model_keyword_counts(items, correct, ["A", "B"]), prof.keyword_counts(items), strength=2)
    # A answered every item: unchanged. Pooled accuracy over answered (item, keyword) pairs 4/5;
    # B overall (1 + 2·4/5) / (1 + 2) = 13/15; on x (1 + 2·13/15) / (1 + 2) = 41/45, two items
    # missing: 1 + 2·(2·41/45 − 1) = 119/45; on y none answered: 0 + 1·(2·13/15 − 1) = 11/15.
    assert filled["A"] == {"x": 1.0, "y": 1.0}
    assert filled["B"] == pytest.approx({"x": 119 / 45, "y": 11 / 15})


def partly_labelled_router(**options: object) -> SymbolicMoERouter:
    """Skill x over 10 fit items, as traffic labels them: A recruited on all 10 (7 right), B on
    2 (both right), C on 6 (3 right)."""
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    a, b, c = POOL3
    items = {f"i{j}": ["x"] for j in range(10)}
    correctness = {a: {f"i{j}": j < 7 for j in range(10)}, b: {"i0": True, "i1": True}, c: {f"i{j}": j < 3 for j in range(6)}}
    router = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), **options)  # type: ignore[arg-type]
    router.profiles = prof.build_profiles(items, correctness, POOL3)
    router.keyword_counts = prof.keyword_counts(items)
    router.model_keyword_counts = prof.model_keyword_counts(items, correctness, POOL3)
    router._derive_recruiting()
    return router


def test_imputing_unanswered_items_stops_raw_sums_favouring_the_most_recruited() -> None:
    a, b, c = POOL3
    raw = partly_labelled_router(unanswered="zero").score_skills(["x"], ["x"])
    assert raw.local == {a: 4.0, b: 2.0, c: 0.0} and raw.scores[a] > raw.scores[b] and c not in raw.scores
    filled = partly_labelled_router().score_skills(["x"], ["x"])  # the default
    # B: 2 of 2 right, shrunk toward its overall accuracy (itself toward the pooled 12/18), wins
    assert filled.local[a] == 4.0 and filled.local[b] > filled.local[a] > 0
    assert filled.scores[b] > filled.scores[a]


async def test_imputation_changes_nothing_when_every_model_answered_every_item() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    data = fit_data(60)
    zero = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), unanswered="zero")
    filled = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg))
    await zero.fit(data)
    await filled.fit(data)
    assert filled.recruit_profiles == zero.recruit_profiles and filled.prior == zero.prior
    queries = mmlu_questions(20, offset=900)
    assert [p.experts for p in await filled.route_batch(queries)] == [p.experts for p in await zero.route_batch(queries)]


def test_unanswered_and_impute_strength_are_checked() -> None:
    from routers.types import RoutingError

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    with pytest.raises(RoutingError, match="unanswered must be one of impute, zero"):
        SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), unanswered="mean")
    with pytest.raises(RoutingError, match="impute_strength"):
        SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), impute_strength=0)


def test_least_labelled_exploration_shadows_the_expert_the_fit_knows_least_on_the_query_skills() -> None:
    from routers.types import Query

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    a, b, c = POOL3
    items = {f"i{j}": ["x"] for j in range(10)}
    correctness = {a: {f"i{j}": j < 8 for j in range(10)}, b: {f"i{j}": j < 5 for j in range(10)}, c: {f"i{j}": j < 3 for j in range(10)}}
    routers = []
    for pick in ("least-labelled", "uniform"):
        r = SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), mode="topk", k=1, explore=1.0, explore_pick=pick)
        r.profiles = prof.build_profiles(items, correctness, POOL3)  # A 6, B 0, C −4: A is the recruit
        r.keyword_counts = prof.keyword_counts(items)
        r._derive_recruiting()
        # the outcomes the fit holds per skill: on x B 6, C 2; on y B 20, C 30
        r.model_keyword_counts = {a: {"x": 10}, b: {"x": 6, "y": 20}, c: {"x": 2, "y": 30}}
        routers.append(r)
    least, uniform = routers
    queries = [Query(text=f"q{j}", question_id=f"q{j}") for j in range(30)]
    assert least.plan(queries[0], least.score_skills(["x"], ["x"])).experts == [a]
    assert least.plan(queries[0], least.score_skills(["y"], ["y"])).experts == [a]
    on_x = [least.shadow_expert(q, least.plan(q, least.score_skills(["x"], ["x"]))) for q in queries]
    on_y = [least.shadow_expert(q, least.plan(q, least.score_skills(["y"], ["y"]))) for q in queries]
    assert on_x == [c] * 30  # fewest outcomes on x among the unpicked
    assert on_y == [b] * 30  # on y it is B
    drawn = [uniform.shadow_expert(q, uniform.plan(q, uniform.score_skills(["x"], ["x"]))) for q in queries]
    assert set(drawn) == {b, c}  # the default draws uniformly from the unpicked


def test_explore_pick_is_checked_and_only_where_labels_are_counted() -> None:
    from routers.coe import CoERouter
    from routers.types import RoutingError

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    with pytest.raises(RoutingError, match="explore_pick must be one of uniform, least-labelled"):
        SymbolicMoERouter(RouterContext(pool=POOL3, registry=reg), explore_pick="newest")
    with pytest.raises(RoutingError, match="explore_pick must be one of uniform, got 'least-labelled'"):
        CoERouter(RouterContext(pool=POOL3, registry=reg), explore_pick="least-labelled")
