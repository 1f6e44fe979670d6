"""Serve an event source for real on loopback and talk to it over HTTP."""
from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest


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
                raw = data if isinstance(data, (bytes, str)) else json.dumps(data)
                async with session.post(f"{base}{path}", data=raw, headers=headers) as resp:
                    try:
                        payload = await resp.json(content_type=None)
                    except ValueError:
                        payload = {}
                    return Reply(resp.status, payload if isinstance(payload, dict) else {}, dict(resp.headers))

            try:
                await body(post, queue)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(run())


async def drain(queue: asyncio.Queue[Any], n: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(queue.get(), 5) for item in range(n)]
