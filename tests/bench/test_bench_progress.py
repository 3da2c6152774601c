"""The bench as a user watches it: one progress display that fits a 24x80 terminal, plain lines
while the run goes when stderr is not a terminal, tables and reports in one unit."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from conftest import REPO, RECORDED
from orchestrator.bench.report import accuracy_limits, figure, fit_file
from orchestrator.bench.runner import BenchOptions, run_benchmark
from orchestrator.progress import PhaseProgress
from store import Store

POOL = ["Meta-Llama-3.1-8B-Instruct", "Phi-3-mini-4k-instruct", "Yi-34B", "Mixtral-8x7B-Instruct-v0.1", "gemma-7b"]
ROUTERS = ["best-single", "all-vote", "oracle", "random", "symbolic-moe"]


@pytest.fixture(scope="module")
def five_routers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A recorded bench of five routers through the live display on a 24x80 recording console;
    every row count and width the display had while the run went."""
    tmp = tmp_path_factory.mktemp("five")
    con = Console(file=io.StringIO(), record=True, width=80, height=24, force_terminal=True, color_system=None)
    display = PhaseProgress(con, title="bench", steps=["prepare", "fit", *ROUTERS])
    assert display.live
    shapes: list[tuple[int, int]] = []
    phases: list[str] = []

    def hook(phase: str, done: int, total: int) -> None:
        display(phase, done, total)
        phases.append(phase)
        lines = con.render_lines(display, con.options)
        shapes.append((len(lines), max(sum(len(seg.text) for seg in line) for line in lines)))

    opts = BenchOptions(dataset="mmlu-pro", recorded=RECORDED, pool=POOL, routers=ROUTERS, limit=60, seed=3, out=tmp / "out")

    async def go() -> dict:
        async with await Store.open(f"sqlite+aiosqlite:///{tmp / 'b.db'}") as store:
            with display:
                return await run_benchmark(opts, store, progress=hook)

    import asyncio

    report = asyncio.run(go())
    return {"report": report, "shapes": shapes, "phases": phases, "console": con, "out": tmp / "out"}


def test_the_live_display_of_five_routers_stays_within_24_rows(five_routers: dict) -> None:
    shapes, phases = five_routers["shapes"], five_routers["phases"]
    assert len(shapes) > 50  # many phases went by: routers x (route, generate per expert, done)
    assert {p.split(":")[0] for p in phases} == {"prepare", "fit", *ROUTERS}
    # A fitted router's own fit work (embedding its fit questions) is a phase of its step, before its questions.
    assert phases.index("symbolic-moe:embed fit questions") < phases.index("symbolic-moe:done")
    assert max(rows for rows, _ in shapes) <= 3 <= 24
    assert max(width for _, width in shapes) <= 80
    # What stayed on screen: one line per finished step, none wider than the terminal, no
    # `...` rows of a display taller than the screen.
    text = five_routers["console"].export_text()
    at = [text.find(f"] {r}: done in ") for r in ROUTERS]
    assert -1 not in at and at == sorted(at)
    assert "..." not in text.split()


