"""`orchestrator recorded split`: two disjoint recorded directories (fit, evaluation) from one.

    orchestrator recorded split ../shared/data/recorded/mmlu_pro_tiger --fit-out out/fit --eval-out out/eval --pool small16
    orchestrator bench --recorded out/eval --fit-recorded out/fit --pool small16 -r symbolic-moe
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._common import PoolOpt, comma_names, console, fail

app = typer.Typer(no_args_is_help=True, help="Recorded-output directories (partition for held-out benchmarks).")


@app.command("split")
def split(
    source: Annotated[Path, typer.Argument(help="A recorded directory (responses/ or the generic outcomes format)")],
    fit_out: Annotated[Path, typer.Option("--fit-out", help="New directory for the fit part")],
    eval_out: Annotated[Path, typer.Option("--eval-out", help="New directory for the evaluation part")],
    fit_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of question ids for fitting")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the split by question id")] = 0,
    pool: PoolOpt = None,
) -> None:
    """Partition SOURCE by question id into two disjoint directories; rows are copied, never made up."""
    from evals.recorded_split import split_recorded
    from experts.errors import ConfigError

    if not source.is_dir():
        fail(f"{source}: no such directory")
    try:
        summary = split_recorded(source, fit_out, eval_out, fit_fraction=fit_fraction, seed=seed, pool=comma_names(pool))
    except ConfigError as e:
        fail(str(e))
    console().print_json(json.dumps(asdict(summary)))
