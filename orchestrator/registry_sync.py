"""Keeps a runtime's experts equal to the registry its replicas share through the store.

    follower = RegistryFollower(runtime, poll_s=2.0, on_change=state.forget_health)
    await follower.seed(config.experts)     # this replica's config experts, written to the store
    await follower.sync()                   # load the shared registry (API-registered experts too)
    task = asyncio.create_task(follower.run())

What a replica serves: its config file's experts, minus those deleted through the gateway (a
tombstone in the store), plus every expert registered through the gateway (by any replica) that
this replica admits (`admit`: the gateway re-applies its allow-list and secrets, so a stored row
is never served where the API could not have registered it). An API row never replaces a config
expert nor takes one of its names or aliases (the gateway refuses to register, or delete, its
config names; a replica with another config could still write such a row, which is ignored here).
A replica that starts writes its config experts to the store, which also lifts a tombstone of the
same name: the config file wins at start. Rows another replica's config wrote are listed but not
served here (replicas normally share one config; rows an older version wrote from CLI runs must
not appear in a gateway).

Every change to the `experts` table bumps a version counter in the same transaction
(store/repository.py). `run` re-reads the registry whenever the version moves: on Postgres it is
told at once (LISTEN/NOTIFY on a connection of its own) and also polls every `poll_s` in case that
connection was lost; on SQLite it polls every `poll_s`. A replica therefore serves a change made
through any other replica within `poll_s` at worst (on Postgres typically within tens of
milliseconds). Each difference is applied with `Runtime.put_expert` / `Runtime.drop_expert`
(which rebuild the expert's dispatcher queue and the routers that use it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from experts.errors import ConfigError
from experts.spec import ExpertSpec
from orchestrator.pipeline import Runtime

logger = logging.getLogger("orchestrator.registry")


class RegistryFollower:
    """Follows the shared registry for one runtime; see the module docstring."""

    def __init__(self, runtime: Runtime, *, poll_s: float = 2.0, on_change: Callable[[], None] | None = None,
                 admit: Callable[[ExpertSpec], str | None] | None = None) -> None:
        self.runtime = runtime
        self.poll_s = poll_s
        self.config_specs = {spec.name: spec for spec in runtime.config.experts}  # replaced by `seed`
        self.on_change = on_change
        self.admit = admit  # why an API-registered spec may not be served here (None: it may)
        self.version = -1  # the store's registry version this process has applied
        self.synced_at = 0.0  # time.monotonic() of the last successful read
        self.notified = 0  # notifications received (Postgres)
        self.last_error: str | None = None
        self._nudge = asyncio.Event()

    async def seed(self, specs: Sequence[ExpertSpec]) -> bool:
        """Write this replica's configured experts to the store (the config file wins for the
        experts it lists); True if that changed the registry."""
        self.config_specs = {spec.name: spec for spec in specs}
        return await self.runtime.store.upsert_experts([s.model_dump(mode="json") for s in specs], origin="config")

    async def sync(self) -> bool:
        """Apply the store's registry if its version moved; True if anything changed here."""
        version, raw = await self.runtime.store.registry_snapshot()
        self.synced_at, self.last_error = time.monotonic(), None
        if version == self.version:
            return False
        changed = self._apply(raw)
        self.version = version
        if changed and self.on_change is not None:
            self.on_change()
        return changed

    def wanted(self, rows: list[tuple[str, dict[str, Any]]]) -> dict[str, ExpertSpec]:
        """The experts this replica should serve, given the store's (origin, spec) rows."""
        origin = {raw.get("name"): o for o, raw in rows}
        out = {name: spec for name, spec in self.config_specs.items() if origin.get(name, "config") != "deleted"}
        # an API row never shadows a config expert: its names stay the config file's (security)
        protected = {n.lower() for spec in self.config_specs.values() for n in spec.all_names()}
        for o, raw in rows:
            if o != "api":
                continue
            try:
                spec = ExpertSpec.model_validate(raw)
            except ValidationError as e:
                logger.error("ignoring stored expert %r: not a valid spec (%s)", raw.get("name"), e.errors()[0]["msg"])
                continue
            if any(n.lower() in protected for n in spec.all_names()):
                logger.warning("ignoring stored expert %r: it takes a name of this replica's config file", spec.name)
                continue
            refusal = self.admit(spec) if self.admit is not None else None
            if refusal is not None:
                logger.warning("not serving stored expert %r here: %s", spec.name, refusal)
                continue
            out[spec.name] = spec
        return out

    def _apply(self, rows: list[tuple[str, dict[str, Any]]]) -> bool:
        wanted = self.wanted(rows)
        changed = False
        for name in [n for n in self.runtime.registry.names if n not in wanted]:
            changed |= self.runtime.drop_expert(name)
        for spec in wanted.values():
            try:
                changed |= self.runtime.put_expert(spec)
            except ConfigError as e:
                logger.error("cannot register stored expert %r here: %s", spec.name, e)
        return changed

    def _notified(self, version: int) -> None:
        self.notified += 1
        if version != self.version:
            self._nudge.set()

    async def run(self) -> None:
        """Follow changes until cancelled; store outages are logged and retried."""
        listener = None
        try:
            while True:
                self._nudge.clear()
                try:
                    if listener is None or not listener.alive:
                        if listener is not None:
                            await listener.aclose()
                        listener = await self.runtime.store.listen_registry(self._notified)
                    await self.sync()
                except Exception as e:  # noqa: BLE001 - the store is away: keep what we have, try again
                    if self.last_error is None:
                        logger.warning("cannot read the shared registry (%s: %s); serving the experts loaded so far",
                                       type(e).__name__, str(e)[:200])
                    self.last_error = f"{type(e).__name__}: {str(e)[:200]}"
                    if listener is not None:
                        await listener.aclose()
                        listener = None
                try:
                    await asyncio.wait_for(self._nudge.wait(), self.poll_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            if listener is not None:
                await listener.aclose()
