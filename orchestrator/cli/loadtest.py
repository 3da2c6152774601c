"""`orchestrator loadtest`: the gateway's added latency and throughput against an instant upstream.

    orchestrator loadtest --concurrency 1,16 --seconds 10 --json results.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli._common import console, fail, run_async


def loadtest(
    concurrency: Annotated[str, typer.Option(help="Comma-separated concurrency levels")] = "1,16,64",
    seconds: Annotated[float, typer.Option(min=1, help="Seconds per level and target")] = 10,
    compare_litellm: Annotated[bool, typer.Option("--compare-litellm", help="Also measure the LiteLLM proxy (own venv)")] = False,
    json_file: Annotated[Path | None, typer.Option("--json", help="Write the results here")] = None,
    workdir: Annotated[Path | None, typer.Option(help="Logs, configs and the trace database (default: a temp dir)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Also measure `serve --workers N` beside one worker (N > 1)")] = 1,
) -> None:
    """Gateway overhead against an instant loopback upstream: direct vs ours (vs LiteLLM)."""
    import tempfile

    from orchestrator.loadtest.driver import DriverMissing, wrk_path
    from orchestrator.loadtest.report import print_report
    from orchestrator.loadtest.run import run_loadtest

    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"{concurrency!r}: expected positive integers such as 1,16,64", param_hint="--concurrency") from None
    try:
        wrk_path()
    except DriverMissing as e:
        fail(str(e))
    work = workdir or Path(tempfile.mkdtemp(prefix="orchestrator-loadtest-"))
    err = console(stderr=True)
    with err.status("load test") as status:
        result = run_async(lambda: run_loadtest(levels, seconds=seconds, compare_litellm=compare_litellm, workdir=work, workers=workers,
                                                progress=lambda msg: status.update(f"load test: {msg}")))
    print_report(console(), result)
    if json_file is not None:
        json_file.write_text(json.dumps(result.contract_json(), indent=2))
        err.print(f"wrote {json_file}")
