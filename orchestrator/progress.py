"""Progress of long commands: one display fed by `(phase, done, total)` hooks.

    with PhaseProgress(title="bench", steps=["fit", "coe", "all-vote"]) as hook:
        await run_benchmark(opts, store, progress=hook)   # hook("coe:generate:smollm2-135m", 12, 40)

A phase is `STEP[:WHAT[:EXPERT]]`. On a terminal the display is three live lines, whatever the
number of routers and experts: the current step and expert, a bar for the current phase and an
overall bar over the steps, each with an ETA; a finished step leaves one plain line above it.
When stderr is not a terminal (CI, nohup, a pipe) there is no live display: a plain line when a
step starts and ends, and every `interval_s` a line with the current phase, its count and ETA.

`CountedCalls` wraps the expert caller a router gets, so work a router does itself (Symbolic-MoE's
keyword tagging and aggregator scoring) reports progress through the same hook.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

ProgressHook = Callable[[str, int, int], None]
DEFAULT_INTERVAL_S = 30.0  # plain log lines: often enough for CI, rare enough for a log file
STEP_LABELS = {"prepare": "prepare questions and pool", "fit": "fit data"}  # names as shown
WHAT_LABELS = {"done": "questions"}


def clock(seconds: float | None) -> str:
    """`0:03:07`; `-:--:--` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


BURST_S = 1.0  # progress updates this close to the first one belong to the same burst


def _eta(done: int, total: int, elapsed: float) -> float | None:
    if total <= 0 or done >= total:
        return 0.0 if total > 0 else None
    if done <= 0 or elapsed <= 0:
        return None
    return elapsed / done * (total - done)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(n - 1, 0)] + "…"


@dataclass
class _Phase:
    step: str
    what: str
    expert: str
    done: int
    total: int
    started: float
    first: tuple[float, int] | None = None  # (time, count) of its first progress: the rate is measured from there
    updated: float = 0.0

    def eta(self, now: float) -> float | None:
        """Seconds left: at the rate since the first progress (a model load before it does not
        count), or since the phase began while there is only one progress update."""
        if self.first is not None and self.done > self.first[1] and self.updated > self.first[0]:
            rate = (self.done - self.first[1]) / (self.updated - self.first[0])
            return max(0.0, (self.total - self.done) / rate - (now - self.updated))
        return _eta(self.done, self.total, now - self.started)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.done >= self.total

    @classmethod
    def parse(cls, phase: str, done: int, total: int, started: float) -> "_Phase":
        step, _, rest = phase.partition(":")
        what, _, expert = rest.partition(":")
        return cls(step, what, expert, done, total, started)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.step, self.what, self.expert)

    def describe(self) -> str:
        return " ".join(p for p in (WHAT_LABELS.get(self.what, self.what), self.expert) if p)


