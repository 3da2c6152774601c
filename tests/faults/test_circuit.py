"""The circuit breaker's state machine, on a controlled clock."""

from orchestrator.circuit import CircuitBreaker, ExpertCircuitOpen, counts_as_failure
from experts.errors import ExpertBadResponse, ExpertOverloaded, ExpertRequestRejected, ExpertServerError, ExpertTimeout, ExpertUnavailable
from experts.types import ErrorInfo


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    b = CircuitBreaker("x", failures=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record(ok=False)
    assert b.state == "closed"
    b.record(ok=True)  # a success resets the count
    for _ in range(3):
        assert b.allow()
        b.record(ok=False)
    assert b.state == "open" and b.opens == 1
    assert not b.allow() and not b.allow()
    err = b.open_error()
    assert isinstance(err, ExpertCircuitOpen) and err.kind == "circuit_open" and not err.retryable
    assert "next probe in 10 s" in err.message


def test_half_open_lets_one_probe_through_then_closes_or_reopens() -> None:
    clock = Clock()
    b = CircuitBreaker("x", failures=1, cooldown_s=5, clock=clock)
    b.allow()
    b.record(ok=False)
    assert b.state == "open"
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.2
    assert b.allow() and b.state == "half_open"
    assert not b.allow()  # only one probe at a time
    b.record(ok=False)  # the probe failed: open again for a full cool-down
    assert b.state == "open" and b.opens == 2
    clock.now += 5.1
    assert b.allow()
    b.record(ok=True)
    assert b.state == "closed" and b.consecutive_failures == 0
    assert b.allow() and b.allow()


def test_probe_released_when_the_outcome_says_nothing_about_health() -> None:
    clock = Clock()
    b = CircuitBreaker("x", failures=1, cooldown_s=1, clock=clock)
    b.allow()
    b.record(ok=False)
    clock.now += 2
    assert b.allow()
    b.release_probe()  # e.g. the probe was rejected with a 4xx caused by the request
    assert b.allow()


def test_only_unwell_errors_count() -> None:
    def info(e):  # type: ignore[no-untyped-def]
        return ErrorInfo.from_exception(e)

    assert all(counts_as_failure(info(e)) for e in (ExpertUnavailable("x"), ExpertTimeout("x"), ExpertServerError("x"), ExpertBadResponse("x")))
    assert not any(counts_as_failure(info(e)) for e in (ExpertRequestRejected("x"), ExpertOverloaded("x")))
    assert not counts_as_failure(None)
