"""Serve an event source for real on loopback and talk to it over HTTP."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


Client = Callable[..., Awaitable[Reply]]
SourceMain = Callable[[asyncio.Queue[Any], dict[str, Any]], Coroutine[Any, Any, None]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(source: SourceMain, args: dict[str, Any], body: Callable[[Client, asyncio.Queue[Any]], Awaitable[None]],
          queue_size: int = 0, scheme: str = "http", ssl_context: Any = None) -> None:
    """Run the source on a free port, hand `body` a POST helper and the rulebook's queue."""
    port = free_port()
    base = f"{scheme}://127.0.0.1:{port}"

    async def run() -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        task = asyncio.create_task(source(queue, {"port": port, **args}))
        connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else None
        async with aiohttp.ClientSession(connector=connector) as session:
            for _attempt in range(200):
                if task.done():
                    task.result()  # raises what stopped the source
                try:
                    async with session.get(f"{base}/"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)

            async def post(data: bytes | str | object, path: str = "/api/v1/alerts",
                           headers: dict[str, str] | None = None) -> Reply:
                """POST as Alertmanager does (Content-Type: application/json unless `headers` say otherwise)."""
                raw = data if isinstance(data, (bytes, str)) else json.dumps(data)
                sent = {"Content-Type": "application/json", **(headers or {})}
                async with session.post(f"{base}{path}", data=raw, headers=sent) as resp:
                    try:
                        payload = await resp.json(content_type=None)
                    except ValueError:
                        payload = {}
                    return Reply(resp.status, payload if isinstance(payload, dict) else {}, dict(resp.headers))

            try:
                await body(post, queue)
            finally:
                task.cancel()
                # a source returns when cancelled, as the stock sources do
                await asyncio.wait_for(task, 10)

    asyncio.run(run())


async def drain(queue: asyncio.Queue[Any], n: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(queue.get(), 5) for item in range(n)]


class ThreadedSource:
    """An event source served from a thread of its own, for synchronous clients (and hypothesis)."""

    def __init__(self, source: SourceMain, args: dict[str, Any], queue_size: int = 0) -> None:
        import threading

        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.queue: asyncio.Queue[Any] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def start() -> None:
                self.queue = asyncio.Queue(maxsize=queue_size)
                self._task = asyncio.create_task(source(self.queue, {"port": self.port, **args}))
                self._ready.set()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
                except BaseException as exc:  # noqa: BLE001 - reported to the test by alive()
                    self._error = exc

            self.loop.run_until_complete(start())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self._ready.wait(10)
        import time

        for _attempt in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self._task is not None and not self._task.done() and self._error is None

    def events(self, timeout: float = 0.2) -> list[Any]:
        """Everything the rulebook would have received so far."""
        async def drain_all() -> list[Any]:
            assert self.queue is not None
            out = []
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    out.append(await asyncio.wait_for(self.queue.get(), max(remaining, 0.001)))
                except TimeoutError:
                    return out

        return asyncio.run_coroutine_threadsafe(drain_all(), self.loop).result(timeout + 5)

    def close(self) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self.thread.join(10)
