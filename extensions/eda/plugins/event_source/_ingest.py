# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the selfheal.core HTTP event sources share: arguments, security, buffering.

Not a source itself (ansible-rulebook never loads it by name). Each source
gives a `parse` function (request -> items, or `Refused`), a `process`
function (item -> events) and optionally a `tick` function (-> events due);
this module serves HTTP, authenticates, buffers and feeds the rulebook.

Security properties, for every source:
- binds 127.0.0.1 unless told otherwise; TLS and mutual TLS on request;
- bearer token and HMAC-SHA256 body signatures compared in constant time;
  the HMAC covers a timestamp too, so an old signed body cannot be replayed;
- body size limit (413), malformed input refused with the reason (400),
  bad credentials 401 with no event;
- answers as soon as the items are buffered (202); when the bounded buffer
  is full, 503 with Retry-After: nothing is dropped silently;
- headers, tokens and bodies never reach events or logs.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ansible_collections.selfheal.core.plugins.module_utils.signing import verify
from ansible_collections.selfheal.core.plugins.module_utils.store import Store, StoreError

logger = logging.getLogger(__name__)

# name: (type, default, secret)
COMMON_ARGS: dict[str, tuple[type, Any, bool]] = {
    "host": (str, "127.0.0.1", False),
    "port": (int, 5000, False),
    "token": (str, None, True),
    "hmac_secret": (str, None, True),
    "hmac_header": (str, "X-Selfheal-Signature", False),
    "hmac_timestamp_header": (str, "X-Selfheal-Timestamp", False),
    "hmac_max_age": (int, 300, False),
    "certfile": (str, None, False),
    "keyfile": (str, None, False),
    "cafile": (str, None, False),
    "max_body_bytes": (int, 1024 * 1024, False),
    "buffer_size": (int, 10000, False),
}


def parse_args(plugin: str, args: dict[str, Any], own: dict[str, tuple[type, Any, bool]]) -> dict[str, Any]:
    """Validate source arguments; ValueError names the argument at fault (never its value if secret)."""
    spec = {**COMMON_ARGS, **own}
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise ValueError(f"{plugin}: unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(spec))}")
    values: dict[str, Any] = {}
    for name, (kind, default, secret) in spec.items():
        value = args.get(name, default)
        shown = "<secret>" if secret else repr(value)
        if value is None:
            values[name] = None
            continue
        if kind is int and isinstance(value, str) and value.strip().isdigit():
            value = int(value)  # rulebook variables arrive as text
        if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{plugin}: argument {name} must be a number, got {shown}") from None
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{plugin}: argument {name} must be an integer, got {shown}")
        if kind is bool and not isinstance(value, bool):
            raise ValueError(f"{plugin}: argument {name} must be true or false, got {shown}")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"{plugin}: argument {name} must be a string, got {shown}")
        values[name] = value
    if not 1 <= values["port"] <= 65535:
        raise ValueError(f"{plugin}: argument port must be 1-65535, got {values['port']}")
    if values["max_body_bytes"] < 1024:
        raise ValueError(f"{plugin}: argument max_body_bytes must be at least 1024")
    if values["buffer_size"] < 1:
        raise ValueError(f"{plugin}: argument buffer_size must be at least 1")
    if values["hmac_max_age"] < 1:
        raise ValueError(f"{plugin}: argument hmac_max_age must be at least 1")
    if not values["host"]:
        raise ValueError(f"{plugin}: argument host must not be empty")
    for name in [n for n, (_kind, _default, secret) in spec.items() if secret]:
        if values[name] == "":
            values[name] = None  # an empty secret from a rulebook variable's default means "not set"
        if values[name] is not None and len(values[name]) < 16:
            raise ValueError(f"{plugin}: argument {name} must be at least 16 characters")
    if (values["certfile"] is None) != (values["keyfile"] is None):
        raise ValueError(f"{plugin}: arguments certfile and keyfile go together")
    if values["cafile"] is not None and values["certfile"] is None:
        raise ValueError(f"{plugin}: argument cafile (mutual TLS) needs certfile and keyfile")
    return values


def ssl_context(plugin: str, settings: dict[str, Any]) -> ssl.SSLContext | None:
    if settings["certfile"] is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings["certfile"], settings["keyfile"])
        if settings["cafile"] is not None:
            ctx.load_verify_locations(settings["cafile"])
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"{plugin}: cannot load TLS files (certfile, keyfile, cafile): {exc}") from None
    return ctx


def authenticate(headers: Any, body: bytes, settings: dict[str, Any], now: float,
                 signer: str = "hmac_secret") -> str | None:
    """None when the request may pass, else why not (without any secret in the reason).

    `signer` names the setting whose secret must have signed the body (one per endpoint, if a
    source separates who may send what)."""
    token = settings["token"]
    if token is not None:
        given = headers.get("Authorization", "")
        scheme, _sep, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return "missing or wrong bearer token"
    secret = settings[signer]
    if secret is not None:
        stamp = headers.get(settings["hmac_timestamp_header"], "")
        why = verify(secret, body, stamp, headers.get(settings["hmac_header"], ""), now, settings["hmac_max_age"])
        if why is not None and not stamp.isdigit():
            return f"missing or malformed {settings['hmac_timestamp_header']} header"
        return why
    return None


