"""A TCP proxy on 127.0.0.1 that adds a fixed latency to every request, for tests and benchmarks.

Everything a client sends on a connection reaches the server ``latency`` seconds later than it
was sent (each chunk keeps its own arrival time, so the throughput stays that of the link: a
request costs one latency, not one per chunk); answers come back at once. An HTTP request on a
kept-alive connection therefore takes one latency more than it would, as a request to a store in
another building does. The proxy also counts connections, requests seen (chunks from clients after
a quiet moment) and the most requests in flight at once: requests sent and not yet answered.

    with LatencyProxy("127.0.0.1", moto_port, latency=0.03) as proxy:
        ... point the client at proxy.url ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class LatencyProxy:
    def __init__(self, host: str, port: int, latency: float):
        self.upstream = (host, port)
        self.latency = latency
        self.port = 0
        self.connections = 0
        self.requests = 0
        self.in_flight = 0
        self.peak = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        async def stop():
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.requests = self.peak = 0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        outstanding = [0]  # requests on this connection sent and not yet answered
        up = asyncio.create_task(self._to_server(client_r, server_w, outstanding))
        down = asyncio.create_task(self._to_client(server_r, client_w, outstanding))
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for task in (up, down):
            task.cancel()
        for w in (client_w, server_w):
            w.close()
        self.in_flight -= outstanding[0]

    async def _to_server(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, outstanding: list) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                w.write(chunk)
                await w.drain()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await r.read(1 << 16):
                if outstanding[0] == 0:  # a new request (the client waits for each answer)
                    outstanding[0] = 1
                    self.requests += 1
                    self.in_flight += 1
                    self.peak = max(self.peak, self.in_flight)
                queue.put_nowait((time.monotonic() + self.latency, chunk))
            while not queue.empty():
                await asyncio.sleep(self.latency)
        finally:
            sender.cancel()

    async def _to_client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, outstanding: list) -> None:
        while chunk := await r.read(1 << 16):
            if outstanding[0]:
                outstanding[0] = 0
                self.in_flight -= 1
            w.write(chunk)
            await w.drain()
