"""A real HTTP/1.1 proxy on loopback that loses answers: the request reaches the gateway, the
gateway answers, and the proxy closes the client's connection instead of passing the answer on
(what a dropped connection or a load balancer's timeout does to a client). Counts what it forwards.

    with LossyProxy(gateway_port, drop=1) as proxy:
        proxy.url              # point a client here
        proxy.forwarded        # request lines the gateway received, e.g. [b"POST /v1/batches HTTP/1.1"]
"""

from __future__ import annotations

import asyncio
import threading


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


class LossyProxy:
    def __init__(self, target_port: int, *, drop: int = 1) -> None:
        self.target_port, self.drop = target_port, drop
        self.forwarded: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _relay(self, head: bytes, body: bytes) -> bytes:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            up_w.write(head + body)
            await up_w.drain()
            resp_head = await up_r.readuntil(b"\r\n\r\n")
            return resp_head + await up_r.readexactly(_content_length(resp_head))
        finally:
            up_w.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(_content_length(head))
                self.forwarded.append(head.split(b"\r\n", 1)[0])
                answer = await self._relay(head, body)
                if self.drop > 0:  # the gateway acted and answered; the client never hears of it
                    self.drop -= 1
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> "LossyProxy":
        self._thread.start()

        async def start() -> None:
            self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
