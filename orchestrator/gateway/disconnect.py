"""Cancel a handler's work when its client goes away (vLLM's `with_cancellation`, one task lighter).

    try:
        result = await cancel_on_disconnect(request, answer())
    except ClientDisconnected:
        return Response(status_code=499)      # nobody is listening; the work was cancelled

A listener task waits for the ASGI `http.disconnect` message; when it comes first, it cancels the
handler's task, so the work in it (expert calls, their HTTP connections) is cancelled at once
rather than run to the end for nobody. The work runs in the handler's own task (no extra task for
it, unlike racing two tasks); the runtime records the query's trace as `cancelled`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a request whose client closed the connection


class ClientDisconnected(Exception):
    """Raised by `cancel_on_disconnect` when the client went away before the work finished."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task; cancel it if the client disconnects first (the request body
    must already have been read)."""
    me = asyncio.current_task()
    assert me is not None
    gone = False

    async def listen() -> None:
        nonlocal gone
        while (await request.receive())["type"] != "http.disconnect":
            pass
        gone = True
        me.cancel()

    listener = asyncio.create_task(listen())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and me.uncancel() == 0:  # our cancellation, and nobody else's: the client left
            raise ClientDisconnected() from None
        raise
    finally:
        listener.cancel()