def test_plain_progress_lines_arrive_while_the_bench_runs(tmp_path: Path) -> None:
    """`orchestrator bench` with stderr a pipe: each line is timed as it arrives."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCHESTRATOR_STORE": f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
           "ORCHESTRATOR_PROGRESS_INTERVAL": "0.1", "COLUMNS": "80"}  # short: on a fast machine each phase lasts under a second
    cmd = [sys.executable, "-m", "orchestrator.cli", "bench", "--recorded", str(RECORDED), "--pool", ",".join(POOL),
           "--limit", "200", "--out", str(tmp_path / "out")] + [a for r in ROUTERS for a in ("-r", r)]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrived: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            arrived.append((time.monotonic(), line.rstrip("\n")))

    reader = threading.Thread(target=read)
    reader.start()
    assert proc.stdout is not None
    stdout = proc.stdout.read()  # stderr is the reader's alone (communicate() would read it too)
    proc.wait(timeout=900)
    ended = time.monotonic()
    reader.join()
    assert proc.returncode == 0, "\n".join(line for _, line in arrived)
    lines = [line for _, line in arrived]
    assert not any("━" in line for line in lines)  # no bars, only log lines
    for i, step in enumerate(["prepare questions and pool", "fit data", *ROUTERS], 1):
        assert any(f"bench [{i}/7] {step}: started" in line for line in lines), lines
        assert any(f"bench [{i}/7] {step}: done in " in line for line in lines), lines
    # As the run goes, not at its end: the first line came long before the last, and the
    # preparation was reported before any router had started.
    first, last = arrived[0][0], arrived[-1][0]
    assert last - first > 2.0 and ended - first > 2.0
    prepared = next(t for t, line in arrived if "prepare questions and pool: done" in line)
    started = next(t for t, line in arrived if f"[7/7] {ROUTERS[-1]}: started" in line)
    assert started - prepared > 0.5
    # The periodic line names the phase, its count and an ETA.
    assert any(" elapsed, ETA " in line for line in lines), lines
    # The table: accuracy in percent, as in report.md, every router label whole.
    table = stdout.split("paired", 1)[0]
    assert "acc %" in table and "oracle (upper bound)" in table
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    for name, m in results["routers"].items():
        assert f"{100 * m['accuracy']:.1f}" in table and name in table
    assert max(map(len, stdout.splitlines())) <= 80


def test_report_zooms_on_the_routers_and_labels_every_line(five_routers: dict) -> None:
    report, out = five_routers["report"], five_routers["out"]
    fig = figure(report)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert (lo, hi) == accuracy_limits(report["routers"])
    oracle = 100 * report["routers"]["oracle"]["accuracy"]
    routers = {n: m for n, m in report["routers"].items() if not m["upper_bound"]}
    assert all(lo <= 100 * m["ci95"][0] and 100 * m["ci95"][1] <= hi for m in routers.values())
    assert oracle > hi  # the upper bound is off the routers' scale here...
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith(f"oracle (upper bound): {oracle:.1f}%") for t in legend)  # ...but in the legend
    assert any(f"oracle (upper bound) {oracle:.1f}%" in t.get_text() for t in ax.texts)  # and written on the plot
    labelled = [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    assert labelled and all(label in legend for label in labelled)  # every drawn line has its entry
    for name in routers:
        assert any(t.startswith(f"{name}: ") for t in legend)
    assert "stated convention" in ax.get_xlabel() and "per billion parameters" in ax.get_xlabel()

    md = (out / "report.md").read_text()
    assert "| accuracy % |" in md
    fitted = {n: m["fit"] for n, m in report["routers"].items() if m.get("fit")}
    assert set(fitted) == {"best-single", "symbolic-moe"}
    for name, summary in fitted.items():
        assert f"[{fit_file(name)}]({fit_file(name)})" in md
        assert json.loads((out / fit_file(name)).read_text()) == json.loads(json.dumps(summary, default=str))
        for key, value in summary.items():  # scalar fields in full, not cut mid-string
            if isinstance(value, (str, int, float)):
                assert f"{key}: {value}" in md


def test_eta_after_a_batch_burst_is_the_batch_rate() -> None:
    """A batch of 8 reports its items within milliseconds: the ETA must come from the time
    between batches, not from the milliseconds inside one (which read as ~0 s left)."""
    clock_s = [0.0]
    con = Console(file=io.StringIO(), width=80, force_terminal=False, color_system=None)
    display = PhaseProgress(con, title="fit", steps=["fit"], interval_s=3600, now=lambda: clock_s[0])
    display("fit:generate:tiny", 0, 40)
    clock_s[0] = 30.0  # model load, then the first batch of 8
    for i in range(1, 9):
        display("fit:generate:tiny", i, 40)
        clock_s[0] += 0.001
    clock_s[0] = 45.0
    # 8 done; 32 left: the only rate known is the phase's (8 per 45 s) -> about 180 s
    assert "ETA 0:03:00" in display.status_line(), display.status_line()
    clock_s[0] = 50.0
    for i in range(9, 17):  # the second batch, 20 s after the first
        display("fit:generate:tiny", i, 40)
        clock_s[0] += 0.001
    # 8 per 20 s from batch to batch, 24 left: 60 s
    line = display.status_line()
    assert "ETA 0:01:00" in line, line