class PhaseProgress:
    """The progress display of one command (see the module docstring). `steps` are the steps
    expected, in order (more are added as they appear); `title` names the command."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        enabled: bool = True,
        title: str = "",
        steps: Sequence[str] = (),
        interval_s: float | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.enabled = enabled
        self.title = title
        self.steps: list[str] = list(dict.fromkeys(steps))
        env = os.environ.get("ORCHESTRATOR_PROGRESS_INTERVAL")
        self.interval_s = interval_s if interval_s is not None else (float(env) if env else DEFAULT_INTERVAL_S)
        self._now = now
        self._lock = threading.RLock()
        self._started = now()
        self._last_event = self._started
        self._step: str | None = None
        self._step_started = self._started
        self._finished_steps: list[str] = []
        self._phase: _Phase | None = None
        self._live: Live | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def live(self) -> bool:
        """A live display (a terminal), rather than plain log lines."""
        return self.console.is_terminal and not self.console.is_dumb_terminal

    # ------------------------------------------------------------------ the hook
    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            t = self._now()
            new = _Phase.parse(phase, done, total, self._last_event)
            lines = []
            if new.step != self._step:
                lines += self._end_step(t)
                lines += self._start_step(new.step, t)
            if self._phase is not None and self._phase.key == new.key:
                new.started, new.first = self._phase.started, self._phase.first
            if done > 0 and (new.first is None or t - new.first[0] < BURST_S):
                # A batch finishing reports its items within milliseconds: the burst is one
                # mark, else the rate would be measured across it and the ETA read ~0.
                new.first = (new.first[0] if new.first else t, done)
            new.updated = t
            self._phase = new
            self._last_event = t
        self._print(lines)  # outside the lock: the live display's refresh takes it while printing

    def _start_step(self, step: str, t: float) -> list[str]:
        if step not in self.steps:
            self.steps.append(step)
        self._step, self._step_started, self._phase = step, t, None
        return [] if self.live else [self._line(f"{self._step_tag(step)} {STEP_LABELS.get(step, step)}: started", t)]

    def _end_step(self, t: float) -> list[str]:
        if self._step is None:
            return []
        step = self._step
        tag = self._step_tag(step)
        self._step = None
        self._finished_steps.append(step)
        p = self._phase
        count = f" ({p.done}/{p.total} {p.describe()})" if p is not None and p.what == "done" else ""
        return [self._line(f"{tag} {STEP_LABELS.get(step, step)}: done in {clock(t - self._step_started)}{count}", t)]

    def _step_tag(self, step: str) -> str:
        return f"[{self.steps.index(step) + 1}/{len(self.steps)}]" if step in self.steps else ""

    def _line(self, text: str, t: float) -> str:
        prefix = f"{self.title} " if self.title else ""
        return f"{clock(t - self._started)} {prefix}{text}"

    def _print(self, lines: list[str]) -> None:
        for line in lines:
            # Plain lines are never wrapped (a log keeps one line per event); above a live
            # display they are cut to the terminal's width.
            self.console.print(Text(line, no_wrap=self.live, overflow="ellipsis"), soft_wrap=not self.live)

    def status_line(self) -> str:
        """The current phase in one plain line (the periodic log line)."""
        with self._lock:
            t = self._now()
            p = self._phase
            if self._step is None:
                return f"{clock(t - self._started)} {self.title} waiting".strip()
            head = f"{self._step_tag(self._step)} {STEP_LABELS.get(self._step, self._step)}"
            if p is None:
                return f"{clock(t - self._started)} {self.title + ' ' if self.title else ''}{head}: started {clock(t - self._step_started)} ago"
            prefix = f"{clock(t - self._started)} {self.title + ' ' if self.title else ''}{head}: "
            if p.complete:
                return f"{prefix}{p.describe()} {p.done}/{p.total} done {clock(t - p.updated)} ago; the next phase is starting"
            return (f"{prefix}{p.describe() or 'working'} {p.done}/{p.total}, {clock(t - p.started)} elapsed, "
                    f"ETA {clock(p.eta(t))}")

    # ------------------------------------------------------------------ the live display
    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        with self._lock:
            t = self._now()
            step, p = self._step, self._phase
            n_steps, n_done = len(self.steps), len(self._finished_steps)
            head = f"{self.title} " if self.title else ""
            if step is None:
                yield Text(_short(f"{head}starting…", width), no_wrap=True, overflow="ellipsis")
                return
            what = "starting" if p is None else p.describe() + (" done; the next phase is starting" if p.complete else "")
            yield Text(_short(f"{head}{self._step_tag(step)} {STEP_LABELS.get(step, step)} · {what}", width),
                       no_wrap=True, overflow="ellipsis")
            grid = Table.grid(padding=(0, 1))
            grid.add_column(width=7, no_wrap=True)
            grid.add_column(width=max(10, min(30, width - 44)), no_wrap=True)
            grid.add_column(justify="right", no_wrap=True)
            grid.add_column(no_wrap=True)
            if p is not None:
                grid.add_row("phase", ProgressBar(total=max(p.total, 1), completed=min(p.done, max(p.total, 1))),
                             f"{p.done}/{p.total}", f"{clock(t - p.started)} ETA {clock(p.eta(t))}")
            total_elapsed = t - self._started
            overall_eta = total_elapsed / n_done * (n_steps - n_done) if n_done else None
            grid.add_row("overall", ProgressBar(total=max(n_steps, 1), completed=n_done), f"{n_done}/{n_steps}",
                         f"{clock(total_elapsed)} ETA {clock(overall_eta)}")
            yield grid

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> "PhaseProgress":
        if not self.enabled:
            return self
        self._started = self._last_event = self._now()
        if self.live:
            self._live = Live(Group(self), console=self.console, refresh_per_second=2, transient=True,
                              vertical_overflow="crop")
            self._live.start()
        elif self.interval_s > 0:
            self._ticker = threading.Thread(target=self._tick, name="progress-log", daemon=True)
            self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                line = self.status_line() if self._step is not None else None
            if line:
                self._print([line])

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            lines = self._end_step(self._now()) if exc_type is None else []
        self._print(lines)
        if self._live is not None:
            self._live.stop()


class CountedCalls:
    """An expert caller that reports every call made through it as phase `step:what:expert`
    (calls answered of calls made), so a router's own expert calls show progress. Anything else
    is the wrapped caller's."""

    def __init__(self, inner: Any, hook: ProgressHook, step: str, what: str = "fit calls") -> None:
        self._inner = inner
        self._hook = hook
        self.step = step
        self.what = what  # the runner relabels it between fitting and routing
        self._made: Counter[str] = Counter()
        self._answered: Counter[str] = Counter()

    async def submit_or_error(self, expert: str, request: Any) -> Any:
        key = f"{self.step}:{self.what}:{expert}"
        self._made[key] += 1
        self._hook(key, self._answered[key], self._made[key])
        try:
            return await self._inner.submit_or_error(expert, request)
        finally:
            self._answered[key] += 1
            self._hook(key, self._answered[key], self._made[key])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


__all__ = ["CountedCalls", "PhaseProgress", "ProgressHook", "clock"]
