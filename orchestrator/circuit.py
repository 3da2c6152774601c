"""A circuit breaker per expert: stop sending to a dead expert, probe it back after a cool-down.

    breaker = CircuitBreaker("qwen", failures=5, cooldown_s=30)
    if not breaker.allow():                  # open: fail fast, no request leaves
        ...
    breaker.record(ok=True | False)          # after the call

States (`state`):

* ``closed``    – calls flow; `failures` consecutive failures open the circuit.
* ``open``      – calls fail at once (`ExpertCircuitOpen`) until `cooldown_s` has passed.
* ``half_open`` – exactly ONE probe call is let through; success closes the circuit, failure
  opens it again for another cool-down.

Only failures that say the expert is unwell count (unreachable, timed out, 5xx, malformed body);
a 4xx caused by our request, a full local queue or an unknown recorded question do not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from experts.errors import ExpertError, ExpertUnavailable

UNWELL_KINDS = frozenset({"unavailable", "timeout", "server_error", "bad_response"})


class ExpertCircuitOpen(ExpertUnavailable):
    """Returned (not raised) for a call to an expert whose circuit is open; never retried on it."""

    retryable = False
    kind = "circuit_open"


def counts_as_failure(error: ExpertError | None) -> bool:
    return error is not None and error.kind in UNWELL_KINDS


class CircuitBreaker:
    def __init__(self, expert: str, *, failures: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.expert = expert
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state = "closed"
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.opens = 0  # how many times it opened (a Prometheus gauge)
        self._probe_out = False

    def allow(self) -> bool:
        """May a call go to the expert now? In half-open, True once (the probe)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            assert self.opened_at is not None
            if self._clock() - self.opened_at < self.cooldown_s:
                return False
            self.state, self._probe_out = "half_open", False
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def record(self, *, ok: bool) -> None:
        if ok:
            self.state, self.consecutive_failures, self.opened_at, self._probe_out = "closed", 0, None, False
            return
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= self.threshold:
            if self.state != "open":
                self.opens += 1
            self.state, self.opened_at, self._probe_out = "open", self._clock(), False

    def release_probe(self) -> None:
        """The probe ended without saying anything about health (e.g. a 4xx): let another through."""
        self._probe_out = False

    def open_error(self) -> ExpertCircuitOpen:
        left = max(0.0, self.cooldown_s - (self._clock() - (self.opened_at or self._clock())))
        return ExpertCircuitOpen(
            f"expert {self.expert!r} is failing ({self.consecutive_failures} consecutive failures); "
            f"circuit open, next probe in {left:.0f} s", expert=self.expert,
        )

    def snapshot(self) -> dict[str, object]:
        return {"state": self.state, "consecutive_failures": self.consecutive_failures, "opens": self.opens,
                "failures_to_open": self.threshold, "cooldown_s": self.cooldown_s}
