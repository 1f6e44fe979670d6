# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receive Alertmanager webhooks and emit one normalized event per alert."""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

try:
    from ansible_collections.selfheal.core.plugins.module_utils.signals import (
        SignalError,
        from_alertmanager,
        get_path,
        strip_port,
    )
except ImportError:
    # ansible-rulebook runs this file by path and does not put the collection
    # root on sys.path: add the directory that holds ansible_collections/.
    sys.path.append(str(Path(__file__).absolute().parents[7]))
    from ansible_collections.selfheal.core.plugins.module_utils.signals import (
        SignalError,
        from_alertmanager,
        get_path,
        strip_port,
    )

DOCUMENTATION = r"""
---
short_description: Receive alerts from Alertmanager and emit normalized signals.
description:
  - An ansible-rulebook event source that receives Alertmanager webhook
    notifications (or those of a compatible system) over HTTP.
  - Every alert becomes one event that carries the stock
    C(ansible.eda.alertmanager) fields C(alert) and C(meta.hosts), plus
    C(signal), the alert normalized to the selfheal.core Signal schema
    (source, fingerprint, status, name, severity, target, labels,
    annotations, starts_at, received_at).
  - The request is answered 202 as soon as the alerts are in a bounded buffer;
    Alertmanager never waits for playbooks. When the buffer is full the
    answer is 503 with Retry-After, so Alertmanager retries and nothing is
    dropped silently.
  - A malformed payload is refused whole with 400 and the reason; an oversize
    body gets 413. Request headers are never copied into events.
options:
  host:
    description:
      - Address to listen on. The default listens on loopback only.
    type: str
    default: 127.0.0.1
  port:
    description:
      - TCP port to listen on.
    type: int
    default: 5000
  data_alerts_path:
    description:
      - Path of the alert list in the payload; an empty string treats the whole payload as one alert.
    type: str
    default: alerts
  data_host_path:
    description:
      - Path inside an alert of the host it concerns, reported in C(meta.hosts) without its port.
      - An empty string disables the lookup.
    type: str
    default: labels.instance
  data_path_separator:
    description:
      - Separator of the parts of O(data_alerts_path) and O(data_host_path).
    type: str
    default: "."
  skip_original_data:
    description:
      - When false, the whole payload is emitted as one more event (C(payload), C(meta.endpoint))
        before the per-alert events.
    type: bool
    default: false
  max_body_bytes:
    description:
      - Largest request body accepted; larger ones get 413.
    type: int
    default: 1048576
  buffer_size:
    description:
      - Events held between the HTTP server and the rulebook. When a payload does not fit,
        the request gets 503 with Retry-After.
    type: int
    default: 10000
"""

EXAMPLES = r"""
- name: Heal what Alertmanager reports
  hosts: all
  sources:
    - selfheal.core.alertmanager:
        host: 127.0.0.1
        port: 5000
  rules:
    - name: Restart a service that is down
      condition: event.signal.status == "firing" and event.signal.name == "ServiceDown"
      action:
        run_playbook:
          name: selfheal.core.remediate_service_down
"""

logger = logging.getLogger(__name__)

_ARGS: dict[str, tuple[type, Any]] = {
    "host": (str, "127.0.0.1"),
    "port": (int, 5000),
    "data_alerts_path": (str, "alerts"),
    "data_host_path": (str, "labels.instance"),
    "data_path_separator": (str, "."),
    "skip_original_data": (bool, False),
    "max_body_bytes": (int, 1024 * 1024),
    "buffer_size": (int, 10000),
}
_MAX_ALERTS = 10000


@dataclass(frozen=True)
class _Settings:
    host: str
    port: int
    data_alerts_path: str
    data_host_path: str
    data_path_separator: str
    skip_original_data: bool
    max_body_bytes: int
    buffer_size: int


def _settings(args: dict[str, Any]) -> _Settings:
    """Validate the source arguments; ValueError names the argument at fault."""
    unknown = sorted(set(args) - set(_ARGS))
    if unknown:
        raise ValueError(f"selfheal.core.alertmanager: unknown argument(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(_ARGS))}")
    values: dict[str, Any] = {}
    for name, (kind, default) in _ARGS.items():
        value = args.get(name, default)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"selfheal.core.alertmanager: argument {name} must be an integer, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"selfheal.core.alertmanager: argument {name} must be true or false, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"selfheal.core.alertmanager: argument {name} must be a string, got {value!r}")
        values[name] = value
    if not 1 <= values["port"] <= 65535:
        raise ValueError(f"selfheal.core.alertmanager: argument port must be 1-65535, got {values['port']}")
    if values["max_body_bytes"] < 1024:
        raise ValueError("selfheal.core.alertmanager: argument max_body_bytes must be at least 1024")
    if values["buffer_size"] < 1:
        raise ValueError("selfheal.core.alertmanager: argument buffer_size must be at least 1")
    if not values["host"]:
        raise ValueError("selfheal.core.alertmanager: argument host must not be empty")
    if not values["data_path_separator"]:
        raise ValueError("selfheal.core.alertmanager: argument data_path_separator must not be empty")
    return _Settings(**values)


