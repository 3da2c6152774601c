"""Which models are resident: at most `capacity` loaded at once, least recently used evicted.

Local experts load and unload weights; OpenAI-compatible experts call their wake/sleep hook
(vLLM's sleep mode, a no-op by default); recorded experts load their table."""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict

from experts.registry import ExpertRegistry


class ResidencyManager:
    def __init__(self, registry: ExpertRegistry, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError("residency capacity must be at least 1")
        self.registry = registry
        self.capacity = capacity
        self._resident: OrderedDict[str, None] = OrderedDict()
        self.loads: defaultdict[str, int] = defaultdict(int)
        self.unloads: defaultdict[str, int] = defaultdict(int)
        self.load_time_s: defaultdict[str, float] = defaultdict(float)

    @property
    def resident(self) -> list[str]:
        return list(self._resident)

    @property
    def total_loads(self) -> int:
        return sum(self.loads.values())

    async def acquire(self, expert: str) -> None:
        """Make `expert` resident, evicting the least recently used beyond capacity."""
        name = self.registry.resolve(expert)
        if name in self._resident:
            self._resident.move_to_end(name)
            backend = self.registry.backend(name)
            if backend.is_loaded:
                return
            del self._resident[name]  # unloaded behind our back: load again below
        while len(self._resident) >= self.capacity:
            victim, _ = self._resident.popitem(last=False)
            await self.registry.backend(victim).unload()
            self.unloads[victim] += 1
        t0 = time.perf_counter()
        await self.registry.backend(name).load()
        self.load_time_s[name] += time.perf_counter() - t0
        self.loads[name] += 1
        self._resident[name] = None

    async def release_all(self) -> None:
        while self._resident:
            victim, _ = self._resident.popitem(last=False)
            await self.registry.backend(victim).unload()
            self.unloads[victim] += 1
