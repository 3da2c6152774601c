"""The `orchestrator` command line: the whole command surface, assembled from one module per
command group. Commands parse and check flags, call one service and print; heavy modules are
imported inside the commands, so `orchestrator --help` stays fast.

    orchestrator ask "Which enzyme unwinds DNA?" --router all-vote
    orchestrator experts check --config experts.yaml
"""

from __future__ import annotations

import typer

from orchestrator.cli import ask, bench, experts, keys, loadtest, models, profile, recorded, serve, train

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Compound multi-LLM routing orchestrator.")
app.command()(ask.ask)
app.command()(ask.trace)
app.command()(bench.bench)
app.command()(serve.serve)
app.command()(loadtest.loadtest)
app.add_typer(experts.app, name="experts")
app.add_typer(keys.app, name="keys")
app.add_typer(models.app, name="models")
app.add_typer(profile.app, name="profile")
app.add_typer(recorded.app, name="recorded")
app.add_typer(train.app, name="train")


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
