"""`orchestrator experts list|check`: the configured experts, and a probe of each.

    orchestrator experts check --config experts.yaml   # exits 1 if any expert is down
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from orchestrator.cli._common import ConfigOpt, console, load_config, run_async, short

app = typer.Typer(no_args_is_help=True, help="The expert registry.")


@app.command("list")
def experts_list(config: ConfigOpt = None) -> None:
    """List registered experts."""
    cfg = load_config(config)
    table = Table()
    for col in ("name", "backend", "model", "where", "price in/out $/Mtok", "batch", "description"):
        table.add_column(col)
    for s in cfg.experts:
        table.add_row(
            s.name, s.backend.value, s.model, s.base_url or s.path or "in-process",
            f"{s.price_per_mtok.input:g}/{s.price_per_mtok.output:g}", str(s.max_batch_size), short(s.description, 50),
        )
    console().print(table)


@app.command("check")
def experts_check(
    config: ConfigOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds per probe")] = 10.0,
) -> None:
    """Probe every expert; exits 1 if any is down."""
    from experts.registry import ExpertRegistry

    cfg = load_config(config)

    async def go():  # type: ignore[no-untyped-def]
        reg = ExpertRegistry.from_specs(cfg.experts)
        try:
            return await reg.check(timeout)
        finally:
            await reg.aclose()

    statuses = run_async(go)
    table = Table()
    for col in ("expert", "backend", "status", "detail"):
        table.add_column(col)
    for st in statuses:
        table.add_row(st.name, st.backend, "[green]up[/green]" if st.healthy else "[red]down[/red]", st.detail)
    console().print(table)
    down = [s.name for s in statuses if not s.healthy]
    if down:
        console(stderr=True).print(f"[red]{len(down)} expert(s) down:[/red] {', '.join(down)}")
        raise typer.Exit(1)