class _RefusedError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _events(payload: Any, endpoint: str, settings: _Settings, received_at: float) -> list[dict[str, Any]]:
    """Turn one webhook payload into the events to emit; _RefusedError when malformed."""
    if settings.data_alerts_path:
        if not isinstance(payload, dict):
            raise _RefusedError(400, f"payload must be a JSON object, got {type(payload).__name__}")
        try:
            alerts = get_path(payload, settings.data_alerts_path, settings.data_path_separator)
        except KeyError:
            raise _RefusedError(400, f"payload has no {settings.data_alerts_path!r}") from None
        if not isinstance(alerts, list):
            alerts = [alerts]
    else:
        alerts = [payload]
    if len(alerts) > _MAX_ALERTS:
        raise _RefusedError(413, f"{len(alerts)} alerts in one payload; at most {_MAX_ALERTS}")
    events: list[dict[str, Any]] = []
    if not settings.skip_original_data:
        events.append({"payload": payload, "meta": {"endpoint": endpoint}})
    for index, alert in enumerate(alerts):
        hosts: list[str] = []
        if settings.data_host_path and isinstance(alert, dict):
            try:
                found = get_path(alert, settings.data_host_path, settings.data_path_separator)
            except KeyError:
                found = None
            if isinstance(found, str) and found:
                hosts.append(strip_port(found))
        try:
            signal = from_alertmanager(alert, received_at, hosts[0] if hosts else None)
        except SignalError as exc:
            raise _RefusedError(400, f"alert {index}: {exc}") from None
        events.append({"alert": alert, "signal": signal.to_dict(),
                       "meta": {"endpoint": endpoint, "hosts": hosts}})
    return events


def _reply(http_status: int, **body: Any) -> web.Response:
    headers = {"Retry-After": "1"} if http_status == 503 else None
    return web.json_response(body, status=http_status, headers=headers)


def _make_app(buffer: asyncio.Queue[dict[str, Any]], settings: _Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def status(_request: web.Request) -> web.Response:
        return _reply(200, status="up", buffered=buffer.qsize())

    async def webhook(request: web.Request) -> web.Response:
        received_at = time.time()
        endpoint = request.match_info.get("endpoint", "")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reply(413, error=f"body larger than {settings.max_body_bytes} bytes")
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return _reply(400, error=f"body is not JSON: {str(exc)[:200]}")
        try:
            events = _events(payload, endpoint, settings, received_at)
        except _RefusedError as refused:
            logger.warning("refused a payload on /%s: %s", endpoint, refused.reason)
            return _reply(refused.status, error=refused.reason)
        except RecursionError:
            return _reply(400, error="payload is nested too deeply")
        free = settings.buffer_size - buffer.qsize()
        if len(events) > free:
            logger.warning("buffer full (%d of %d): asking the sender to retry %d events",
                           buffer.qsize(), settings.buffer_size, len(events))
            return _reply(503, error="buffer full, retry later", buffered=buffer.qsize())
        for event in events:
            buffer.put_nowait(event)
        return _reply(202, accepted=len(events))

    app.router.add_get("/", status)
    app.router.add_post("/{endpoint:.*}", webhook)
    return app


async def _pump(buffer: asyncio.Queue[dict[str, Any]], queue: asyncio.Queue[Any]) -> None:
    while True:
        event = await buffer.get()
        await queue.put(event)
        buffer.task_done()


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Serve the webhook until cancelled."""
    settings = _settings(args)
    buffer: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=settings.buffer_size)
    runner = web.AppRunner(_make_app(buffer, settings), access_log=None)
    pump = asyncio.create_task(_pump(buffer, queue))
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        logger.info("selfheal.core.alertmanager listening on %s:%d", settings.host, settings.port)
        await asyncio.Future()
    except asyncio.CancelledError:
        logger.info("selfheal.core.alertmanager stopping")
        raise
    finally:
        pump.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    # Run by hand: print every event instead of handing it to a rulebook.
    class _PrintQueue(asyncio.Queue[Any]):
        async def put(self, item: Any) -> None:
            print(json.dumps(item))

    asyncio.run(main(_PrintQueue(), {}))
