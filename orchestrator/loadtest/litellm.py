"""The LiteLLM proxy (PyPI `litellm[proxy]`) as the comparison point, in its own venv.

    python = ensure_venv()                     # ~/.cache/llm-orchestrator-ci/litellm-venv, made once
    cmd = proxy_command(python, config_path, port)

Its own venv because LiteLLM pins many packages (and must not touch this project's torch).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

MODEL = "loadtest"


def venv_dir() -> Path:
    base = Path(os.environ.get("ORCH_CI_CACHE", Path.home() / ".cache" / "llm-orchestrator-ci"))
    return base / "litellm-venv"


def ensure_venv(log: Path) -> Path:
    """The venv's `litellm` executable; creates the venv and installs the proxy on first use."""
    venv = venv_dir()
    exe = venv / "bin" / "litellm"
    if exe.exists():
        return exe
    with log.open("ab") as out:
        # the system python, not this venv's: nothing of ours leaks into LiteLLM's environment
        base_python = getattr(sys, "_base_executable", None) or "python3"
        subprocess.run([base_python, "-m", "venv", str(venv)], check=True, stdout=out, stderr=subprocess.STDOUT)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True, stdout=out, stderr=subprocess.STDOUT)
    if not exe.exists():
        raise RuntimeError(f"installing litellm[proxy] into {venv} did not produce {exe}; see {log}")
    return exe


def write_config(path: Path, upstream_base_url: str, upstream_model: str, master_key: str) -> Path:
    """A one-model proxy; it refuses to start without a master key, so the driver sends one."""
    path.write_text(yaml.safe_dump({
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {"model": f"openai/{upstream_model}", "api_base": upstream_base_url, "api_key": "loadtest"},
        }],
        "litellm_settings": {"drop_params": True, "set_verbose": False},
        "general_settings": {"master_key": master_key},
    }))
    return path


def proxy_command(exe: Path, config: Path, port: int) -> list[str]:
    return [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
