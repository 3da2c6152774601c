"""Descriptions of the pool experts for the policy prompt, generated from the registry.

    descs = await build_descriptors(registry, pool, store)      # price, latency, accuracy from the store
    lines = [d.render("full") for d in descs]                    # or d.render("prose")

Two styles, because the paper and its code disagree (reference §1.1): "prose" is what the
released template holds (one paragraph per model: here the registry's `description`); "full"
adds what the abstract promises: price, measured latency, and example performance (accuracy per
category from stored benchmark runs in which the expert answered alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from experts.registry import ExpertRegistry
    from store.repository import Store

DescriptorStyle = Literal["prose", "full"]
DESCRIPTOR_STYLES: tuple[str, ...] = ("prose", "full")


class CategoryAccuracy(BaseModel):
    n: int
    accuracy: float


class ExpertDescriptor(BaseModel):
    name: str
    description: str = ""
    price_out_per_mtok: float = 0.0
    price_in_per_mtok: float = 0.0
    mean_latency_s: float | None = None
    latency_calls: int = 0
    accuracy: dict[str, CategoryAccuracy] = Field(default_factory=dict)

    def render(self, style: DescriptorStyle = "full", max_categories: int = 6) -> str:
        text = f"- {self.name}: {self.description.strip() or 'no description given'}"
        if style == "prose":
            return text
        facts = [f"price ${self.price_out_per_mtok:g} per 1M output tokens"]
        if self.mean_latency_s is not None:
            facts.append(f"mean latency {self.mean_latency_s:.2f} s over {self.latency_calls} calls")
        if self.accuracy:
            top = sorted(self.accuracy.items(), key=lambda kv: -kv[1].n)[:max_categories]
            facts.append("accuracy by category: " + ", ".join(f"{c} {a.accuracy:.2f} (n={a.n})" for c, a in top))
        return f"{text} ({'; '.join(facts)})"


def accuracy_from_bench_results(expert: str, results: Iterable[dict[str, Any]]) -> dict[str, CategoryAccuracy]:
    """Per-category accuracy of `expert` over stored benchmark results (results.json dicts).

    Only router results in which this expert answered every question alone count (e.g. the
    `single` or `best-single` baseline); several runs are merged weighted by n."""
    correct: dict[str, float] = {}
    total: dict[str, int] = {}
    for res in results:
        for r in (res.get("routers") or {}).values():
            usage = r.get("expert_usage") or {}
            if list(usage) != [expert] or r.get("expert_calls_per_question", 1.0) > 1.0:
                continue
            for cat, m in (r.get("per_category") or {}).items():
                n = int(m.get("n", 0))
                correct[cat] = correct.get(cat, 0.0) + float(m.get("accuracy", 0.0)) * n
                total[cat] = total.get(cat, 0) + n
    return {c: CategoryAccuracy(n=total[c], accuracy=round(correct[c] / total[c], 4)) for c in total if total[c]}


async def build_descriptors(
    registry: "ExpertRegistry", pool: Sequence[str], store: "Store | None" = None, *, bench_runs: int = 20
) -> list[ExpertDescriptor]:
    """One descriptor per pool expert: registry facts, plus store measurements when a store is given."""
    latency: dict[str, dict[str, float]] = {}
    results: list[dict[str, Any]] = []
    if store is not None:
        latency = await store.expert_latency_stats()
        results = await store.latest_bench_results(bench_runs)
    out = []
    for name in pool:
        spec = registry.spec(name)
        lat = latency.get(spec.name)
        out.append(
            ExpertDescriptor(
                name=spec.name,
                description=spec.description,
                price_out_per_mtok=spec.price_per_mtok.output,
                price_in_per_mtok=spec.price_per_mtok.input,
                mean_latency_s=lat["mean_latency_s"] if lat else None,
                latency_calls=int(lat["calls"]) if lat else 0,
                accuracy=accuracy_from_bench_results(spec.name, results),
            )
        )
    return out
