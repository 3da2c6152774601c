"""CoE: the classifier, the exact budgeted assignment, the fallback, persistence."""

import random

import numpy as np
import pytest

from conftest import POOL3, recorded_specs
from experts import ExpertRegistry
from routers.types import FitData, FitOutcome, Query, RouterContext, RoutingError
from routers.coe import CoERouter
from routers.coe.assignment import InfeasibleBudget, brute_force_assignment, solve_assignment
from routers.coe.classifier import CategoryClassifier
from routers.embeddings import SentenceEmbedder

LABELLED = {
    "law": ["Is a verbal contract enforceable in court?", "What must a prosecutor prove for burglary?",
            "Can a landlord evict a tenant without notice?", "Is hearsay admissible as evidence?",
            "What is the statute of limitations for fraud?", "Does the First Amendment protect hate speech?"],
    "chemistry": ["What is the pH of a 0.01 M HCl solution?", "Balance the combustion of methane.",
                  "Which bond is stronger, C=C or C-C?", "How many moles are in 18 g of water?",
                  "What is the oxidation state of Mn in KMnO4?", "Name the product of an esterification."],
    "history": ["Who won the Battle of Hastings?", "When did the Berlin Wall fall?", "Why did the Roman Empire decline?",
                "What started the First World War?", "Who was the first emperor of China?", "What was the Marshall Plan?"],
}


async def test_classifier_trains_and_predicts_on_a_small_labelled_set() -> None:
    emb = SentenceEmbedder(cache_path=None)
    texts = [t for ts in LABELLED.values() for t in ts]
    labels = [c for c, ts in LABELLED.items() for _ in ts]
    clf = CategoryClassifier().fit(await emb.embed(texts), labels)
    assert clf.chosen in ("knn", "logreg") and set(clf.validation) == {"knn", "logreg"}
    cats, conf = clf.predict(await emb.embed(["Is a prenuptial agreement binding?", "What is the molar mass of NaCl?",
                                              "Who led the French Revolution's Reign of Terror?"]))
    assert cats == ["law", "chemistry", "history"]
    assert np.all((conf > 0) & (conf <= 1))
    back = CategoryClassifier.loads(clf.dumps())
    assert back.predict(await emb.embed(["Is a will valid without witnesses?"]))[0] == ["law"]


@pytest.mark.parametrize("seed", range(12))
def test_budgeted_assignment_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    cats = [f"c{i}" for i in range(rng.randint(2, 4))]
    experts = [f"e{j}" for j in range(rng.randint(2, 4))]
    acc = {c: {e: rng.random() for e in experts} for c in cats}
    freq = {c: rng.randint(1, 50) for c in cats}
    cost = {e: rng.choice([1, 3, 7, 8, 14, 34]) for e in experts}
    for budget in (None, min(cost.values()) + 0.5, float(np.mean(list(cost.values()))), max(cost.values())):
        exact = solve_assignment(acc, freq, cost, budget)
        brute = brute_force_assignment(acc, freq, cost, budget)
        assert exact.expected_accuracy == pytest.approx(brute.expected_accuracy, abs=1e-9)
        if budget is not None:
            assert exact.expected_cost <= budget + 1e-9


def test_a_budget_below_the_cheapest_expert_is_infeasible() -> None:
    with pytest.raises(InfeasibleBudget, match="cheapest possible"):
        solve_assignment({"c": {"a": 1.0, "b": 0.5}}, {"c": 1}, {"a": 10, "b": 5}, budget=4)


def _fit_data() -> FitData:
    """Synthetic fit data (questions from LABELLED) with made-up outcomes: expert 0 is right on
    law, expert 1 on chemistry, expert 2 on history — so the map is known in advance."""
    qs, outcomes = [], {m: {} for m in POOL3}
    i = 0
    for rep in range(4):
        for c, ts in LABELLED.items():
            for t in ts:
                qid = f"q{i}"
                i += 1
                qs.append(Query(text=f"{t} ({rep})", question_id=qid, category=c, choices=("a", "b")))
                for m, good in zip(POOL3, ("law", "chemistry", "history"), strict=True):
                    outcomes[m][qid] = FitOutcome(correct=(c == good) or (m == POOL3[0] and rep == 0))
    return FitData(qs, outcomes, "synthetic")


