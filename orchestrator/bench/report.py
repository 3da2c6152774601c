"""Writing a benchmark's results.json, report.md, plot.png and one fit-<router>.json per fitted
router. Accuracy is in percent everywhere a person reads it (report, plot, CLI table); the JSON
keeps fractions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def write_reports(report: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results": out / "results.json", "report": out / "report.md", "plot": out / "plot.png"}
    paths["results"].write_text(json.dumps(report, indent=2) + "\n")
    for name, m in report["routers"].items():
        if m.get("fit"):
            paths[f"fit:{name}"] = out / fit_file(name)
            paths[f"fit:{name}"].write_text(json.dumps(m["fit"], indent=2, default=str) + "\n")
    paths["report"].write_text(markdown_report(report))
    plot(report, paths["plot"])
    return paths


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal: 0.4523 -> "45.2"."""
    return f"{100 * x:.1f}"


def fit_file(router: str) -> str:
    """The file a router's full fit summary is written to, beside report.md."""
    return "fit-" + re.sub(r"[^A-Za-z0-9._@-]+", "_", router) + ".json"


def _scalars(summary: dict[str, Any]) -> str:
    """The summary's scalar fields in full (`key: value`); nested ones only by name."""
    flat = [f"{k}: {v}" for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None]
    nested = [k for k, v in summary.items() if not (isinstance(v, (str, int, float, bool)) or v is None)]
    return "; ".join(flat) + (f"; also {', '.join(nested)}" if nested else "")


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
            f"| {label} | {pct(m['accuracy'])} | {pct(m['ci95'][0])}–{pct(m['ci95'][1])} | {m['expert_calls_per_question']:.2f} | "
            f"{m['aggregator_calls_per_question']:.2f} | {_cost(m, key)} | "
            f"{m['active_params_b_per_question'] if m.get('active_params_b_per_question') is not None else '—'} | {m['tokens']}{'~' if m.get('tokens_estimated') else ''} | "
            f"{m['unparsed']} | {m['wall_s']:.1f} |"
        )
    if any(m.get("tokens_estimated") for m in routers.values()):
        lines.append("\n`~`: token counts estimated as characters / 4 (recorded outputs carry none).")
    cls = {n: m for n, m in routers.items() if m.get("classifier_accuracy") is not None}
    if cls:
        lines += ["", "Category classifier (predicted vs. the dataset's category): " + "; ".join(
            f"{n}: accuracy {pct(m['classifier_accuracy'])}%, fallback share {pct(m['fallback_rate'])}%" for n, m in cls.items())]
    shown: list[dict[str, Any]] = []
    for p in (r.get("paired_test"), r.get("paired_test_best_at_3_vs_all_vote")):
        if p and p not in shown:  # the best-at-3 test is often the same pair as the first
            shown.append(p)
            lines += ["", f"Paired test, {p['a']} vs {p['b']} on {p['n']} shared questions ({p['test']}): "
                      f"{p['a']} alone better on {p['a_only']}, {p['b']} alone better on {p['b_only']}, p = {p['p_value']:.3g}."]
    cats = sorted({c for m in routers.values() for c in m["per_category"]})
    if cats:
        names = list(routers)
        lines += ["", "## Accuracy per category (%)", "", "| category | n | " + " | ".join(names) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"]
        for c in cats:
            n = next((m["per_category"][c]["n"] for m in routers.values() if c in m["per_category"]), 0)
            cells = [pct(routers[nm]["per_category"][c]["accuracy"]) if c in routers[nm]["per_category"] else "" for nm in names]
            lines.append(f"| {c} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Expert usage (calls)", ""]
    for name, m in routers.items():
        usage = ", ".join(f"{e}: {k}" for e, k in list(m["expert_usage"].items())[:16])
        lines.append(f"- **{name}**: {usage or '—'}")
    fits = {n: m["fit"] for n, m in routers.items() if m.get("fit")}
    if fits:
        lines += ["", "## Fitted router summaries", "", "Each router's whole fit summary is in its JSON file (and in results.json).", ""]
        for n, f in fits.items():
            lines.append(f"- **{n}** ([{fit_file(n)}]({fit_file(n)})): {_scalars(f)}")
    return "\n".join(lines) + "\n"


def plot(r: dict[str, Any], path: Path) -> None:
    """Accuracy against cost per question (or calls per question when nothing has a price)."""
    import matplotlib

    matplotlib.use("Agg")  # no display here; must precede pyplot
    import matplotlib.pyplot as plt

    fig = figure(r)
    fig.savefig(path)
    plt.close(fig)


def cost_axis_label(r: dict[str, Any]) -> str:
    """The x axis: cost per question (USD or price units), saying where the prices come from
    (recorded pools price models by a stated convention, not a provider's list)."""
    _, _, base = cost_axis(r)
    info = r.get("pool_info", {})
    convention = info.get("price_convention")
    sources = {s.split(" × ")[0] for s in (info.get("price_sources") or {}).values()}
    if not convention and len(sources) == 1 and next(iter(sources)).startswith("convention: "):
        convention = next(iter(sources)).removeprefix("convention: ")
    if convention:
        return f"{base}\nstated convention: {convention}, not provider prices"
    if sources:
        return f"{base}\nprices: a stated convention or list prices (report.md), not what these runs cost"
    return f"{base}, at the prices in the expert config"


def accuracy_limits(routers: dict[str, Any]) -> tuple[float, float]:
    """The y range (percent) that shows the routers' points and intervals, upper bounds left out:
    an oracle far above must not squash them into the bottom of the plot."""
    shown = [m for m in routers.values() if not m.get("upper_bound")] or list(routers.values())
    lo = min(100 * m["ci95"][0] for m in shown)
    hi = max(100 * m["ci95"][1] for m in shown)
    pad = max(2.0, 0.15 * (hi - lo))
    return max(0.0, lo - pad), min(100.0, hi + pad)


def figure(r: dict[str, Any]) -> Figure:
    """The plot as a matplotlib figure: one marker (with its 95% interval) per router, every
    line in the legend, upper bounds as annotated horizontal lines. Configurations of one method
    (`knn@l0`, `knn@l1`, … a cost-quality sweep) are joined by a line: that method's own frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    routers = r["routers"]
    ckey, _, _ = cost_axis(r)
    use_cost = any((m.get(ckey) or 0) > 0 for m in routers.values())
    xkey, xlabel = (ckey, cost_axis_label(r)) if use_cost else (
        "expert_calls_per_question", "expert + aggregator calls per question")

    def x_of(m: dict[str, Any]) -> float:
        return (m.get(xkey) or 0.0) + (m["aggregator_calls_per_question"] if xkey == "expert_calls_per_question" else 0)

    fig, ax = plt.subplots(figsize=(10, 6), dpi=120)
    refs = {"oracle": ("tab:green", "oracle (upper bound)"), "best-single": ("tab:gray", "best single")}
    markers = "osD^vP*Xhp<>"
    tab10 = list(plt.get_cmap("tab10").colors)
    colours = [c for i, c in enumerate(tab10) if i not in (2, 7)]  # green and grey mark the reference lines
    order = sorted(routers.items(), key=lambda kv: -kv[1]["accuracy"])
    ylim = accuracy_limits(routers)
    methods: dict[str, list[str]] = {}
    for name, _ in order:
        methods.setdefault(name.split("@", 1)[0], []).append(name)
    sweeps = {b: names for b, names in methods.items() if len(names) > 1}
    method_colour = {b: colours[i % len(colours)] for i, b in enumerate(methods)}
    for i, (name, m) in enumerate(order):
        y = 100 * m["accuracy"]
        colour = refs[name][0] if name in refs else method_colour[name.split("@", 1)[0]]
        if m.get("upper_bound"):
            _upper_bound_line(ax, name, y, colour, ylim)
            continue
        x = x_of(m)
        err = [[y - 100 * m["ci95"][0]], [100 * m["ci95"][1] - y]]
        # One marker per router and a legend entry: labels written beside points collide.
        ax.errorbar([x], [y], yerr=err, fmt=markers[i % len(markers)], color=colour, capsize=4, markersize=8,
                    label=f"{name}: {y:.1f}%")
        if name in refs:
            ax.axhline(y, color=colour, linestyle="--", linewidth=1, alpha=0.6, label=f"{refs[name][1]} level")
    for base, names in sweeps.items():
        pts = sorted((x_of(routers[n]), 100 * routers[n]["accuracy"]) for n in names if not routers[n].get("upper_bound"))
        if len(pts) > 1:
            ax.plot(*zip(*pts), color=method_colour[base], linewidth=1.2, alpha=0.8, label=f"{base} sweep")
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
        xs = [x_of(m) for m in routers.values() if x_of(m) > 0 and not m.get("upper_bound")]
        if xs and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
            # Default minor-tick labels overlap at this width: label 1-2-5 steps in plain numbers.
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{r['dataset']}: {r['n_questions']} questions, pool of {len(r['pool'])}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def _upper_bound_line(ax: Axes, name: str, y: float, colour: Any, ylim: tuple[float, float]) -> None:
    """An upper bound (the oracle) as a dashed line in the legend, with its value written on the
    plot; above the routers' range it is drawn at the top edge, marked as off the scale."""
    lo, hi = ylim
    edge = 0.02 * (hi - lo)
    if y > hi:
        at, where, va = hi - edge, ", off scale ↑", "top"
    elif y < lo:
        at, where, va = lo + edge, ", off scale ↓", "bottom"
    else:
        at, where, va = y, "", "bottom"
    ax.axhline(at, color=colour, linestyle="--", linewidth=1.2, alpha=0.8, label=f"{name} (upper bound): {y:.1f}%{where}")
    ax.annotate(f"{name} (upper bound) {y:.1f}%{' ↑' if y > hi else ' ↓' if y < lo else ''}", xy=(0.99, at),
                xycoords=("axes fraction", "data"), ha="right", va=va, fontsize=8, color=colour)
