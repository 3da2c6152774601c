"""`orchestrator models list|prepare`: the packaged tiny models and their one-time conversion.

    orchestrator models prepare          # the config's in-process models (run by `make install`)
    orchestrator models prepare --all    # every packaged model whose package is installed

Preparing converts a packaged GGUF into a model directory under ~/.cache/llm-orchestrator/models
(ORCHESTRATOR_MODEL_CACHE) once, so no request pays for it. With no model named, it also exports
the routers' embedder (all-MiniLM-L6-v2) to ONNX, int8-quantised, for `embedder: onnx-int8`.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from experts.errors import ConfigError
from orchestrator.cli._common import ConfigOpt, console, fail, load_config, table

app = typer.Typer(no_args_is_help=True, help="Packaged tiny models: list them, prepare (convert) them once.")


@app.command("list")
def models_list() -> None:
    """Packaged models, their package and whether they are prepared."""
    from experts.packaged_models import KNOWN_MODELS, is_prepared, model_cache_dir

    t = table("model", "kind", "state", "package", names=list(KNOWN_MODELS), title=f"prepared into {model_cache_dir()}")
    for m in KNOWN_MODELS.values():
        try:
            state = "prepared" if is_prepared(m.id) else "not prepared"
        except ConfigError as e:
            state = f"[red]unavailable[/red]: {e}"
        t.add_row(m.id, "chat" if m.chat else "base", state, m.package)
    console().print(t)


@app.command("prepare")
def models_prepare(
    models: Annotated[list[str] | None, typer.Argument(help="Packaged model ids (default: the config's in-process models)")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every packaged model whose package is installed")] = False,
    config: ConfigOpt = None,
) -> None:
    """Convert packaged model weights once (a few minutes each; nothing to do when done before)."""
    from experts.packaged_models import KNOWN_MODELS, is_packaged, is_prepared, locate_model, resolve_model_dir

    if models and all_models:
        fail("name models or pass --all, not both")
    if all_models:
        todo = []
        for m in KNOWN_MODELS:
            try:
                locate_model(m)
                todo.append(m)
            except ConfigError:
                continue
    elif models:
        unknown = [m for m in models if not is_packaged(m)]
        if unknown:
            fail(f"not a packaged model: {', '.join(unknown)}; packaged: {', '.join(KNOWN_MODELS)}")
        todo = models
    else:
        cfg = load_config(config)
        todo = [s.model for s in cfg.experts if s.backend.value == "local" and is_packaged(s.model)]
    err = console(stderr=True)
    out = console()
    for i, model in enumerate(dict.fromkeys(todo), 1):
        try:
            if is_prepared(model):
                out.print(f"{model}: prepared ({resolve_model_dir(model)})")
                continue
            err.print(f"[{i}/{len(todo)}] {model}: converting the packaged weights (once; a few minutes)…")
            t0 = time.perf_counter()
            path = resolve_model_dir(model)
        except ConfigError as e:
            fail(str(e))
        out.print(f"{model}: prepared in {time.perf_counter() - t0:.0f} s ({path})")
    if not todo and models:
        out.print("no packaged in-process models to prepare")
    if not models:
        _prepare_onnx_embedder()


def _prepare_onnx_embedder() -> None:
    """The routers' int8 ONNX embedder, exported once from the packaged MiniLM weights."""
    from routers.embeddings import ONNX_DIR_NAME, onnx_prepared, prepare_onnx_embedder

    out = console()
    try:
        if onnx_prepared():
            out.print(f"{ONNX_DIR_NAME} (embedder onnx-int8): prepared")
            return
        console(stderr=True).print(f"{ONNX_DIR_NAME}: exporting the packaged MiniLM to ONNX and quantising it to int8 (once)…")
        t0 = time.perf_counter()
        path = prepare_onnx_embedder()
    except ConfigError as e:
        fail(str(e))
    out.print(f"{ONNX_DIR_NAME} (embedder onnx-int8): prepared in {time.perf_counter() - t0:.0f} s ({path})")
