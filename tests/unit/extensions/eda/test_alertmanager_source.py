"""The alertmanager event source, served for real on loopback, fed by HTTP."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from source_harness import Client, drain, serve

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source import alertmanager
from ansible_collections.selfheal.core.plugins.module_utils.engine_text import restore

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


def test_each_alert_becomes_an_event_with_stock_fields_and_signal() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        reply = await post(PAYLOAD, headers={"Authorization": "Bearer s3cr3t-token"})
        assert (reply.status, reply.body) == (202, {"accepted": 3})
        original, first, second = await drain(queue, 3)
        assert original["payload"] == PAYLOAD and original["meta"]["endpoint"] == "api/v1/alerts"
        # harmless headers reach the events, as in ansible.eda; credentials never do
        assert original["meta"]["headers"]["Content-Type"] == "application/json"
        assert "Authorization" not in first["meta"]["headers"]
        assert first["alert"] == PAYLOAD["alerts"][0]
        assert first["meta"]["hosts"] == ["10.213.77.12"]
        assert first["signal"]["status"] == "firing"
        assert first["signal"]["target"]["host"] == "h2"
        assert second["signal"]["status"] == "resolved"
        assert "s3cr3t-token" not in json.dumps([original, first, second])

    serve(alertmanager.main, {}, body)


def test_stock_arguments_keep_their_meaning() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"data": {"items": PAYLOAD["alerts"][0]}})).status == 202
        [event] = await drain(queue, 1)
        assert event["meta"]["hosts"] == ["h2"]
        assert event["signal"]["name"] == "ServiceDown"

    serve(alertmanager.main, {"data_alerts_path": "data/items", "data_path_separator": "/",
                              "data_host_path": "labels/host", "skip_original_data": True}, body)


def test_whole_payload_as_one_alert_when_alerts_path_is_empty() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post(PAYLOAD["alerts"][0])).status == 202
        [event] = await drain(queue, 1)
        assert event["alert"]["fingerprint"] == "ed72291d0983648b"

    serve(alertmanager.main, {"data_alerts_path": "", "skip_original_data": True}, body)


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (b"{not json", 400, "not JSON"),
        ([1, 2], 400, "must be a JSON object"),
        ({"nothing": []}, 400, "has no 'alerts'"),
        ({"alerts": [{"labels": {"a": {"b": 1}}}]}, 400, "alert 0: labels must map strings to strings"),
        (b'{"alerts": [{"labels": {"alertname": "X"}, "startsAt": NaN}]}', 400, "NaN is not JSON"),
        (b'{"alerts": [], "x": Infinity}', 400, "Infinity is not JSON"),
        (b'{"alerts": [{"labels": {"alertname": "\xff"}}]}', 400, "not JSON"),
        ({"alerts": [PAYLOAD["alerts"][0], "x"]}, 400, "alert 1: an alert must be an object"),
        (b" " * (2 * 1024 * 1024), 413, "larger than"),
        ("[" * 60000 + "]" * 60000, 400, "nested too deeply"),
    ],
)
def test_malformed_payloads_get_4xx_and_emit_nothing(data: object, code: int, reason: str) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        reply = await post(data)
        assert reply.status == code
        assert reason in reply.body["error"]
        assert (await post(PAYLOAD)).status == 202  # and the source still serves
        events = await drain(queue, 3)
        assert events[0]["payload"] == PAYLOAD  # nothing from the refused payload came first

    serve(alertmanager.main, {}, body)


def test_deep_nesting_within_size_limit_is_refused() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        reply = await post("[" * 50000 + "]" * 50000)
        assert reply.status == 400
        assert "nested too deeply" in reply.body["error"]
        assert queue.empty()

    serve(alertmanager.main, {"max_body_bytes": 200000}, body)


def test_sustained_overload_answers_503_with_retry_after_and_loses_nothing() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        # The rulebook is not reading: 1 event in its queue, the outbox full at buffer_size (4),
        # then 3 accepted items wait to be processed; the next 3 would pass buffer_size.
        results = [await post(PAYLOAD) for attempt in range(4)]
        assert [r.status for r in results] == [202, 202, 202, 503]
        assert results[3].headers["Retry-After"] == "1"
        events = await drain(queue, 9)
        hosts = [e.get("signal", {}).get("target", {}).get("host") for e in events]
        assert hosts == [None, "h2", "h3"] * 3
        await asyncio.sleep(0.05)
        assert (await post(PAYLOAD)).status == 202  # room again: the retry is accepted
        assert len(await drain(queue, 3)) == 3
        await asyncio.sleep(0.3)
        assert queue.empty()

    serve(alertmanager.main, {"buffer_size": 4}, body, queue_size=1)


def test_buffer_answers_fast_while_the_rulebook_is_slow() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for attempt in range(50):
            assert (await post(PAYLOAD)).status == 202, attempt
        assert loop.time() - t0 < 10  # generous: nothing waits on the (unread) queue
        assert queue.qsize() == 1

    serve(alertmanager.main, {"buffer_size": 1000}, body, queue_size=1)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ({"port": "5000x"}, "port"),
        ({"port": 70000}, "port"),
        ({"host": ""}, "host"),
        ({"skip_original_data": "yes"}, "skip_original_data"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"host": "0.0.0.0"}, "no authentication"),
        ({"host": "10.1.2.3", "tokn": "a-misspelled-token"}, "no authentication"),
        ({"hmac_scheme": "github"}, "hmac_scheme"),
        ({"data_path_separator": ""}, "data_path_separator"),
    ],
)
def test_bad_arguments_name_the_argument(args: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        asyncio.run(alertmanager.main(asyncio.Queue(), args))


def test_refusals_are_logged_without_the_payload(caplog: pytest.LogCaptureFixture) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        await post({"alerts": [{"labels": {"secret": ["hunter2"]}}]}, headers={"Authorization": "Bearer tok-123"})

    with caplog.at_level(logging.DEBUG):
        serve(alertmanager.main, {}, body)
    assert "refused a payload" in caplog.text
    assert "hunter2" not in caplog.text and "tok-123" not in caplog.text


def test_an_unknown_argument_is_a_warning_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post(PAYLOAD)).status == 202

    with caplog.at_level(logging.WARNING):
        serve(alertmanager.main, {"frobnicate": 1}, body)
    assert "unknown argument(s) frobnicate" in caplog.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_gets_415_saying_what_to_send(content_type: str | None) -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
        reply = await post(PAYLOAD, headers=headers)
        assert reply.status == 415
        assert "Content-Type: application/json" in reply.body["error"]
        await asyncio.sleep(0.3)
        assert queue.empty()

    serve(alertmanager.main, {}, body)


def test_json_with_a_charset_is_json() -> None:
    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        reply = await post(PAYLOAD, headers={"Content-Type": "application/json; charset=utf-8"})
        assert reply.status == 202

    serve(alertmanager.main, {}, body)


def test_odd_but_valid_alerts_are_accepted() -> None:
    long_text = "trace line\n" * 2000  # 22,000 characters: a stack trace
    alerts = [
        {"labels": {"job": "batch", "host": "h1"}, "annotations": {}},  # no alertname
        {"labels": {"alertname": "Fire \U0001F525", "host": "h2"}, "annotations": {"trace": long_text}},
    ]

    async def body(post: Client, queue: asyncio.Queue[Any]) -> None:
        assert (await post({"alerts": alerts})).status == 202
        nameless, fire = await drain(queue, 2)
        assert nameless["signal"]["name"] == "" and nameless["signal"]["target"]["host"] == "h1"
        # the rule engine cannot carry non-BMP text: it travels in the engine-safe form, restored intact
        assert all(ord(c) <= 0xFFFF for c in json.dumps(fire, ensure_ascii=False))
        assert restore(fire)["signal"]["name"] == "Fire \U0001F525"
        trace = fire["signal"]["annotations"]["trace"]
        assert len(trace) == 4096 and trace.endswith(f"[truncated by selfheal: {len(long_text)} characters]")
        assert fire["alert"]["annotations"]["trace"] == trace

    serve(alertmanager.main, {"skip_original_data": True}, body)