class Refused(Exception):  # noqa: N818 - a refusal is an answer, not an error of ours
    """A request the source answers with an HTTP error and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


Parse = Callable[[Any, str, float], list[Any]]
Process = Callable[[Any, float], list[dict[str, Any]]]
Tick = Callable[[float], list[dict[str, Any]]]


@dataclass
class Counters:
    accepted: int = 0
    refused: int = 0
    unauthorized: int = 0
    busy: int = 0
    emitted: int = 0


def _reply(http_status: int, **body: Any) -> web.Response:
    headers = {"Retry-After": "1"} if http_status == 503 else None
    if http_status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return web.json_response(body, status=http_status, headers=headers)


async def serve(plugin: str, queue: asyncio.Queue[Any], settings: dict[str, Any], parse: Parse,
                process: Process, tick: Tick | None = None, tick_interval: float = 0.25,
                on_idle: Callable[[], None] | None = None,
                secret_for: Callable[[str], str] | None = None) -> None:
    """Serve until cancelled: HTTP in, items through the buffer, events out to the rulebook queue."""
    context = ssl_context(plugin, settings)
    buffer: asyncio.Queue[tuple[Any, float]] = asyncio.Queue(maxsize=settings["buffer_size"])
    counters = Counters()
    app = web.Application(client_max_size=settings["max_body_bytes"])

    async def status(_request: web.Request) -> web.Response:
        return _reply(200, status="up", buffered=buffer.qsize(), **counters.__dict__)

    async def receive(request: web.Request) -> web.Response:
        received_at = time.time()
        endpoint = request.match_info.get("endpoint", "")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            counters.refused += 1
            return _reply(413, error=f"body larger than {settings['max_body_bytes']} bytes")
        signer = secret_for(endpoint) if secret_for is not None else "hmac_secret"
        denied = authenticate(request.headers, raw, settings, received_at, signer)
        if denied is not None:
            counters.unauthorized += 1
            logger.warning("%s: refused an unauthenticated request on /%s: %s", plugin, endpoint, denied)
            return _reply(401, error=denied)
        try:
            try:
                payload = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise Refused(400, f"body is not JSON: {str(exc)[:200]}") from None
            items = parse(payload, endpoint, received_at)
        except Refused as refused:
            counters.refused += 1
            logger.warning("%s: refused a payload on /%s: %s", plugin, endpoint, refused.reason)
            return _reply(refused.status, error=refused.reason)
        except RecursionError:
            counters.refused += 1
            return _reply(400, error="payload is nested too deeply")
        if len(items) > settings["buffer_size"] - buffer.qsize():
            counters.busy += 1
            logger.warning("%s: buffer full (%d of %d): asking the sender to retry %d items",
                           plugin, buffer.qsize(), settings["buffer_size"], len(items))
            return _reply(503, error="buffer full, retry later", buffered=buffer.qsize())
        for item in items:
            buffer.put_nowait((item, received_at))
        counters.accepted += len(items)
        return _reply(202, accepted=len(items))

    async def pump() -> None:
        last_tick = 0.0
        while True:
            try:
                item, _received = await asyncio.wait_for(buffer.get(), timeout=tick_interval)
                try:
                    events = process(item, time.time())
                except Exception:  # a bug must not stop the source; it is logged with its traceback
                    logger.exception("%s: could not process an accepted item; it is skipped", plugin)
                    events = []
            except TimeoutError:
                events = []
                if on_idle is not None:
                    on_idle()
            now = time.time()
            if tick is not None and now - last_tick >= tick_interval:
                last_tick = now
                events = events + tick(now)
            for event in events:
                await queue.put(event)
                counters.emitted += 1

    app.router.add_get("/", status)
    app.router.add_post("/{endpoint:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    pump_task = asyncio.create_task(pump())
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings["host"], settings["port"], ssl_context=context)
        await site.start()
        logger.info("%s listening on %s://%s:%d", plugin, "https" if context else "http", settings["host"],
                    settings["port"])
        await asyncio.Future()
    except asyncio.CancelledError:
        logger.info("%s stopping", plugin)
        raise
    finally:
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump_task
        await runner.cleanup()
        if on_idle is not None:
            on_idle()


class SavedState:
    """A source's state in the SQLite store of argument state_path: restored at start, saved on change.

    A store that cannot be opened or read at start stops the source (ValueError naming state_path);
    one that cannot be written later is logged, and the state stays in memory for the next save.
    """

    def __init__(self, plugin: str, path: str | None, name: str) -> None:
        self.plugin, self.name = plugin, name
        self.store: Store | None = None
        if path:
            try:
                self.store = Store(path)
            except StoreError as exc:
                raise ValueError(f"{plugin}: argument state_path: {exc}") from None

    def restore(self, load: Callable[[dict[str, Any]], None]) -> bool:
        """Hand the saved state to `load`; whether there was one."""
        if self.store is None:
            return False
        try:
            state = self.store.load_state(self.name)
            if state is not None:
                load(state)
        except (StoreError, ValueError, TypeError) as exc:
            raise ValueError(f"{self.plugin}: argument state_path: {exc}") from None
        return state is not None

    def save(self, state: dict[str, Any]) -> bool:
        """Whether the state is saved (or there is nowhere to save it)."""
        if self.store is None:
            return True
        try:
            self.store.save_state(self.name, state)
        except StoreError as exc:
            logger.error("%s: %s (the state is kept in memory and saved again at the next change)", self.plugin, exc)
            return False
        return True

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def run_by_hand(main: Callable[[asyncio.Queue[Any], dict[str, Any]], Any]) -> None:
    """Run a source from the command line with its defaults: print every event instead of handing it on."""

    class _PrintQueue(asyncio.Queue[Any]):
        async def put(self, item: Any) -> None:
            print(json.dumps(item))

    asyncio.run(main(_PrintQueue(), {}))
