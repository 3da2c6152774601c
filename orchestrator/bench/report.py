"""Writing a benchmark's results.json, report.md and plot.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display here; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "report": out / "report.md", "plot": out / "plot.png"}
    paths["results"].write_text(json.dumps(report, indent=2) + "\n")
    paths["report"].write_text(markdown_report(report))
    plot(report, paths["plot"])
    return paths


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def cost_axis(r: dict[str, Any]) -> tuple[str, str, str]:
    """(per-question key, column header, axis label) of the run's cost axis: dollars when every
    call's cost is known, else price units (the called experts' prices summed)."""
    if r.get("cost_axis", "usd") == "usd":
        return "cost_per_question_usd", "cost $/q", "cost per question (USD)"
    return "cost_units_per_question", "price units/q", "price units per question (Σ called experts' USD/Mtok)"


def _cost(m: dict[str, Any], key: str) -> str:
    v = m.get(key)
    return "—" if v is None else f"{v:.6f}" if key.endswith("usd") else f"{v:.3f}"


def markdown_report(r: dict[str, Any]) -> str:
    routers = r["routers"]
    key, header, _ = cost_axis(r)
    lines = [
        f"# Benchmark: {r['dataset']}, {r['n_questions']} questions",
        "",
        f"- Pool ({len(r['pool'])}): {', '.join(r['pool'])}",
        f"- Fit: {r['fit']}",
        f"- Prompt: {r['prompt']}; scoring: {r['scoring']}",
        f"- Cost axis: {r.get('cost_note', 'USD per question')}",
    ]
    info = r.get("pool_info", {})
    if info.get("mode") == "recorded":
        if "covered_by_every_model" in info and "questions_in_dataset" in info:
            lines.append(f"- Recorded outputs: {info['directory']}; questions covered by every model: {info['covered_by_every_model']} of {info['questions_in_dataset']}")
        else:
            lines.append(f"- Recorded outputs: {info['directory']} ({info.get('layout', 'responses')} layout)")
        sources = info.get("price_sources") or {}
        if sources:
            lines.append("- Prices (USD per Mtok, for the cost axis; a stated convention or a list price, not what these runs cost):")
            lines += [f"  - {m}: {src}" for m, src in sources.items()]
        elif "price_convention" in info:
            lines.append(f"- Prices: {info['price_convention']} (a stated convention for a cost axis, not a provider price list)")
    lines += ["", "## Results", "", f"| router | accuracy % | 95% CI | expert calls/q | aggregator calls/q | {header} | active params B/q | tokens | unparsed | wall s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in sorted(routers.items(), key=lambda kv: -kv[1]["accuracy"]):
        label = f"{name} (upper bound)" if m.get("upper_bound") else name
        lines.append(
            f"| {label} | {_pct(m['accuracy'])} | {_pct(m['ci95'][0])}–{_pct(m['ci95'][1])} | {m['expert_calls_per_question']:.2f} | "
            f"{m['aggregator_calls_per_question']:.2f} | {_cost(m, key)} | "
            f"{m['active_params_b_per_question'] if m.get('active_params_b_per_question') is not None else '—'} | {m['tokens']}{'~' if m.get('tokens_estimated') else ''} | "
            f"{m['unparsed']} | {m['wall_s']:.1f} |"
        )
    if any(m.get("tokens_estimated") for m in routers.values()):
        lines.append("\n`~`: token counts estimated as characters / 4 (recorded outputs carry none).")
    cls = {n: m for n, m in routers.items() if m.get("classifier_accuracy") is not None}
    if cls:
        lines += ["", "Category classifier (predicted vs. the dataset's category): " + "; ".join(
            f"{n}: accuracy {_pct(m['classifier_accuracy'])}%, fallback share {_pct(m['fallback_rate'])}%" for n, m in cls.items())]
    for p in (r.get("paired_test"), r.get("paired_test_best_at_3_vs_all_vote")):
        if p:
            lines += ["", f"Paired test, {p['a']} vs {p['b']} on {p['n']} shared questions ({p['test']}): "
                      f"{p['a']} alone better on {p['a_only']}, {p['b']} alone better on {p['b_only']}, p = {p['p_value']:.3g}."]
    cats = sorted({c for m in routers.values() for c in m["per_category"]})
    if cats:
        names = list(routers)
        lines += ["", "## Accuracy per category (%)", "", "| category | n | " + " | ".join(names) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for c in cats:
            n = next((m["per_category"][c]["n"] for m in routers.values() if c in m["per_category"]), 0)
            cells = [_pct(routers[nm]["per_category"][c]["accuracy"]) if c in routers[nm]["per_category"] else "" for nm in names]
            lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Expert usage (calls)", ""]
    for name, m in routers.items():
        usage = ", ".join(f"{e}: {k}" for e, k in list(m["expert_usage"].items())[:16])
        lines.append(f"- **{name}**: {usage or '—'}")
    fits = {n: m["fit"] for n, m in routers.items() if m.get("fit")}
    if fits:
        lines += ["", "## Fitted router summaries", ""]
        for n, f in fits.items():
            lines.append(f"- **{n}**: `{json.dumps(f, default=str)[:600]}`")
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    """Accuracy against cost per question (or calls per question when nothing has a price).

    Configurations of one method (`knn@l0`, `knn@l1`, … a cost-quality sweep) are joined by a
    line: that method's own frontier."""
    routers = r["routers"]
    ckey, _, clabel = cost_axis(r)
    use_cost = any((m.get(ckey) or 0) > 0 for m in routers.values())
    xkey, xlabel = (ckey, clabel) if use_cost else ("expert_calls_per_question", "expert calls per question")

    def x_of(m: dict[str, Any]) -> float:
        return (m.get(xkey) or 0.0) + (m["aggregator_calls_per_question"] if xkey == "expert_calls_per_question" else 0)

    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
    refs = {"oracle": ("tab:green", "oracle (upper bound)"), "best-single": ("tab:gray", "best single")}
    markers = "osD^vP*Xhp<>"
    tab10 = list(plt.get_cmap("tab10").colors)
    colours = [c for i, c in enumerate(tab10) if i not in (2, 7)]  # green and grey mark the reference lines
    order = sorted(routers.items(), key=lambda kv: -kv[1]["accuracy"])
    methods: dict[str, list[str]] = {}
    for name, _ in order:
        methods.setdefault(name.split("@", 1)[0], []).append(name)
    sweeps = {b: names for b, names in methods.items() if len(names) > 1}
    method_colour = {b: colours[i % len(colours)] for i, b in enumerate(methods)}
    for i, (name, m) in enumerate(order):
        x, y = x_of(m), 100 * m["accuracy"]
        err = [[y - 100 * m["ci95"][0]], [100 * m["ci95"][1] - y]]
        base = name.split("@", 1)[0]
        colour = refs[name][0] if name in refs else method_colour[base]
        # One marker per router and a legend entry: labels written beside points collide.
        ax.errorbar([x], [y], yerr=err, fmt=markers[i % len(markers)], color=colour, capsize=4, markersize=8,
                    label=f"{name}: {y:.1f}%")
        if name in refs:
            ax.axhline(y, color=colour, linestyle="--", linewidth=1, alpha=0.6)
    for base, names in sweeps.items():
        pts = sorted((x_of(routers[n]), 100 * routers[n]["accuracy"]) for n in names)
        ax.plot(*zip(*pts), color=method_colour[base], linewidth=1.2, alpha=0.8)
    # The accuracy/cost frontier: routers no other router beats on both axes.
    pts = sorted(((x_of(m), 100 * m["accuracy"], n) for n, m in routers.items() if not m.get("upper_bound")))
    frontier, best = [], -1.0
    for x, y, _ in pts:
        if y > best:
            frontier.append((x, y))
            best = y
    if len(frontier) > 1:
        ax.plot(*zip(*frontier), color="black", linestyle=":", linewidth=1.2, alpha=0.7, label="frontier")
    if use_cost:
        xs = [x_of(m) for m in routers.values() if x_of(m) > 0]
        if xs and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            # Default minor-tick labels overlap at this width: label 1-2-5 steps in plain numbers.
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{r['dataset']}: {r['n_questions']} questions, pool of {len(r['pool'])}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
