"""A loopback TCP proxy that records its connections: the tests' way to see that a cancelled
stream really closes its upstream connection (which is what makes vLLM abort the request).

    with TcpProxy("127.0.0.1", 8011) as proxy:
        base_url = f"http://127.0.0.1:{proxy.port}/v1"
        ...
        proxy.open_connections        # connections still open
        proxy.closed_at               # monotonic times at which client sides closed

Real sockets both ways (a byte pipe, nothing parsed or invented).
"""

from __future__ import annotations

import asyncio
import threading
import time


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.open_connections = 0
        self.closed_at: list[float] = []
        self.bytes_down = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool) -> None:
        try:
            while data := await reader.read(65536):
                if down:
                    self.bytes_down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.open_connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
            up = asyncio.ensure_future(self._pipe(client_r, up_w, down=False))  # ends when the client closes
            down = asyncio.ensure_future(self._pipe(up_r, client_w, down=True))
            await up
            self.closed_at.append(time.monotonic())
            down.cancel()
            up_w.close()
        finally:
            self.open_connections -= 1

    def __enter__(self) -> "TcpProxy":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
