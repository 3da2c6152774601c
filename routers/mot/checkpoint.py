"""Checkpoints hold only the router and interaction parameters (plus the config that rebuilds
them), stored in fp16 (a few MB); the experts are referenced by model id and loaded from their
own weights. Loading casts the parameters back to fp32.

    blob = checkpoint_bytes(fusion, {"steps": 120})
    fusion, meta = load_checkpoint(blob)          # or a path to a `.pt` file / a directory
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from experts.errors import ConfigError
from routers.mot.model import MoTConfig, MoTFusion

FILE_NAME = "mot.pt"
FORMAT = "mot-checkpoint-v2"  # v2: interaction joins after the last stack, zero-valued null slot


def checkpoint_bytes(fusion: MoTFusion, meta: dict[str, Any] | None = None) -> bytes:
    buf = io.BytesIO()
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in fusion.state_dict().items()}
    torch.save({"format": FORMAT, "config": fusion.cfg.model_dump(), "state": state, "meta": meta or {}}, buf)
    return buf.getvalue()


def save_checkpoint(fusion: MoTFusion, out_dir: Path, meta: dict[str, Any] | None = None) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(checkpoint_bytes(fusion, meta))
    tmp.replace(path)  # atomic: a reader never sees half a checkpoint
    return path


def load_checkpoint(source: bytes | str | Path) -> tuple[MoTFusion, dict[str, Any]]:
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise ConfigError(f"MoT checkpoint {path} not found: train one with `orchestrator train mot --out DIR`")
        source = path.read_bytes()
    try:
        blob = torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"not a MoT checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ConfigError(f"not a MoT checkpoint (expected format {FORMAT})")
    fusion = MoTFusion(MoTConfig.model_validate(blob["config"]))
    fusion.load_state_dict(blob["state"])
    return fusion.eval(), dict(blob.get("meta") or {})


# The checkpoint shipped in the repository (router and interaction weights only, with its
# training command, log and metrics beside it): `orchestrator train mot` reproduces it.
SHIPPED = Path(__file__).resolve().parent / "shipped" / FILE_NAME


def shipped_experts() -> list[str] | None:
    """The expert model ids the shipped checkpoint was trained on (None when absent)."""
    if not SHIPPED.is_file():
        return None
    blob = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    return list(blob.get("config", {}).get("experts", [])) or None
