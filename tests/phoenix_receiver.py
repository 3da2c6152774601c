"""A real Arize Phoenix server (the OTLP receiver the README tells users to run), on free loopback
ports with its data in a temporary directory; installed by `.ci/phoenix.sh` (PHOENIX_BIN).

    with Phoenix(tmp_path) as phoenix:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = phoenix.url      # OTLP/HTTP at {url}/v1/traces
        spans = phoenix.wait_for_spans(trace_id_hex, count=6)  # from its REST API
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_fixtures import free_port


def require_phoenix_bin() -> str:
    path = os.environ.get("PHOENIX_BIN")
    if not path:
        if os.environ.get("ORCH_SKIP_PHOENIX") == "1":
            pytest.skip("ORCH_SKIP_PHOENIX=1 set explicitly")
        pytest.fail("PHOENIX_BIN is not set: install Phoenix with `bash .ci/phoenix.sh` (or set ORCH_SKIP_PHOENIX=1)")
    assert Path(path).is_file(), f"PHOENIX_BIN={path} is not a file"
    return path


class Phoenix:
    def __init__(self, tmp: Path, binary: str) -> None:
        self.dir = tmp / "phoenix"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary, self.port = binary, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "phoenix.log"
        self.env = {
            **os.environ, "PHOENIX_WORKING_DIR": str(self.dir), "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(free_port()),
            # nothing leaves the machine: no usage telemetry, no sandbox download, no assistant
            "PHOENIX_TELEMETRY_ENABLED": "false", "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
            "PHOENIX_DISABLE_AGENT_ASSISTANT": "true", "PHOENIX_ENABLE_MCP_SERVER": "false", "DO_NOT_TRACK": "1",
        }
        for var in [k for k in self.env if k.startswith("OTEL_")]:  # Phoenix must not trace itself into itself
            self.env.pop(var)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Phoenix":
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, cwd=self.dir, stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"phoenix exited: {self.output()[-3000:]}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise AssertionError(f"phoenix did not start in 180 s: {self.output()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def spans(self, trace_id: str, project: str = "default") -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/v1/projects/{project}/spans", params={"trace_id": trace_id, "limit": 100}, timeout=10)
        if r.status_code == 404:  # the project appears with its first span
            return []
        r.raise_for_status()
        return r.json()["data"]

    def wait_for_spans(self, trace_id: str, *, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.spans(trace_id)
            if len(got) >= count:
                return got
            time.sleep(0.5)
        raise AssertionError(f"phoenix has {len(got)} of {count} spans of trace {trace_id} after {timeout_s:g} s: "
                             f"{[s['name'] for s in got]}")
