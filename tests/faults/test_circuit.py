"""The circuit breaker's state machine on a controlled clock, and its epochs through the dispatcher
on a real misbehaving upstream."""

import asyncio

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


# ---------------------------------------------------------------------------- epochs

def test_results_admitted_before_the_circuit_opened_are_ignored() -> None:
    clock = Clock()
    b = CircuitBreaker("x", failures=2, cooldown_s=10, clock=clock)
    early = [b.allow() for _ in range(4)]  # four calls in flight while closed
    assert all(early)
    b.record(ok=False, ticket=early[0])
    b.record(ok=False, ticket=early[1])
    assert b.state == "open" and b.opened_at == 100.0
    clock.now += 5
    b.record(ok=False, ticket=early[2])  # a late failure: the cool-down is NOT restarted
    b.record(ok=True, ticket=early[3])  # a late success: the circuit is NOT closed without a probe
    assert b.state == "open" and b.opened_at == 100.0 and b.stale_results == 2
    clock.now += 5.1
    probe = b.allow()
    assert probe is not None and probe.probe and b.state == "half_open"
    late = early[0]
    b.record(ok=True, ticket=late)  # from the closed epoch: ignored even while half-open
    assert b.state == "half_open" and not b.allow()
    b.record(ok=True, ticket=probe)  # only the probe decides
    assert b.state == "closed" and b.consecutive_failures == 0 and b.stale_results == 3


def test_a_released_probe_of_an_old_epoch_does_not_free_the_new_probe() -> None:
    clock = Clock()
    b = CircuitBreaker("x", failures=1, cooldown_s=1, clock=clock)
    b.record(ok=False, ticket=b.allow())
    clock.now += 2
    first = b.allow()
    assert first is not None and first.probe
    b.record(ok=False, ticket=first)  # the probe failed: open again
    clock.now += 2
    second = b.allow()
    assert second is not None and second.probe
    b.release(first)  # the first probe's call ends only now, saying nothing: changes nothing
    assert b.allow() is None
    b.release(second)
    assert b.allow() is not None


async def test_a_failed_backend_batch_counts_once() -> None:
    from experts import ExpertRegistry, ExpertSpec, GenerationRequest
    from faulty_upstream import FaultyUpstream
    from orchestrator.dispatcher import Dispatcher

    with FaultyUpstream("500") as up:
        spec = ExpertSpec(name="flaky", backend="openai", base_url=up.base_url, model="faulty", max_retries=0,
                          max_batch_size=8, max_wait_ms=200, breaker_failures=3)
        reg = ExpertRegistry.from_specs([spec])
        async with reg.backend("flaky"), Dispatcher(reg) as d:
            results = await asyncio.gather(*(d.submit("flaky", GenerationRequest.chat(f"q{i}")) for i in range(8)))
            assert not any(r.ok for r in results) and up.requests == 8
            assert d.stats["flaky"].backend_calls == 1  # the eight went as one backend call...
            b = d.breaker("flaky")
            assert b.consecutive_failures == 1 and b.state == "closed"  # ...which is one failure


async def test_late_results_of_calls_sent_before_the_circuit_opened_change_nothing() -> None:
    from experts import ExpertRegistry, ExpertSpec, GenerationRequest
    from faulty_upstream import FaultyUpstream
    from orchestrator.dispatcher import Dispatcher

    with FaultyUpstream("slow") as up:
        up.delay_s = 1.0
        spec = ExpertSpec(name="e", backend="openai", base_url=up.base_url, model="faulty", max_retries=0, max_wait_ms=0,
                          timeout_s=5, breaker_failures=1, breaker_cooldown_s=30)
        reg = ExpertRegistry.from_specs([spec])
        async with reg.backend("e"), Dispatcher(reg) as d:
            slow = asyncio.create_task(d.submit("e", GenerationRequest.chat("slow one")))
            while up.requests < 1:
                await asyncio.sleep(0.01)
            up.mode = "500"
            failed = await d.submit("e", GenerationRequest.chat("fails at once"))
            b = d.breaker("e")
            assert not failed.ok and b.state == "open"
            opened_at = b.opened_at
            assert (await slow).ok  # it answered, after the circuit opened...
            assert b.state == "open" and b.opened_at == opened_at and b.stale_results == 1  # ...and closed nothing
            refused = await d.submit("e", GenerationRequest.chat("refused"))
            assert refused.error is not None and refused.error.kind == "circuit_open" and up.requests == 2


