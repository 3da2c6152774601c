"""Gateway replicas as real `orchestrator serve` processes, and faults injected into a real Postgres.

    with ReplicaSet(config_path, tmp_path, env={"ORCHESTRATOR_BATCH_LEASE_S": "2"}) as replicas:
        r1 = replicas.start()            # a process on a free port, healthy when this returns
        r1.kill()                        # SIGKILL
    store_faults(url).install()          # triggers that refuse rows on demand (see StoreFaults)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from conftest import REPO
from gateway_fixtures import free_port


@dataclass
class Replica:
    proc: subprocess.Popen
    url: str
    log: Path

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30, **kw)  # type: ignore[arg-type]

    def post(self, path: str, **kw: object) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=30, **kw)  # type: ignore[arg-type]

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(f"{self.url}{path}", timeout=30)


@dataclass
class ReplicaSet:
    """Gateway processes on one config (one store, one journal directory), stopped on exit."""

    config: Path
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)

    def start(self, *, wait: bool = True) -> Replica:
        port = free_port()
        log = self.workdir / f"replica-{len(self.replicas) + 1}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.env}
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--config", str(self.config), "--port", str(port), "--log-level", "warning"],
            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
        )
        replica = Replica(proc, f"http://127.0.0.1:{port}", log)
        self.replicas.append(replica)
        if wait:
            self.wait_up(replica)
        return replica

    @staticmethod
    def wait_up(replica: Replica, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert replica.proc.poll() is None, f"gateway exited: {replica.log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{replica.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError(f"gateway did not start: {replica.log.read_text()[-3000:]}")

    def __enter__(self) -> "ReplicaSet":
        return self

    def __exit__(self, *exc: object) -> None:
        for r in self.replicas:
            r.stop()


class StoreFaults:
    """Faults a real Postgres raises on demand, through a trigger on `requests` (the trace table):

    * a row whose query contains `poison` is refused for good (SQLSTATE 23514, check violation);
    * while `transient` is on, a row whose query contains `flaky` (or, with `all_rows`, any row)
      is refused with a retryable error (SQLSTATE 40001, serialization failure);
    * `lock_traces()` holds an exclusive lock on `requests`, so trace commits wait (a slow store).
    """

    def __init__(self, url: str) -> None:
        self.url = url

    async def _run(self, *sql: str) -> None:
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                for stmt in sql:
                    await conn.execute(text(stmt))
        finally:
            await engine.dispose()

    def install(self) -> None:
        asyncio.run(self._run(
            "CREATE TABLE IF NOT EXISTS fault_switch (transient boolean NOT NULL, all_rows boolean NOT NULL)",
            "DELETE FROM fault_switch",
            "INSERT INTO fault_switch VALUES (false, false)",
            """CREATE OR REPLACE FUNCTION refuse_traces() RETURNS trigger AS $$
               BEGIN
                 IF NEW.query_text LIKE '%poison%' THEN
                   RAISE EXCEPTION 'test fault: this row breaks a constraint' USING ERRCODE = '23514';
                 END IF;
                 IF (SELECT transient AND (all_rows OR NEW.query_text LIKE '%flaky%') FROM fault_switch) THEN
                   RAISE EXCEPTION 'test fault: try again later' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql""",
            "DROP TRIGGER IF EXISTS refuse_traces ON requests",
            "CREATE TRIGGER refuse_traces BEFORE INSERT ON requests FOR EACH ROW EXECUTE FUNCTION refuse_traces()",
        ))

    def install_on_batch_items(self) -> None:
        """The same faults on batch results: a successful item whose custom_id is `poison` is
        refused for good; while `transient` is on with `all_rows`, every item is refused for now."""
        asyncio.run(self._run(
            """CREATE OR REPLACE FUNCTION refuse_items() RETURNS trigger AS $$
               BEGIN
                 IF NEW.ok AND NEW.custom_id = 'poison' THEN
                   RAISE EXCEPTION 'test fault: this result breaks a constraint' USING ERRCODE = '23514';
                 END IF;
                 IF (SELECT transient AND all_rows FROM fault_switch) THEN
                   RAISE EXCEPTION 'test fault: try again later' USING ERRCODE = '40001';
                 END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql""",
            "DROP TRIGGER IF EXISTS refuse_items ON batch_items",
            "CREATE TRIGGER refuse_items BEFORE INSERT ON batch_items FOR EACH ROW EXECUTE FUNCTION refuse_items()",
        ))

    def transient(self, on: bool, *, all_rows: bool = False) -> None:
        asyncio.run(self._run(f"UPDATE fault_switch SET transient = {str(on).lower()}, all_rows = {str(all_rows).lower()}"))

    def lock_traces(self) -> "TraceLock":
        return TraceLock(self.url)


class TraceLock:
    """An exclusive lock on `requests`, held by a connection of its own until `release`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._loop = asyncio.new_event_loop()
        self._conn: AsyncConnection | None = None
        self._engine = create_async_engine(url)

    def acquire(self) -> "TraceLock":
        async def go() -> None:
            self._conn = await self._engine.connect()
            await self._conn.begin()
            await self._conn.execute(text("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE"))

        self._loop.run_until_complete(go())
        return self

    def release(self) -> None:
        async def go() -> None:
            assert self._conn is not None
            await self._conn.commit()
            await self._conn.close()
            await self._engine.dispose()

        self._loop.run_until_complete(go())
        self._loop.close()
