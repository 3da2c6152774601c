"""The Rich table of a load test: per level and target, latency, added latency, rps, errors; ratios."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from orchestrator.loadtest.run import LoadtestResult, added, ratios, worker_scaling

TARGET_ORDER = ("direct", "ours", "litellm")


def _fmt(v: float | None, suffix: str = "") -> str:
    return "—" if v is None else f"{v:.2f}{suffix}"


def print_report(console: Console, result: LoadtestResult) -> None:
    if console.width < 140:  # eleven columns: never squeeze the numbers into ellipses
        console = Console(width=140, file=console.file)
    t = Table(title="Gateway overhead (ours: one worker; ours_Nw: serve --workers N; instant loopback upstream; added = minus direct; "
                    "CPU ms/req = server process CPU per request)")
    for col in ("conc.", "target", "p50 ms", "p95 ms", "p99 ms", "added p50", "added p95", "added p99", "req/s", "errors", "CPU ms/req"):
        t.add_column(col, justify="right" if col not in ("target",) else "left")
    for c, targets in sorted(result.levels.items()):
        d = targets["direct"]
        for name in (*TARGET_ORDER, *sorted(n for n in targets if n not in TARGET_ORDER)):
            s = targets.get(name)
            if s is None:
                continue
            add = ["—"] * 3 if name == "direct" else [_fmt(added(s, d, p)) for p in ("p50_ms", "p95_ms", "p99_ms")]
            t.add_row(str(c), name, _fmt(s.p50_ms), _fmt(s.p95_ms), _fmt(s.p99_ms), *add, f"{s.rps:,.0f}", str(s.errors),
                      _fmt(s.server_cpu_ms_per_request))
        t.add_section()
    console.print(t)
    rows = [(c, ratios(targets)) for c, targets in sorted(result.levels.items())]
    if any(r for _, r in rows):
        rt = Table(title="Ours / LiteLLM (added latency: lower is better; throughput: higher is better)")
        for col in ("conc.", "added p50", "added p95", "added p99", "req/s"):
            rt.add_column(col, justify="right")
        for c, r in rows:
            rt.add_row(str(c), _fmt(r.get("added_p50"), "×"), _fmt(r.get("added_p95"), "×"), _fmt(r.get("added_p99"), "×"), _fmt(r.get("rps"), "×"))
        console.print(rt)
    scaling = [(c, worker_scaling(targets)) for c, targets in sorted(result.levels.items())]
    if any(x is not None for _, x in scaling):
        console.print("workers / one worker, throughput in the same run: "
                      + ", ".join(f"concurrency {c}: {x:.2f}×" for c, x in scaling if x is not None))
    if result.traces_recorded is not None:
        console.print(f"traces recorded by the gateway: {result.traces_recorded:,}; answered requests wrk counted: "
                      f"{result.gateway_requests:,} (wrk does not count the requests still in flight when a run ends)")