async def test_router_maps_categories_falls_back_and_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from store import Store

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}") as store:
        ctx = RouterContext(pool=POOL3, registry=reg, store=store, seed=0)
        router = CoERouter(ctx, budget_kind="cost", threshold=0.5, fallback=POOL3[0])
        info = await router.fit(_fit_data())
        assert info["mapping"] == {"law": POOL3[0], "chemistry": POOL3[1], "history": POOL3[2]}
        q = [Query(text="What is the molar mass of NaCl?"), Query(text="Who won the Battle of Waterloo?")]
        plans = await router.route_batch(q)
        assert [p.experts[0] for p in plans] == [POOL3[1], POOL3[2]]
        assert plans[0].detail["predicted_category"] == "chemistry"

        # Below the threshold: the generalist answers, and the plan says so.
        router.threshold = 1.01
        low = await router.route_batch(q)
        assert all(p.experts == [POOL3[0]] and p.detail["fallback_used"] for p in low)
        assert "fallback generalist" in low[0].assignments[0].reason

        restored = CoERouter(RouterContext(pool=POOL3, registry=reg, store=store))
        assert await restored.restore()
        assert restored.mapping == router.mapping and restored.threshold == 0.5
        assert [p.experts for p in await restored.route_batch(q)] == [p.experts for p in plans]


async def test_threshold_calibration_to_a_target_fallback_rate() -> None:
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    router = CoERouter(RouterContext(pool=POOL3, registry=reg, seed=1), budget_kind="cost", calibrate="rate", target_fallback_rate=0.25)
    info = await router.fit(_fit_data())
    assert abs(info["fallback_rate_held_out"] - 0.25) <= 0.15
    with pytest.raises(RoutingError, match="decision must be"):
        CoERouter(RouterContext(pool=POOL3, registry=reg), decision="magic")


# ---------------------------------------------------------------- defects fixed (issue 17)
async def test_restore_keeps_the_fitted_decision_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from store import Store

    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}") as store:
        router = CoERouter(RouterContext(pool=POOL3, registry=reg, store=store), budget_kind="cost", decision="expected")
        await router.fit(_fit_data())
        restored = CoERouter(RouterContext(pool=POOL3, registry=reg, store=store))  # default decision: argmax
        assert await restored.restore()
        assert restored.decision == "expected"
        q = [Query(text="What is the molar mass of NaCl?")]
        assert (await restored.route_batch(q))[0].experts == (await router.route_batch(q))[0].experts


async def test_a_user_taxonomy_maps_its_own_labels_instead_of_falling_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """labels_path with labels the dataset does not use: the map is over the user's labels."""
    names = {"law": "legal", "chemistry": "science", "history": "past"}
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(f'{{"text": "{t} [{i}]", "label": "{names[c]}"}}\n'
                            for c, ts in LABELLED.items() for t in ts for i in range(2)))
    reg = ExpertRegistry.from_specs(recorded_specs(POOL3))
    router = CoERouter(RouterContext(pool=POOL3, registry=reg, seed=0), budget_kind="cost", threshold=0.0, labels_path=str(path))
    info = await router.fit(_fit_data())
    assert info["mapping"] == {"legal": POOL3[0], "science": POOL3[1], "past": POOL3[2]}
    plans = await router.route_batch([Query(text="What is the molar mass of NaCl?"), Query(text="Who won the Battle of Waterloo?")])
    assert [p.experts[0] for p in plans] == [POOL3[1], POOL3[2]]
    assert not any(p.detail["fallback_used"] for p in plans)


async def test_the_budget_counts_the_fallback_on_held_out_fit_questions() -> None:
    """A generalist fallback bigger than the budget: calibration lets it fire only as often as
    the budget allows (argmax), and the expected rule trades accuracy for size."""
    from experts import ExpertSpec

    from conftest import RECORDED

    # the first expert (right on law, and on everything in the first repetition: the generalist)
    # has 10B parameters, the others 1B
    sizes = {POOL3[0]: 10.0, POOL3[1]: 1.0, POOL3[2]: 1.0}
    reg = ExpertRegistry.from_specs([ExpertSpec(name=m, backend="recorded", path=str(RECORDED), model=m, params_b=b)
                                     for m, b in sizes.items()])
    data = _fit_data()
    for decision in ("argmax", "expected"):
        router = CoERouter(RouterContext(pool=POOL3, registry=reg, seed=0), budget=3.0, decision=decision, fallback=POOL3[0])
        info = await router.fit(data)
        assert info["budget_kind"] == "params" and info["expected_cost_held_out"] <= 3.0, decision
        free = await CoERouter(RouterContext(pool=POOL3, registry=reg, seed=0), decision=decision, fallback=POOL3[0]).fit(data)
        assert free["expected_cost_held_out"] > 3.0, decision  # unconstrained, it would overspend
