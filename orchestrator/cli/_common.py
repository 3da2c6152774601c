"""What every command shares: exit codes, consoles, the async runner that maps user errors to
exit 2, config loading, model preparation, tables that keep names whole, `--router-opt` parsing
and the options several commands take.

    cfg = load_config(config)
    out = run_async(lambda: work(cfg))   # OrchestratorError etc. -> "error: ..." and exit 2

Exit codes: 0 a real answer (or the work done), 1 a check found an expert down, 2 bad input
(unknown names, contradictory options, an invalid config, an unreachable store), 3 no expert
answered, 4 the router could not decide, 130 interrupted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from experts.errors import OrchestratorError
from routers.registry import router_names
from routers.types import RoutingError
from store.db import StoreUnavailable

if TYPE_CHECKING:
    from experts.spec import OrchestratorConfig

T = TypeVar("T")

EXIT_DOWN = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3
EXIT_UNDECIDED = 4

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (default: embedded default)")]
PoolOpt = Annotated[str | None, typer.Option(help="Comma-separated expert names, or a named pool (small16)")]


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=stderr)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One red line on stderr and exit `code` (a user error unless told otherwise)."""
    console(stderr=True).print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code) from None


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


def prepare_models(cfg: OrchestratorConfig) -> None:
    """Convert the packaged weights the config's in-process experts use, once and before any
    request (so no request's latency includes it); a no-op when `orchestrator models prepare`
    (run by `make install`) already did."""
    import time

    from experts.packaged_models import is_packaged, is_prepared, resolve_model_dir

    todo = [s.model for s in cfg.experts if s.backend.value == "local" and is_packaged(s.model)]
    err = console(stderr=True)
    for model in dict.fromkeys(todo):
        try:
            if is_prepared(model):
                continue
            err.print(f"preparing {model}: converting its packaged weights once (a few minutes; "
                      "`orchestrator models prepare` does this ahead)")
            t0 = time.perf_counter()
            path = resolve_model_dir(model)
        except OrchestratorError as e:
            fail(str(e))
        err.print(f"prepared {model} in {time.perf_counter() - t0:.0f} s: {path}")


def table(*columns: str, title: str | None = None, names: Sequence[str] = (), right: Sequence[str] = ()) -> Table:
    """A table that wraps cells instead of cutting them; the first column (names) is kept as wide
    as its longest entry in `names`, so names are never shortened to `smollm…` at 80 columns."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for i, col in enumerate(columns):
        width = max([len(col), *map(len, names)]) if i == 0 and names else None
        # Folded rather than cut when a row is wider than the terminal.
        t.add_column(col, overflow="fold", min_width=width, no_wrap=i == 0 and bool(names), justify="right" if col in right else "left")
    return t


PROMPTS = ("auto", "short", "zero-shot", "cot-5shot")
# The letter (" B", "The answer is (B)."): a base model's continuation past it stays short,
# and no stop strings (transformers' StopStringCriteria scans the whole vocabulary per call).
SHORT_MAX_TOKENS = 8
PromptOpt = Annotated[str, typer.Option(help="Live prompt: short (the option letter only), zero-shot (CoT), cot-5shot "
                                             "(official MMLU-Pro), or auto: short for in-process tiny models, else the faithful one")]
MaxTokensOpt = Annotated[int | None, typer.Option(min=1, max=32768, help=f"Max new tokens per live expert call (auto: "
                                                                         f"{SHORT_MAX_TOKENS} with the short prompt)")]


def live_prompt(cfg: OrchestratorConfig, pool: list[str] | None, prompt: str, max_tokens: int | None, *,
                faithful: tuple[str, int], recorded: bool = False) -> tuple[str, int]:
    """The prompt and token cap of a live run. `auto` gives tiny in-process models (every pool
    expert local) the short letter-only prompt and a 16-token cap, so a CPU fit takes minutes;
    any other pool (and a recorded run) gets `faithful`."""
    if prompt not in PROMPTS:
        fail(f"--prompt must be one of {', '.join(PROMPTS)}, got {prompt!r}")
    if prompt == "auto":
        names = cfg.pools.get(pool[0], pool) if pool and len(pool) == 1 else pool
        specs = [s for s in cfg.experts if names is None or s.name in names]
        tiny = not recorded and bool(specs) and all(s.backend.value == "local" for s in specs)
        prompt = "short" if tiny else faithful[0]
    if max_tokens is None:
        max_tokens = SHORT_MAX_TOKENS if prompt == "short" else faithful[1]
    return prompt, max_tokens


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
