"""A circuit breaker per expert: stop sending to a dead expert, probe it back after a cool-down.

    breaker = CircuitBreaker("qwen", failures=5, cooldown_s=30)
    ticket = breaker.allow()                 # None when open: fail fast, no request leaves
    ...
    breaker.record(ok=True | False, ticket=ticket)   # after the backend call (once per call)

States (`state`):

* ``closed``    – calls flow; `failures` consecutive failures open the circuit.
* ``open``      – calls fail at once (`ExpertCircuitOpen`) until `cooldown_s` has passed.
* ``half_open`` – exactly ONE probe call is let through; success closes the circuit, failure
  opens it again for another cool-down.

Only failures that say the expert is unwell count (unreachable, timed out, 5xx, malformed body);
a 4xx caused by our request, a full local queue or an unknown recorded question do not.

Epochs: every change of state starts a new epoch, and `allow` hands out a `Ticket` naming the
epoch the call was admitted in. A result whose ticket is from an older epoch is ignored: a call
sent before the circuit opened and failing after it does not restart the cool-down, and one
succeeding late does not close an open circuit without a probe. The dispatcher records one
result per backend call (a failed batch of N requests is one failure, not N).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from experts.errors import ExpertError, ExpertUnavailable

UNWELL_KINDS = frozenset({"unavailable", "timeout", "server_error", "bad_response"})


class ExpertCircuitOpen(ExpertUnavailable):
    """Returned (not raised) for a call to an expert whose circuit is open; never retried on it."""

    retryable = False
    kind = "circuit_open"


def counts_as_failure(error: ExpertError | None) -> bool:
    return error is not None and error.kind in UNWELL_KINDS


@dataclass(frozen=True, slots=True)
class Ticket:
    """The admission of one call: the breaker epoch it was let through in, and whether it is the
    half-open probe."""

    epoch: int
    probe: bool = False


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
        self.epoch = 0  # bumped by every change of state
        self.stale_results = 0  # results ignored because their call was admitted in an older epoch
        self._probe_out = False

    def _enter(self, state: str) -> None:
        self.state = state
        self.epoch += 1
        self._probe_out = False

    def allow(self) -> Ticket | None:
        """May a call go to the expert now? A ticket for it, or None. In half-open, one ticket
        (the probe) until its result is recorded or released."""
        if self.state == "closed":
            return Ticket(self.epoch)
        if self.state == "open":
            assert self.opened_at is not None
            if self._clock() - self.opened_at < self.cooldown_s:
                return None
            self._enter("half_open")
        if self._probe_out:
            return None
        self._probe_out = True
        return Ticket(self.epoch, probe=True)

    def _current(self, ticket: Ticket | None) -> bool:
        # Nothing is admitted while open: a result arriving then is from before it opened.
        if self.state != "open" and (ticket is None or ticket.epoch == self.epoch):
            return True
        self.stale_results += 1
        return False

    def record(self, *, ok: bool, ticket: Ticket | None = None) -> None:
        """The result of one backend call admitted with `ticket` (None: the current epoch)."""
        if not self._current(ticket):
            return
        if ok:
            self.consecutive_failures, self.opened_at = 0, None
            if self.state != "closed":
                self._enter("closed")
            return
        self.consecutive_failures += 1
        if self.state == "half_open" or self.consecutive_failures >= self.threshold:
            self.opens += 1
            self._enter("open")
            self.opened_at = self._clock()

    def release(self, ticket: Ticket | None = None) -> None:
        """The call ended without saying anything about health (a 4xx, or it never ran): if it was
        the probe, let another through."""
        if ticket is None or (ticket.probe and ticket.epoch == self.epoch):
            self._probe_out = False

    def release_probe(self) -> None:
        self.release(None)

    def open_error(self) -> ExpertCircuitOpen:
        left = max(0.0, self.cooldown_s - (self._clock() - (self.opened_at or self._clock())))
        return ExpertCircuitOpen(
            f"expert {self.expert!r} is failing ({self.consecutive_failures} consecutive failures); "
            f"circuit open, next probe in {left:.0f} s", expert=self.expert,
        )

    def snapshot(self) -> dict[str, object]:
        return {"state": self.state, "consecutive_failures": self.consecutive_failures, "opens": self.opens,
                "failures_to_open": self.threshold, "cooldown_s": self.cooldown_s, "epoch": self.epoch,
                "stale_results": self.stale_results}
