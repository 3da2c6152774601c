"""One Router-R1 episode as a state machine, shared by the inference graph and training rollouts.

    ep = Episode(max_turns=4)
    while not ep.done:
        step = ep.accept(policy_output)          # cut, parse, decide
        if step.call is not None:                # a valid route to a pool expert
            reply = ...                          # the callee's answer (None on failure)
            ep.observe(step, reply)
        else:
            ep.observe(step, None)               # empty or None observation, per the reference

The rules are the reference's (§1.3): at most `max_turns` policy generations with routing on,
then one more with routing off if no answer came; an answer ends the episode; an invalid route
or a missing action gives an empty observation and the loop goes on; an unknown expert name or a
failed call gives `<information>None</information>`. The caller generates text and calls experts;
this class only keeps the transcript, counts and costs, so both callers share one set of rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from routers.router_r1.parsing import Route, close_turn, cut_response, last_answer, parse_action, parse_route
from routers.router_r1.prompts import NONE_OBSERVATION, information_block

StepOutcome = Literal["answer", "route", "invalid-route", "unknown-expert", "no-action", "final"]


@dataclass(frozen=True, slots=True)
class Call:
    """A route to execute: which pool expert, with which sub-question."""

    expert: str
    query: str


@dataclass(slots=True)
class Step:
    turn: int
    text: str  # the policy's output after the cut
    outcome: StepOutcome
    routing: bool
    route: Route | None = None
    call: Call | None = None
    observation: str = ""
    ok: bool = True  # False when the callee failed


@dataclass
class Episode:
    max_turns: int = 4
    transcript: str = ""  # the assistant side: policy text and injected observations
    steps: list[Step] = field(default_factory=list)
    done: bool = False
    routes_executed: int = 0
    cost: float = 0.0  # micro-dollars (reference units)
    # Text already in the transcript that opens the next turn (a prefill such as "<think>" or
    # "<search> name:"): the turn's action is parsed on it plus the generated text.
    pending: str = ""
    prefill: str = ""  # what the transcript started with (not the policy's text)

    @classmethod
    def start(cls, max_turns: int = 4, prefill: str = "") -> "Episode":
        return cls(max_turns=max_turns, transcript=prefill, pending=prefill, prefill=prefill)

    @property
    def turn(self) -> int:
        return len(self.steps)

    @property
    def routing_enabled(self) -> bool:
        """Routing is on for the first `max_turns` generations; the extra last one is answer-only."""
        return self.turn < self.max_turns

    @property
    def answer(self) -> str | None:
        return last_answer(self.transcript)

    def segments(self) -> list[tuple[str, bool]]:
        """The transcript as (text, written by the policy): the prefill, then each turn and its
        observation. Training masks the loss with it (callee text is never trained on)."""
        out = [(self.prefill, False)]
        for s in self.steps:
            out += [(s.text, True), (s.observation, False)]
        return [seg for seg in out if seg[0]]

    def accept(self, output: str, resolve: Callable[[str], str | None], stop_string: str | None = None) -> Step:
        """Take one policy generation; `resolve` maps a route's name to a pool expert (or None).

        `stop_string` is the stop string the generation ended on, if any (`close_turn`)."""
        if self.done:
            raise RuntimeError("the episode is over")
        routing = self.routing_enabled
        full = close_turn(self.pending + output, stop_string)
        text = cut_response(full)
        action = parse_action(text)
        text = text[len(self.pending):] if len(text) >= len(self.pending) else ""
        self.pending = ""
        step = Step(turn=self.turn, text=text, outcome="no-action", routing=routing)
        if not routing:
            step.outcome = "final"  # searches are parsed but never executed now
        elif action.kind == "answer":
            step.outcome = "answer"
        elif action.kind == "search":
            step.route = parse_route(action.content)
            if not step.route.valid:
                step.outcome = "invalid-route"
            else:
                expert = resolve(step.route.name)
                if expert is None:
                    step.outcome, step.ok = "unknown-expert", False
                else:
                    step.outcome, step.call = "route", Call(expert, step.route.query)
        self.steps.append(step)
        self.transcript += text
        if step.outcome in ("answer", "final"):
            self.done = True
        return step

    def observe(self, step: Step, reply: str | None, *, cost: float = 0.0) -> str:
        """Append the observation for `step`; returns it ("" for none). `reply` None = failure."""
        if step.outcome == "route":
            if reply is None:
                step.ok = False
                step.observation = NONE_OBSERVATION
            else:
                step.observation = information_block(reply)
                self.routes_executed += 1
                self.cost += cost
        elif step.outcome == "unknown-expert":
            step.observation = NONE_OBSERVATION
        else:
            step.observation = ""
        self.transcript += step.observation
        return step.observation


# The MMLU-Pro authors' answer statement ("... The answer is (C)."): replies are cut right after
# the first one, since base models write on past it into an invented next question.
_ANSWER_STATEMENT = re.compile(r"answer is \(?[A-J]\)?\.?")


def truncate_reply(reply: str, max_tokens: int, encode: Callable[[str], Sequence[int]] | None = None,
                   decode: Callable[[Sequence[int]], str] | None = None) -> str:
    """Bound an observation to `max_tokens` (the reference's max_obs_length), keeping its end.

    A reply is cut after its first answer statement when it has one, then its last `max_tokens`
    tokens are kept: chain-of-thought replies put their answer last ("The answer is (X)"), so a
    head cut would drop it. With the policy's tokenizer the cut is exact; without one (a remote
    policy) ~4 characters stand for a token. Only the reply is cut, so the closing tag always
    survives (the reference cuts the whole observation's tokens, closing tag included)."""
    m = _ANSWER_STATEMENT.search(reply)
    if m is not None:
        reply = reply[: m.end()]
    reply = reply.strip()
    if encode is not None and decode is not None:
        ids = list(encode(reply))
        return reply if len(ids) <= max_tokens else decode(ids[-max_tokens:]).strip()
    return reply[-max_tokens * 4 :].strip()
