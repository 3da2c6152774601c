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


def markdown_report(r: dict[str, Any]) -> str:
    routers = r["routers"]
    lines = [
        f"# Benchmark: {r['dataset']}, {r['n_questions']} questions",
        "",
        f"- Pool ({len(r['pool'])}): {', '.join(r['pool'])}",
        f"- Fit: {r['fit']}",
        f"- Prompt: {r['prompt']}; scoring: {r['scoring']}",
    ]
    info = r.get("pool_info", {})
    if info.get("mode") == "recorded":
        lines.append(f"- Recorded outputs: {info['directory']}; questions covered by every model: {info['covered_by_every_model']} of {info['questions_in_dataset']}")
        lines.append(f"- Prices: {info['price_convention']} (a stated convention for a cost axis, not a provider price list)")
    lines += ["", "## Results", "", "| router | accuracy % | 95% CI | expert calls/q | aggregator calls/q | cost $/q | active params B/q | tokens | unparsed | wall s |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in sorted(routers.items(), key=lambda kv: -kv[1]["accuracy"]):
        label = f"{name} (upper bound)" if m.get("upper_bound") else name
        lines.append(
            f"| {label} | {_pct(m['accuracy'])} | {_pct(m['ci95'][0])}–{_pct(m['ci95'][1])} | {m['expert_calls_per_question']:.2f} | "
            f"{m['aggregator_calls_per_question']:.2f} | {m['cost_per_question_usd']:.6f} | "
            f"{m['active_params_b_per_question'] if m.get('active_params_b_per_question') is not None else '—'} | {m['tokens']}{'~' if m.get('tokens_estimated') else ''} | "
            f"{m['unparsed']} | {m['wall_s']:.1f} |"
        )
    if any(m.get("tokens_estimated") for m in routers.values()):
        lines.append("\n`~`: token counts estimated as characters / 4 (recorded outputs carry none).")
    cls = {n: m for n, m in routers.items() if m.get("classifier_accuracy") is not None}
    if cls:
        lines += ["", "Category classifier (predicted vs. the dataset's category): " + "; ".join(
            f"{n}: accuracy {_pct(m['classifier_accuracy'])}%, fallback share {_pct(m['fallback_rate'])}%" for n, m in cls.items())]
    p = r.get("paired_test")
    if p:
        lines += ["", f"Paired test, {p['a']} vs {p['b']} on {p['n']} shared questions ({p['test']}): "
                  f"{p['a']} alone right on {p['a_only']}, {p['b']} alone right on {p['b_only']}, p = {p['p_value']:.3g}."]
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
    """Accuracy against cost per question (or calls per question when nothing has a price)."""
    routers = r["routers"]
    use_cost = any(m["cost_per_question_usd"] > 0 for m in routers.values())
    xkey, xlabel = ("cost_per_question_usd", "cost per question (USD)") if use_cost else ("expert_calls_per_question", "expert calls per question")
    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
    refs = {"oracle": ("tab:green", "oracle (upper bound)"), "best-single": ("tab:gray", "best single")}
    markers = "osD^vP*Xhp<>"
    tab10 = list(plt.get_cmap("tab10").colors)
    colours = [c for i, c in enumerate(tab10) if i not in (2, 7)]  # green and grey mark the reference lines
    order = sorted(routers.items(), key=lambda kv: -kv[1]["accuracy"])
    for i, (name, m) in enumerate(order):
        x = m[xkey] + (m["aggregator_calls_per_question"] if xkey == "expert_calls_per_question" else 0)
        y = 100 * m["accuracy"]
        err = [[y - 100 * m["ci95"][0]], [100 * m["ci95"][1] - y]]
        colour = refs[name][0] if name in refs else colours[i % len(colours)]
        # One marker per router and a legend entry: labels written beside points collide.
        ax.errorbar([x], [y], yerr=err, fmt=markers[i % len(markers)], color=colour, capsize=4, markersize=8,
                    label=f"{name}: {y:.1f}%")
        if name in refs:
            ax.axhline(y, color=colour, linestyle="--", linewidth=1, alpha=0.6)
    # The accuracy/cost frontier: routers no other router beats on both axes.
    pts = sorted(((m[xkey], 100 * m["accuracy"], n) for n, m in routers.items() if not m.get("upper_bound")))
    frontier, best = [], -1.0
    for x, y, _ in pts:
        if y > best:
            frontier.append((x, y))
            best = y
    if len(frontier) > 1:
        ax.plot(*zip(*frontier), color="black", linestyle=":", linewidth=1.2, alpha=0.7, label="frontier")
    if use_cost:
        xs = [m[xkey] for m in routers.values() if m[xkey] > 0]
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
