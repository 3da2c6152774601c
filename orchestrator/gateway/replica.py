"""The background work that lets many gateway replicas share one store: one `Replica` per app.

    replica = Replica(replica_id, runtime, settings)
    await replica.replay_journals()                  # traces stopped replicas left (also every replay_s)
    await replica.follower.seed(config.experts)      # then follow the shared registry
    replica.start(batches)                           # sweeper, registry follower, journal replays
    replica.problems()                               # for /ready: what keeps this replica from serving well
    await replica.aclose()

Each loop survives store outages (an iteration that fails is logged and tried again at the next
interval); `problems` reports a loop whose last iteration failed, and any loop that ended.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from experts.spec import BackendKind, ExpertSpec
from orchestrator.gateway.batch_runner import BatchRunner
from orchestrator.learning import RefitJob
from orchestrator.pipeline import Runtime
from orchestrator.registry_sync import RegistryFollower
from orchestrator.settings import GatewaySettings
from store.trace_journal import replay_journals

logger = logging.getLogger("orchestrator.gateway.replica")


def default_replica_id() -> str:
    """`<host>-<pid>-<random>`: unique per start, so a restarted process never inherits a lease
    or a journal it did not write."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def default_journal_dir(runtime: Runtime) -> Path:
    """`trace-journal/` beside a SQLite database file (the volume it lives on), else in the
    working directory."""
    url = runtime.store.engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).expanduser().resolve().parent / "trace-journal"
    return Path.cwd() / "trace-journal"


def api_expert_refusal(spec: ExpertSpec, settings: GatewaySettings, secrets: Mapping[str, str]) -> str | None:
    """Why this replica must not serve an expert some replica registered over the API (None: it
    may): the confinement of `POST /v1/experts` (routes/experts.py), checked again here, so a row
    written under another allow-list, or before this one was narrowed, never reaches a host this
    server does not allow."""
    if spec.backend is not BackendKind.OPENAI:
        return f"{spec.backend.value} experts come from the configuration file only"
    if spec.api_key_env is not None or spec.path is not None:
        return "api_key_env and path come from the configuration file only"
    if not settings.expert_hosts().allows(spec.base_url or ""):
        return "its base_url is not on this server's allow-list (ORCHESTRATOR_API_EXPERT_HOSTS)"
    if spec.api_key_secret is not None and spec.api_key_secret not in secrets:
        return f"api_key_secret {spec.api_key_secret!r} is not a secret this server maps"
    return None


class Replica:
    """This process's identity among replicas, and its background loops."""

    def __init__(self, replica_id: str, runtime: Runtime, settings: GatewaySettings) -> None:
        self.id = replica_id
        self.runtime = runtime
        self.settings = settings
        self.journal_dir = settings.trace_journal_dir or default_journal_dir(runtime)
        self.follower = RegistryFollower(runtime, poll_s=settings.registry_poll_s,
                                         admit=lambda spec: api_expert_refusal(spec, settings, runtime.config.secrets))
        self.errors: dict[str, str | None] = {}  # loop name -> error of its last iteration
        self.replayed = 0  # traces written from the journals of stopped replicas
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.refit = RefitJob(runtime, owner=replica_id, routers=settings.refit_routers, threshold=settings.refit_threshold,
                              lease_s=settings.refit_lease_s) if settings.refit_routers else None

    async def replay_journals(self) -> None:
        report = await replay_journals(self.journal_dir, self.runtime.store, exclude=self.id)
        self.replayed += report.written

    def start(self, batches: BatchRunner) -> None:
        s = self.settings
        self._loop("batch sweeper", s.batch_sweep_s, batches.sweep)
        self._loop("journal replay", s.trace_journal_replay_s, self.replay_journals, first_delay=True)
        self._tasks["registry follower"] = asyncio.create_task(self.follower.run(), name="registry-follower")
        if self.refit is not None:
            self._loop("refit job", s.refit_check_s, self.refit.check, first_delay=True)

    def _loop(self, name: str, every_s: float, step: Callable[[], Awaitable[Any]], *, first_delay: bool = False) -> None:
        async def run() -> None:
            if first_delay:
                await asyncio.sleep(every_s)
            while True:
                try:
                    await step()
                    self.errors[name] = None
                except Exception as e:  # noqa: BLE001 - keep going; /ready reports it meanwhile
                    if self.errors.get(name) is None:
                        logger.warning("%s failed (%s: %s); retrying every %.1f s", name, type(e).__name__, str(e)[:200], every_s)
                    self.errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
                await asyncio.sleep(every_s)

        self._tasks[name] = asyncio.create_task(run(), name=name)

    def problems(self) -> list[str]:
        out = [f"{name}: {err}" for name, err in self.errors.items() if err]
        if self.follower.last_error:
            out.append(f"registry follower: {self.follower.last_error}")
        out += [f"{name} stopped" for name, t in self._tasks.items() if t.done()]
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "registry_version": self.follower.version, "journal_replayed": self.replayed}

    async def aclose(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
