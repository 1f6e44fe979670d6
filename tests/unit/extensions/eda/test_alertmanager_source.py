"""The alertmanager event source, served for real on loopback, fed by HTTP."""
from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source import alertmanager

PAYLOAD = {
    "version": "4",
    "groupKey": '{}:{alertname="ServiceDown"}',
    "status": "firing",
    "receiver": "selfheal",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "ServiceDown", "host": "h2", "service": "demo", "severity": "critical",
                       "instance": "10.213.77.12:8080"},
            "annotations": {"summary": "demo on h2 is down"},
            "startsAt": "2026-11-23T15:40:14.036Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "ed72291d0983648b",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "ServiceDown", "host": "h3", "service": "demo", "instance": "10.213.77.13:8080"},
            "annotations": {},
            "startsAt": "2026-11-23T15:30:00Z",
            "endsAt": "2026-11-23T15:31:00Z",
            "fingerprint": "aa72291d0983648b",
        },
    ],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Client = Callable[..., Awaitable[tuple[int, dict[str, Any], dict[str, str]]]]


def serve(args: dict[str, Any], body: Callable[[Client, asyncio.Queue[Any]], Awaitable[None]],
          queue_size: int = 0) -> None:
    """Run the source on a free port, hand `body` a POST helper and the rulebook's queue."""
    port = _free_port()

    async def run() -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=queue_size)
        task = asyncio.create_task(alertmanager.main(queue, {"port": port, **args}))
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/"):
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)

            async def post(data: bytes | str | object, path: str = "/api/v1/alerts",
                           headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
                raw = data if isinstance(data, bytes) else (data if isinstance(data, str) else json.dumps(data))
                async with session.post(f"http://127.0.0.1:{port}{path}", data=raw, headers=headers) as resp:
                    return resp.status, await resp.json(), dict(resp.headers)

            try:
                await body(post, queue)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(run())


async def _drain(queue: asyncio.Queue[Any], n: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(queue.get(), 5) for _ in range(n)]


def test_each_alert_becomes_an_event_with_stock_fields_and_signal() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        status, reply, _ = await post(PAYLOAD, headers={"Authorization": "Bearer s3cr3t-token"})
        assert (status, reply) == (202, {"accepted": 3})
        original, first, second = await _drain(queue, 3)
        assert original["payload"] == PAYLOAD and original["meta"] == {"endpoint": "api/v1/alerts"}
        assert first["alert"] == PAYLOAD["alerts"][0]
        assert first["meta"]["hosts"] == ["10.213.77.12"]
        assert first["signal"]["status"] == "firing"
        assert first["signal"]["target"]["host"] == "h2"
        assert second["signal"]["status"] == "resolved"
        assert "s3cr3t-token" not in json.dumps([original, first, second])

    serve({}, body)


def test_stock_arguments_keep_their_meaning() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        status, _, _ = await post({"data": {"items": PAYLOAD["alerts"][0]}})
        assert status == 202
        [event] = await _drain(queue, 1)
        assert event["meta"]["hosts"] == ["h2"]
        assert event["signal"]["name"] == "ServiceDown"

    serve({"data_alerts_path": "data/items", "data_path_separator": "/", "data_host_path": "labels/host",
           "skip_original_data": True}, body)


def test_whole_payload_as_one_alert_when_alerts_path_is_empty() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        status, _, _ = await post(PAYLOAD["alerts"][0])
        assert status == 202
        [event] = await _drain(queue, 1)
        assert event["alert"]["fingerprint"] == "ed72291d0983648b"

    serve({"data_alerts_path": "", "skip_original_data": True}, body)


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (b"{not json", 400, "not JSON"),
        ([1, 2], 400, "must be a JSON object"),
        ({"nothing": []}, 400, "has no 'alerts'"),
        ({"alerts": [{"labels": {}}]}, 400, "alert 0: the alert has no 'alertname'"),
        ({"alerts": [PAYLOAD["alerts"][0], "x"]}, 400, "alert 1: an alert must be an object"),
        (b" " * (2 * 1024 * 1024), 413, "larger than"),
        ("[" * 60000 + "]" * 60000, 400, "not JSON"),
    ],
)
def test_malformed_payloads_get_4xx_and_emit_nothing(data: object, code: int, reason: str) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        status, reply, _ = await post(data)
        assert status == code
        assert reason in reply["error"]
        status, _, _ = await post(PAYLOAD)  # and the source still serves
        assert status == 202
        events = await _drain(queue, 3)
        assert events[0]["payload"] == PAYLOAD  # nothing from the refused payload came first

    serve({}, body)


def test_deep_nesting_within_size_limit_is_refused() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        status, reply, _ = await post("[" * 50000 + "]" * 50000)
        assert status == 400
        assert "not JSON" in reply["error"]
        assert queue.empty()

    serve({"max_body_bytes": 200000}, body)


def test_full_buffer_answers_503_with_retry_after_and_loses_nothing() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        # The rulebook is not reading. Room: 1 event in its queue, 1 in hand, 4 in the buffer.
        results = [await post(PAYLOAD) for _ in range(3)]
        assert [r[0] for r in results] == [202, 202, 503]
        assert results[2][2]["Retry-After"] == "1"
        events = await _drain(queue, 6)
        hosts = [e.get("signal", {}).get("target", {}).get("host") for e in events]
        assert hosts == [None, "h2", "h3"] * 2
        await asyncio.sleep(0.05)
        status, _, _ = await post(PAYLOAD)  # room again: the retry is accepted
        assert status == 202
        assert len(await _drain(queue, 3)) == 3
        assert queue.empty()

    serve({"buffer_size": 4}, body, queue_size=1)


def test_buffer_answers_fast_while_the_rulebook_is_slow() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(50):
            status, _, _ = await post(PAYLOAD)
            assert status == 202
        assert loop.time() - t0 < 10  # generous: nothing waits on the (unread) queue
        assert queue.qsize() == 1

    serve({"buffer_size": 1000}, body, queue_size=1)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ({"port": "5000x"}, "port"),
        ({"port": 70000}, "port"),
        ({"host": ""}, "host"),
        ({"skip_original_data": "yes"}, "skip_original_data"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"tokn": "x"}, "tokn"),
        ({"data_path_separator": ""}, "data_path_separator"),
    ],
)
def test_bad_arguments_name_the_argument(args: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        asyncio.run(alertmanager.main(asyncio.Queue(), args))


def test_refusals_are_logged_without_the_payload(caplog: pytest.LogCaptureFixture) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        await post({"alerts": [{"labels": {"secret": "hunter2"}}]}, headers={"Authorization": "Bearer tok-123"})

    with caplog.at_level(logging.DEBUG):
        serve({}, body)
    assert "refused a payload" in caplog.text
    assert "hunter2" not in caplog.text and "tok-123" not in caplog.text
