"""Parsing the policy's output: where a turn ends, which action it took, which expert it named.

    text = cut_response("<think>x</think><search> Qwen:who? </search> junk")   # ends at </search>
    action = parse_action(text)                  # Action(kind="search", content=" Qwen:who? ")
    route = parse_route(action.content)          # Route(name="qwen", query="who?", valid=True)
    expert = resolve_expert(route.name, registry, pool)   # canonical name or None

Rules from the reference (§1.3, §1.2): cut after the first `</search>`, else after the first
`</answer>`; the action is the first `<search>…</search>` or `<answer>…</answer>` pair; a route is
invalid if it holds the placeholder text, has no colon, or has an empty query after the last
colon. The route's model name is the first colon-separated piece and its query the second piece
only (a query with another colon is truncated, as in the reference, and the format reward
punishes it). Names resolve against the registry (case-insensitive name or alias, restricted to
the router's pool), not the reference's hard-coded substring table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from routers.router_r1.prompts import ANSWER_CLOSE, ROUTE_CLOSE, STOP_STRINGS

if TYPE_CHECKING:
    from experts.registry import ExpertRegistry

PLACEHOLDERS = ("llm-name", "your-query")
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


def cut_response(text: str) -> str:
    """Keep the text up to and including the first `</search>`, else the first `</answer>`."""
    for tag in (ROUTE_CLOSE, ANSWER_CLOSE):
        k = text.find(tag)
        if k >= 0:
            return text[: k + len(tag)]
    return text


def close_turn(text: str, stop_string: str | None) -> str:
    """The one rule for where a turn ends, in training and at inference alike.

    A turn that ended on a stop string (`</search>` or `</answer>`) ends with it: servers remove
    it from the text (the local backend and vLLM do, and say which one in `stop_string`), so it
    is put back; text that already ends with it is left as is. A turn that ended on
    end-of-sequence or the token limit is taken exactly as written, so an unclosed `<search>` is
    never executed. (`finish_reason == "stop"` alone cannot tell the two apart: the local backend
    reports it on end-of-sequence too.)"""
    if stop_string is None or stop_string not in STOP_STRINGS or text.endswith(stop_string):
        return text
    return text + stop_string


@dataclass(frozen=True, slots=True)
class Action:
    kind: Literal["search", "answer"] | None
    content: str = ""


def parse_action(text: str) -> Action:
    """The first search or answer block of a (cut) response; kind None when there is none."""
    m = _ACTION.search(text)
    if m is None:
        return Action(None)
    return Action(m.group(1), m.group(2))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    query: str
    valid: bool
    reason: str = ""


def parse_route(content: str) -> Route:
    """Split `Name:query`; invalid routes say why (the reference's invalid-1/2/3)."""
    low = content.lower()
    if any(p in low for p in PLACEHOLDERS):
        return Route("", "", False, "placeholder text (route invalid-1)")
    if ":" not in content:
        return Route("", "", False, "no ':' between name and query (route invalid-2)")
    if not content.rsplit(":", 1)[1].strip():
        return Route(content.split(":", 1)[0].strip().lower(), "", False, "empty query (route invalid-3)")
    parts = content.split(":")
    return Route(parts[0].strip().lower(), parts[1].strip(), True)


def resolve_expert(name: str, registry: "ExpertRegistry", pool: Sequence[str]) -> str | None:
    """The pool expert a route names (case-insensitive name or alias), or None."""
    if not name.strip():
        return None
    canonical = registry.find(name)
    if canonical is None:
        return None
    pool_canonical = {registry.find(p) for p in pool}
    return canonical if canonical in pool_canonical else None


def last_answer(text: str) -> str | None:
    """The content of the last `<answer>` block (what the outcome reward scores)."""
    found = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return found[-1].strip() if found else None


def answer_so_far(text: str) -> str:
    """The answer a turn has written so far, while it is being generated (streaming): what follows
    its `<answer>` (nothing when a `<search>` comes first), up to the first tag, trimmed as
    `last_answer` trims. It only grows as the turn's text grows, so it can be sent piece by piece."""
    start = text.find("<answer>")
    if start < 0:
        return ""
    search = text.find("<search>")
    if 0 <= search < start:
        return ""
    content = text[start + len("<answer>"):]
    tag = content.find("<")
    return (content if tag < 0 else content[:tag]).strip()
