"""`import orchestrator.client` loads no server: neither the web framework nor the database layer."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

SERVER_PACKAGES = {"fastapi", "starlette", "sqlalchemy", "alembic", "uvicorn"}


def imported_modules(statement: str) -> set[str]:
    """Every module a fresh interpreter imports to run `statement` (from `-X importtime`)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln.rsplit("|", 1)[-1].strip() for ln in out.stderr.splitlines() if ln.startswith("import time:")]
    return {name for name in lines if name and name != "package"}


def test_importing_the_client_loads_no_server_package() -> None:
    modules = imported_modules("import orchestrator.client")
    assert {"orchestrator.client", "orchestrator.protocol", "store.records", "httpx"} <= modules  # the check saw the import
    loaded = sorted(m for m in modules if m.split(".")[0] in SERVER_PACKAGES)
    assert not loaded, f"import orchestrator.client loads server packages: {loaded[:20]}"


def test_the_gateway_does_load_them() -> None:
    # the same check on the gateway sees fastapi and sqlalchemy, so a clean client result means something
    modules = imported_modules("import orchestrator.gateway.app")
    assert {"fastapi", "sqlalchemy", "store.repository"} <= modules
