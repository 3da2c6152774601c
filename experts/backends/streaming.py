"""Helpers of the backends' `stream`: reading a server's SSE stream, holding back stop strings.

    acc = ChatStreamAccumulator()
    async for line in response_lines:
        for delta in acc.feed(line):          # the pieces to pass on, as they arrive
            await on_delta(delta)
        if acc.done:
            break
    acc.text, acc.tool_calls, acc.finish_reason, acc.usage

Each event is `data: {chat.completion.chunk}`; the stream ends with `data: [DONE]`. Tool-call
deltas are passed on unchanged and also merged by `index` into complete calls (OpenAI's
non-streaming `message.tool_calls` shape), so the final result is what a non-streaming call
would have returned. A `data: {"error": ...}` event (vLLM's in-band failure) is kept in `error`.

    hold = StopHoldback(("\nQuestion:",))     # an in-process model's text, piece by piece
    safe = hold.feed(piece)                     # what can be shown: never part of a stop string
    rest = hold.flush()                         # at the end
"""

from __future__ import annotations

import json
from typing import Any

from experts.types import GenerationDelta


class ChatStreamAccumulator:
    """Parses SSE lines of one streamed chat completion; see the module docstring."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.usage: dict[str, Any] = {}
        self.error: str | None = None
        self.done = False
        self.emitted = False  # some delta was passed on: the call can no longer be retried

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tool_calls(self) -> list[dict[str, Any]] | None:
        return [self._calls[i] for i in sorted(self._calls)] if self._calls else None

    def feed(self, line: bytes | str) -> list[GenerationDelta]:
        """One line of the body; returns the deltas it carries (usually none or one)."""
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        line = line.strip()
        if not line.startswith("data:"):
            return []  # blank separators, comments (": ping"), `event:` lines
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            event = json.loads(data)
        except ValueError as e:
            raise ValueError(f"a stream event is not JSON: {data[:200]!r}") from e
        if not isinstance(event, dict):
            raise ValueError(f"a stream event is not an object: {data[:200]!r}")
        if event.get("error") is not None:
            err = event["error"]
            self.error = str(err.get("message") if isinstance(err, dict) else err)[:500]
            self.done = True
            return []
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        out = []
        for choice in event.get("choices") or ():  # `choices: null` on usage chunks is tolerated
            delta = choice.get("delta") or {}
            content = delta.get("content") or ""
            calls = delta.get("tool_calls") or None
            if content or calls:
                self.parts.append(content)
                if calls:
                    self._merge(calls)
                out.append(GenerationDelta(text=content, tool_calls=calls))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                self.stop_reason = choice.get("stop_reason")
        if out:
            self.emitted = True
        return out

    def feed_completion(self, body: dict[str, Any]) -> list[GenerationDelta]:
        """A whole (non-streamed) chat completion, from a server that ignored `stream: true`."""
        choice = body["choices"][0] if body.get("choices") else {}
        message = choice.get("message") or {}
        text, calls = message.get("content") or "", message.get("tool_calls") or None
        self.parts.append(text)
        if calls:
            self._calls = dict(enumerate(calls))
        self.finish_reason = choice.get("finish_reason")
        self.usage = body.get("usage") or {}
        self.done = True
        if not (text or calls):
            return []
        self.emitted = True
        return [GenerationDelta(text=text, tool_calls=tool_call_deltas(calls) if calls else None)]

    def _merge(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            i = int(d.get("index", 0))
            call = self._calls.setdefault(i, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            if d.get("id"):
                call["id"] = d["id"]
            if d.get("type"):
                call["type"] = d["type"]
            fn = d.get("function") or {}
            if fn.get("name"):
                call["function"]["name"] += fn["name"]
            if fn.get("arguments"):
                call["function"]["arguments"] += fn["arguments"]


def tool_call_deltas(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete tool calls as one streamed delta each (OpenAI's streaming shape adds `index`)."""
    return [{"index": i, **c} for i, c in enumerate(calls)]


class StopHoldback:
    """Passes streamed text on, holding back any tail that could begin a stop string and cutting
    the text where one appears, so a streamed answer never shows what `generate` would cut."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.pending = ""
        self.emitted = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        if not self.stops:
            self.emitted += piece
            return piece
        self.pending += piece
        window = self.emitted[-self.keep:] + self.pending if self.keep else self.pending
        offset = len(window) - len(self.pending)
        hits = [k for k in (window.find(s) for s in self.stops) if k >= 0]
        if hits:
            self.stopped = True
            out = self.pending[: max(0, min(hits) - offset)]
            self.pending = ""
        else:
            cut = len(self.pending) - self.keep if self.keep else len(self.pending)
            out, self.pending = self.pending[: max(0, cut)], self.pending[max(0, cut):]
            # hold back only a tail that is really a prefix of some stop string
            while self.pending and not any(s.startswith(self.pending) for s in self.stops):
                out, self.pending = out + self.pending[0], self.pending[1:]
        self.emitted += out
        return out

    def flush(self) -> str:
        out = "" if self.stopped else self.pending
        self.pending = ""
        self.emitted += out
        return out
