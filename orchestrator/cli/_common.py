"""What every command shares: consoles, the async runner that maps user errors to exit 2,
config loading, `--router-opt` parsing and the options several commands take.

    cfg = load_config(config)
    out = run_async(lambda: work(cfg))   # OrchestratorError etc. -> "error: ..." and exit 2
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from experts.errors import OrchestratorError
from routers.registry import router_names
from routers.types import RoutingError
from store.db import StoreUnavailable

if TYPE_CHECKING:
    from experts.spec import OrchestratorConfig

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (default: embedded default)")]
PoolOpt = Annotated[str | None, typer.Option(help="Comma-separated expert names, or a named pool (small16)")]


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def fail(message: str) -> NoReturn:
    """A user error: one red line on stderr, exit 2."""
    console(stderr=True).print(f"[red]error:[/red] {message}")
    raise typer.Exit(2) from None


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; user-caused errors print one or two lines and exit 2, not a traceback."""
    try:
        return asyncio.run(fn())
    except (OrchestratorError, RoutingError, StoreUnavailable) as e:
        fail(str(e))
    except KeyboardInterrupt:
        console(stderr=True).print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


def load_config(config: Path | None) -> OrchestratorConfig:
    from orchestrator.settings import resolve_config

    try:
        return resolve_config(config)
    except OrchestratorError as e:
        fail(str(e))


def require_router(name: str) -> None:
    """Exit 2 naming the available routers unless `name` is one."""
    if name not in router_names():
        fail(f"unknown router {name!r}; available: {', '.join(router_names())}")


def short(text: str | None, n: int = 60) -> str:
    """One line of at most `n` characters."""
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def comma_names(text: str | None) -> list[str] | None:
    """`"a, b,"` -> ["a", "b"]; no flag -> None."""
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def parse_router_options(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """`--router-opt coe.budget=0.5` -> {"coe": {"budget": 0.5}} (values parsed as YAML scalars)."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for v in values or []:
        if "=" not in v or "." not in v.split("=", 1)[0]:
            raise typer.BadParameter(f"{v!r}: expected ROUTER.KEY=VALUE, e.g. random.k=3", param_hint="--router-opt")
        key, value = v.split("=", 1)
        router, opt = key.split(".", 1)
        out.setdefault(router, {})[opt] = yaml.safe_load(value)
    return out
