"""The expert registry: specs by name (or alias) and their live backends.

    registry = ExpertRegistry.from_specs(config.experts)
    backend = registry.backend("qwen2.5-7b")
    old = registry.replace(new_spec)     # the backend it replaced, for the caller to close
    await registry.aclose()

In the gateway the registry mirrors the one every replica shares through the store
(orchestrator/registry_sync.py keeps it in step); here it is a plain in-process map.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping

from experts.backends.base import ExpertBackend
from experts.backends.recorded import RecordedBackend, RecordedLibrary
from experts.errors import ConfigError
from experts.spec import BackendKind, ExpertSpec, resolve_api_key
from experts.types import HealthStatus


class UnknownExpert(ConfigError, KeyError):
    """Raised when a name matches no registered expert (the message lists the known ones)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def build_backend(spec: ExpertSpec, recorded_library: RecordedLibrary | None = None,
                  secrets: Mapping[str, str] | None = None) -> ExpertBackend:
    """Create the backend for a spec. Heavy backends are imported only when used; `secrets` is
    the config's name -> environment variable mapping (see `resolve_api_key`)."""
    if spec.backend is BackendKind.RECORDED:
        return RecordedBackend(spec, recorded_library)
    if spec.backend is BackendKind.OPENAI:
        from experts.backends.openai import OpenAIBackend

        return OpenAIBackend(spec, api_key=resolve_api_key(spec, secrets or {}))
    if spec.backend is BackendKind.LOCAL:
        from experts.backends.local import LocalBackend

        return LocalBackend(spec)
    raise ConfigError(f"unknown backend {spec.backend!r}")  # pragma: no cover - enum is exhaustive


class ExpertRegistry:
    """Specs and backends by name; names and aliases match case-insensitively."""

    def __init__(self, recorded_library: RecordedLibrary | None = None, secrets: Mapping[str, str] | None = None) -> None:
        self._specs: dict[str, ExpertSpec] = {}
        self._backends: dict[str, ExpertBackend] = {}
        self._names: dict[str, str] = {}
        self.recorded_library = recorded_library or RecordedLibrary()
        self.secrets: Mapping[str, str] = dict(secrets or {})
        # Health probes running now, by expert: concurrent checks share them.
        self._probes: dict[str, asyncio.Future[HealthStatus]] = {}

    @classmethod
    def from_specs(cls, specs: Iterable[ExpertSpec], recorded_library: RecordedLibrary | None = None,
                   secrets: Mapping[str, str] | None = None) -> "ExpertRegistry":
        reg = cls(recorded_library, secrets)
        for spec in specs:
            reg.add(spec)
        return reg

    def add(self, spec: ExpertSpec, backend: ExpertBackend | None = None) -> None:
        self.replace(spec, backend)

    def replace(self, spec: ExpertSpec, backend: ExpertBackend | None = None) -> ExpertBackend | None:
        """Register `spec` (replacing an expert of the same name); returns the replaced backend,
        which the caller closes once nothing uses it. Raises ConfigError on a name clash."""
        self.check_names(spec)
        new = backend or build_backend(spec, self.recorded_library, self.secrets)
        old = self.remove(spec.name) if spec.name in self._specs else None
        self._specs[spec.name] = spec
        self._backends[spec.name] = new
        for n in spec.all_names():
            self._names[n.lower()] = spec.name
        return old

    def check_names(self, spec: ExpertSpec) -> None:
        """Raise ConfigError if a name or alias of `spec` belongs to another expert."""
        for n in spec.all_names():
            owner = self._names.get(n.lower())
            if owner is not None and owner != spec.name:
                raise ConfigError(f"expert name or alias {n!r} is already used by {owner!r}")

    def remove(self, name: str) -> ExpertBackend:
        canonical = self.resolve(name)
        spec = self._specs.pop(canonical)
        for n in spec.all_names():
            self._names.pop(n.lower(), None)
        return self._backends.pop(canonical)

    def resolve(self, name: str) -> str:
        """Canonical name for a name or alias (case-insensitive)."""
        key = name.strip().lower()
        if key in self._names:
            return self._names[key]
        known = ", ".join(sorted(self._specs)) or "(none registered)"
        raise UnknownExpert(f"unknown expert {name!r}; registered experts: {known}")

    def find(self, name: str) -> str | None:
        try:
            return self.resolve(name)
        except UnknownExpert:
            return None

    def spec(self, name: str) -> ExpertSpec:
        return self._specs[self.resolve(name)]

    def backend(self, name: str) -> ExpertBackend:
        return self._backends[self.resolve(name)]

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[ExpertSpec]:
        return list(self._specs.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._names

    def __iter__(self) -> Iterator[ExpertSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    async def check(self, timeout_s: float = 10.0) -> list[HealthStatus]:
        """Health of every expert, probed concurrently, each bounded by `timeout_s`.

        Coalesced: a check that starts while a probe of the same expert is running waits for that
        probe instead of sending another (many `/ready` and `/v1/experts` calls at once send one
        probe per expert)."""

        async def probe(spec: ExpertSpec, backend: ExpertBackend) -> HealthStatus:
            try:
                return await asyncio.wait_for(backend.health(), timeout_s)
            except asyncio.TimeoutError:
                return HealthStatus(name=spec.name, backend=spec.backend.value, healthy=False, detail=f"no answer within {timeout_s:.0f} s")
            except Exception as e:  # a probe must never take the whole check down
                return HealthStatus(name=spec.name, backend=spec.backend.value, healthy=False, detail=f"{type(e).__name__}: {e}")

        def shared(spec: ExpertSpec) -> asyncio.Future[HealthStatus]:
            running = self._probes.get(spec.name)
            if running is None or running.get_loop() is not asyncio.get_running_loop():
                running = self._probes[spec.name] = asyncio.ensure_future(probe(spec, self._backends[spec.name]))
                running.add_done_callback(lambda f, name=spec.name: self._probes.pop(name, None) if self._probes.get(name) is f else None)
            return running

        # shielded: one caller giving up must not cancel the probe the others wait for
        return list(await asyncio.gather(*(asyncio.shield(shared(s)) for s in self._specs.values())))

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self._backends.values()), return_exceptions=True)
