"""A real `orchestrator serve` process for the attack tests, and the keys to call it with.

    with Served(tmp_path, env={"ORCHESTRATOR_REQUIRE_API_KEY": "true"}) as gw:
        httpx.get(f"{gw.url}/v1/models", headers=gw.auth(key))
        gw.cli("keys", "revoke", key_id)         # the CLI on the same config and store
        gw.output()                              # what the process printed (stdout and stderr)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import POOL3, RECORDED, REPO
from gateway_fixtures import free_port

# exported to every served gateway: a secret of the server's environment that must never leave it
SERVER_SECRET = "server-env-secret-6f1d2a"


def recorded_experts() -> list[dict[str, Any]]:
    return [{"name": m, "backend": "recorded", "path": str(RECORDED), "model": m} for m in POOL3]


class Served:
    def __init__(self, tmp: Path, *, env: dict[str, str] | None = None, config: dict[str, Any] | None = None,
                 host: str = "127.0.0.1", store: str | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp, self.host, self.port = tmp, host, free_port()
        self.store = store or f"sqlite+aiosqlite:///{tmp / 'gw.db'}"
        self.config_path = tmp / "gw.yaml"
        self.config_path.write_text(yaml.safe_dump({"store": self.store, "experts": recorded_experts(), **(config or {})}))
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "SERVER_SECRET": SERVER_SECRET, **(env or {})}
        self.env.pop("ORCHESTRATOR_CONFIG", None)
        self.env.pop("ORCHESTRATOR_STORE", None)
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def auth(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--config", str(self.config_path)],
                              env=self.env, capture_output=True, text=True, timeout=120, cwd=self.tmp)

    def create_key(self, name: str, *, admin: bool = False) -> tuple[str, str]:
        """(key id, key), made with the CLI as an operator would."""
        run = self.cli("keys", "create", name, *(["--admin"] if admin else []))
        assert run.returncode == 0, run.stderr
        return run.stderr.split()[1], run.stdout.strip()

    def make_keys(self, names: list[str], role: str = "user") -> list[tuple[str, str]]:
        """(key id, key) pairs written straight to the store (quicker than the CLI, same rows)."""
        from orchestrator.gateway.auth import new_api_key
        from store import Store

        async def go() -> list[tuple[str, str]]:
            out = []
            async with await Store.open(self.store) as store:
                for name in names:
                    key_id, key, digest = new_api_key()
                    await store.create_api_key(key_id, name, digest, role=role)
                    out.append((key_id, key))
            return out

        return asyncio.run(go())

    def start(self, *, wait: bool = True) -> "Served":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(self.config_path), "--host", self.host,
             "--port", str(self.port), "--log-level", "info"],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=self.tmp,
        )
        if wait:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"gateway exited: {self.output()[-3000:]}"
                try:
                    if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    time.sleep(0.2)
            raise AssertionError(f"gateway did not start: {self.output()[-3000:]}")
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Served":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