async def test_a_stream_admitted_before_the_circuit_opened_changes_nothing_when_it_ends() -> None:
    from experts import ExpertRegistry, ExpertSpec, GenerationRequest
    from faulty_upstream import FaultyUpstream
    from orchestrator.dispatcher import Dispatcher

    with FaultyUpstream("slow") as up:
        up.delay_s = 1.5
        spec = ExpertSpec(name="e", backend="openai", base_url=up.base_url, model="faulty", max_retries=0, max_wait_ms=0,
                          timeout_s=10, breaker_failures=1, breaker_cooldown_s=0.3)
        reg = ExpertRegistry.from_specs([spec])
        async with reg.backend("e"), Dispatcher(reg) as d:
            pieces: list[str] = []

            async def on_delta(delta) -> None:  # type: ignore[no-untyped-def]
                pieces.append(delta.text)

            slow = asyncio.create_task(d.stream("e", GenerationRequest.chat("slow stream"), on_delta))
            while up.requests < 1:
                await asyncio.sleep(0.01)
            up.mode = "500"
            failed = await d.submit("e", GenerationRequest.chat("fails at once"))
            b = d.breaker("e")
            assert not failed.ok and b.state == "open"
            await asyncio.sleep(0.4)  # past the cooldown: the next call is the half-open probe
            up.mode = "hang"
            probe = asyncio.create_task(d.submit("e", GenerationRequest.chat("the probe")))
            while up.requests < 3:
                await asyncio.sleep(0.01)
            assert b.state == "half_open"
            streamed = await slow
            assert streamed.ok and "".join(pieces) == "The answer is 4."  # it streamed, after the circuit opened...
            assert b.state == "half_open" and b.stale_results == 1  # ...and its old-epoch success closed nothing
            refused = await d.stream("e", GenerationRequest.chat("refused"), on_delta)
            assert refused.error is not None and refused.error.kind == "circuit_open" and up.requests == 3  # the probe is out
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)


async def test_a_cancelled_stream_says_nothing_about_the_expert() -> None:
    from experts import ExpertRegistry, ExpertSpec, GenerationRequest
    from faulty_upstream import FaultyUpstream
    from orchestrator.dispatcher import Dispatcher

    with FaultyUpstream("hang") as up:
        spec = ExpertSpec(name="e", backend="openai", base_url=up.base_url, model="faulty", max_retries=0, max_wait_ms=0,
                          timeout_s=30, breaker_failures=1, breaker_cooldown_s=30)
        reg = ExpertRegistry.from_specs([spec])
        async with reg.backend("e"), Dispatcher(reg) as d:
            async def on_delta(delta) -> None:  # type: ignore[no-untyped-def]
                raise AssertionError("a hanging upstream sends nothing")

            task = asyncio.create_task(d.stream("e", GenerationRequest.chat("never answered"), on_delta))
            while up.requests < 1:
                await asyncio.sleep(0.01)
            task.cancel()  # the client went away
            try:
                await task
            except asyncio.CancelledError:
                pass
            else:
                raise AssertionError("the stream was not cancelled")
            for _ in range(200):  # the upstream sees its connection closed
                if up.closed_early:
                    break
                await asyncio.sleep(0.01)
            b = d.breaker("e")
            assert up.closed_early and b.state == "closed" and b.consecutive_failures == 0
            assert d.breaker("e").allow() is not None
