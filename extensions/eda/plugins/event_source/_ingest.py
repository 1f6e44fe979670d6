# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the selfheal.core HTTP event sources share: arguments, security, the intake.

Not a source itself (ansible-rulebook never loads it by name). Each source
gives a `Pipeline`: `parse` (request -> items, or `Refused`), `process`
(item -> events), `tick` (-> events due) and, if it keeps state, `to_state`
and `load_state`; this module serves HTTP, authenticates, makes what it
accepts durable and feeds the rulebook.

Accepted means kept. A request is answered 202 only once its items are
committed to the intake, an SQLite file of the source's own (O(intake_path),
next to O(state_path) by default), so not even SIGKILL loses an alert that
was answered 202. The pump reads the intake in order, processes it and
checkpoints: the source's state, the intake offset it has consumed and the
events it has not yet handed to the rulebook (the outbox) are saved in one
row of the store; only then is the consumed part of the intake deleted. At
start the state is restored, the outbox handed on first, and everything in
the intake after the offset is processed again, so a restart neither loses
nor repeats an alert. A stop (cancel, SIGTERM, a rulebook's shutdown) ends the
server first, checkpoints what was processed and returns at once: what is
still in the intake waits there for the next start.

Security properties, for every source:
- binds 127.0.0.1 unless told otherwise, and refuses to listen beyond
  loopback with no authentication configured; TLS and mutual TLS on request;
- bearer token and HMAC body signatures compared in constant time; the
  default HMAC covers a timestamp too, so an old signed body cannot be replayed;
- body size limit (413), a JSON content type (415), strict JSON (no NaN or
  Infinity) and malformed input refused with the reason (400), bad
  credentials 401 with no event; nothing refused reaches the rulebook;
- 503 with Retry-After only for a sustained overload (more than
  O(buffer_size) items accepted and not yet processed) or an intake that
  cannot be written: nothing is dropped silently;
- only harmless headers (an allow-list) reach events; credentials, tokens,
  signatures and cookies never reach events or logs.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from ansible_collections.selfheal.core.plugins.module_utils import journal
from ansible_collections.selfheal.core.plugins.module_utils.engine_text import for_engine
from ansible_collections.selfheal.core.plugins.module_utils.notify import (
    FORMATS,
    SEVERITIES,
    Notification,
    build,
    grouped,
)
from ansible_collections.selfheal.core.plugins.module_utils.sender import PostError, as_json, post_json, receiver
from ansible_collections.selfheal.core.plugins.module_utils.signing import verify, verify_body
from ansible_collections.selfheal.core.plugins.module_utils.store import Store, StoreError
from ansible_collections.selfheal.core.plugins.module_utils.watchdog import RunState, Watch

logger = logging.getLogger(__name__)

# name: (type, default, secret)
COMMON_ARGS: dict[str, tuple[type, Any, bool]] = {
    "host": (str, "127.0.0.1", False),
    "port": (int, 5000, False),
    "token": (str, None, True),
    "hmac_secret": (str, None, True),
    "hmac_scheme": (str, "selfheal", False),
    "hmac_header": (str, None, False),
    "hmac_timestamp_header": (str, "X-Selfheal-Timestamp", False),
    "hmac_max_age": (int, 300, False),
    "hmac_algo": (str, "sha256", False),
    "hmac_format": (str, "hex", False),
    "certfile": (str, None, False),
    "keyfile": (str, None, False),
    "cafile": (str, None, False),
    "max_body_bytes": (int, 1024 * 1024, False),
    "buffer_size": (int, 100000, False),
    "state_path": (str, None, False),
    "intake_path": (str, None, False),
}
# The signature header of each HMAC scheme: ours (timestamped) and ansible.eda's (body only).
HMAC_HEADERS = {"selfheal": "X-Selfheal-Signature", "eda": "X-Hub-Signature-256"}
# Request headers that may reach events (meta.headers): nothing that authenticates or identifies a session.
SAFE_HEADERS = frozenset(h.lower() for h in (
    "Accept", "Accept-Encoding", "Content-Length", "Content-Type", "Host", "User-Agent", "X-Forwarded-For",
    "X-Forwarded-Proto", "X-Real-IP", "X-Request-ID"))
JSON_TYPES = ("application/json",)


def parse_args(plugin: str, args: dict[str, Any], own: dict[str, tuple[type, Any, bool]]) -> dict[str, Any]:
    """Validate source arguments; ValueError names the argument at fault (never its value if secret).

    An argument the source does not know is a warning naming it, as stock sources ignore one; but a
    source with no authentication that would listen beyond loopback refuses to start, so a misspelled
    `token` can never open an endpoint silently."""
    spec = {**COMMON_ARGS, **own}
    unknown = sorted(set(args) - set(spec))
    if unknown:
        logger.warning("%s: ignoring unknown argument(s) %s; known: %s", plugin, ", ".join(unknown),
                       ", ".join(sorted(spec)))
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
        if kind is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
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
    if values["hmac_scheme"] not in HMAC_HEADERS:
        raise ValueError(f"{plugin}: argument hmac_scheme must be one of {', '.join(HMAC_HEADERS)}")
    if values["hmac_format"] not in ("hex", "base64"):
        raise ValueError(f"{plugin}: argument hmac_format must be hex or base64")
    if values["hmac_algo"] not in hashlib.algorithms_guaranteed:
        raise ValueError(f"{plugin}: argument hmac_algo must be a hash such as sha256 or sha512")
    values["hmac_header"] = values["hmac_header"] or HMAC_HEADERS[values["hmac_scheme"]]
    for name in [n for n, (_kind, _default, secret) in spec.items() if secret]:
        if values[name] == "":
            values[name] = None  # an empty secret from a rulebook variable's default means "not set"
        if values[name] is not None and len(values[name]) < 16:
            raise ValueError(f"{plugin}: argument {name} must be at least 16 characters")
    if (values["certfile"] is None) != (values["keyfile"] is None):
        raise ValueError(f"{plugin}: arguments certfile and keyfile go together")
    if values["cafile"] is not None and values["certfile"] is None:
        raise ValueError(f"{plugin}: argument cafile (mutual TLS) needs certfile and keyfile")
    authenticated = any(values.get(n) for n in ("token", "hmac_secret", "cafile"))
    if not authenticated and not _loopback(values["host"]):
        raise ValueError(f"{plugin}: refusing to listen on {values['host']} with no authentication: set token, "
                         "hmac_secret or cafile (mutual TLS), or listen on 127.0.0.1")
    return values


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    if secret is None:
        return None
    signature = headers.get(settings["hmac_header"], "")
    if settings["hmac_scheme"] == "eda":
        return verify_body(secret, body, signature, settings["hmac_algo"], settings["hmac_format"])
    stamp = headers.get(settings["hmac_timestamp_header"], "")
    why = verify(secret, body, stamp, signature, now, settings["hmac_max_age"])
    if why is not None and not stamp.isdigit():
        return f"missing or malformed {settings['hmac_timestamp_header']} header"
    return why


def safe_headers(headers: Any) -> dict[str, str]:
    """The request's harmless headers, for meta.headers (an allow-list: never credentials)."""
    return {k: v for k, v in headers.items() if k.lower() in SAFE_HEADERS}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (send numbers, or null)")


def strict_json(raw: bytes) -> Any:
    """Standard JSON only: NaN, Infinity and -Infinity are refused, as is text that is not UTF-8."""
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise Refused(400, "payload is nested too deeply") from None
    except ValueError as exc:
        raise Refused(400, f"body is not JSON: {str(exc)[:200]}") from None


class Refused(Exception):  # noqa: N818 - a refusal is an answer, not an error of ours
    """A request the source answers with an HTTP error and the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Inbound:
    """What a source's parse() knows of the request besides its payload."""

    endpoint: str
    received_at: float
    headers: dict[str, str] = field(default_factory=dict)


class Pipeline:
    """What a source does with what it accepted. Items must be plain JSON data: they are kept in the intake."""

    state_name: str | None = None  # where to_state() is saved in the store; None: nothing to keep
    json_content_type_required = True  # False: a body without a content type is taken when it is JSON

    def parse(self, payload: Any, request: Inbound) -> list[Any]:
        raise NotImplementedError

    def process(self, item: Any, now: float) -> list[dict[str, Any]]:
        raise NotImplementedError

    def lookup(self, now: float) -> Any:
        """Blocking reads that the next tick() needs (a store, say). Run in a worker thread while the pump
        waits, so the event loop never waits on them and nothing else changes the pipeline meanwhile."""
        return None

    def tick(self, now: float, looked: Any = None) -> list[dict[str, Any]]:
        """Periodic work, with what lookup() read just before."""
        return []

    def to_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take back what to_state() gave; ValueError or TypeError when it cannot."""

    def restored(self, now: float) -> list[dict[str, Any]]:
        """Events due once the state is restored at start (for example, resolutions missed while down)."""
        return []

    def secret_for(self, endpoint: str) -> str:
        """Which secret setting must have signed a request to `endpoint`."""
        return "hmac_secret"

    def gauges(self) -> dict[str, float]:
        """The pipeline's own figures for /metrics (name -> value)."""
        return {}


@dataclass
class Counters:
    accepted: int = 0
    refused: int = 0
    unauthorized: int = 0
    busy: int = 0
    processed: int = 0
    emitted: int = 0
    replayed: int = 0


class IntakeError(Exception):
    """The intake cannot be written: the request gets 503 (the sender retries), never 202."""


class Intake:
    """Accepted items, durable before the sender hears 202: rows of an SQLite file, in order.

    Row ids grow forever (AUTOINCREMENT), so an offset saved with the source's state always
    means the same rows. Without a path the intake lives in memory and a restart loses it.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        try:
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._db = sqlite3.connect(path or ":memory:", timeout=1.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # a commit survives the process's death
            self._db.execute("CREATE TABLE IF NOT EXISTS intake (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "received_at REAL NOT NULL, n INTEGER NOT NULL, items TEXT NOT NULL)")
            rows = self._db.execute("SELECT count(*), coalesce(sum(n), 0) FROM intake").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise IntakeError(f"intake {path}: {exc}") from exc
        self.rows, self.items = int(rows[0]), int(rows[1])

    def append(self, items: list[Any], received_at: float) -> int:
        """Commit `items` as one row; its id. IntakeError when it could not be kept."""
        try:
            text = json.dumps(items, separators=(",", ":"), ensure_ascii=False)
            cur = self._db.execute("INSERT INTO intake (received_at, n, items) VALUES (?, ?, ?)",
                                   (received_at, len(items), text))
        except (ValueError, TypeError) as exc:
            raise IntakeError(f"items cannot be kept: {exc}") from exc
        except sqlite3.Error as exc:
            raise IntakeError(f"intake {self.path or '(memory)'} cannot be written: {exc}") from exc
        self.rows += 1
        self.items += len(items)
        return int(cur.lastrowid or 0)

    def continue_after(self, offset: int) -> None:
        """Make every later row id larger than `offset` (an intake file made anew beside an older saved state
        would start again at 1, and its rows would be taken for consumed ones)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'intake'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('intake', ?)", (offset,))
        elif int(row[0]) < offset:
            self._db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'intake'", (offset,))

    def after(self, offset: int, max_rows: int = 32) -> list[tuple[int, list[Any]]]:
        """Rows after `offset`, oldest first: (id, items)."""
        rows = self._db.execute("SELECT id, items FROM intake WHERE id > ? ORDER BY id LIMIT ?",
                                (offset, max_rows)).fetchall()
        return [(int(r[0]), json.loads(r[1])) for r in rows]

    def ack(self, offset: int) -> None:
        """Forget the rows up to `offset`: their items are in the saved state (or with the rulebook)."""
        try:
            gone = self._db.execute("SELECT count(*), coalesce(sum(n), 0) FROM intake WHERE id <= ?",
                                    (offset,)).fetchone()
            self._db.execute("DELETE FROM intake WHERE id <= ?", (offset,))
        except sqlite3.Error as exc:
            logger.warning("intake %s: cannot delete consumed rows (kept, skipped at start): %s", self.path, exc)
            return
        self.rows -= int(gone[0])
        self.items -= int(gone[1])

    def close(self) -> None:
        self._db.close()


def intake_path(settings: dict[str, Any], plugin: str) -> str | None:
    """Where the intake is kept: intake_path, else a file beside state_path, else nowhere (memory)."""
    if settings["intake_path"]:
        return str(settings["intake_path"])
    if settings["state_path"]:
        root, _ext = os.path.splitext(settings["state_path"])
        return f"{root}.{plugin.rsplit('.', 1)[-1]}-intake.db"
    return None


class SavedState:
    """A source's state in the SQLite store of argument state_path, with the intake offset it has
    consumed and the events not yet handed on (one row, written at once: a checkpoint).

    A store that cannot be opened or read at start stops the source (ValueError naming state_path);
    one that cannot be written later is logged, and the state stays in memory for the next save.
    """

    def __init__(self, plugin: str, path: str | None, name: str | None) -> None:
        self.plugin, self.name = plugin, name
        self.store: Store | None = None
        if path and name:
            try:
                self.store = Store(path)
            except StoreError as exc:
                raise ValueError(f"{plugin}: argument state_path: {exc}") from None

    @staticmethod
    def read(store: Store, name: str) -> dict[str, Any] | None:
        """The state a source saved under `name` in `store` (for reports and tests), or None."""
        saved = store.load_state(name)
        return saved["state"] if saved is not None and saved.get("checkpoint") == 1 else saved

    def restore(self, load: Callable[[dict[str, Any]], None]) -> tuple[bool, int, list[dict[str, Any]]]:
        """Hand the saved state to `load`: (whether there was one, intake offset, outbox)."""
        if self.store is None or self.name is None:
            return False, 0, []
        try:
            saved = self.store.load_state(self.name)
            if saved is None:
                return False, 0, []
            if saved.get("checkpoint") == 1:
                load(saved["state"])
                return True, int(saved["offset"]), list(saved["outbox"])
            load(saved)  # saved by an earlier release: the state alone
        except (StoreError, ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{self.plugin}: argument state_path: {exc}") from None
        return True, 0, []

    def save(self, state: dict[str, Any], offset: int = 0, outbox: list[dict[str, Any]] | None = None) -> bool:
        """Whether the checkpoint is saved (or there is nowhere to save it)."""
        if self.store is None or self.name is None:
            return True
        try:
            self.store.save_state(self.name, {"checkpoint": 1, "offset": offset, "outbox": outbox or [],
                                              "state": state})
        except StoreError as exc:
            logger.error("%s: %s (the state is kept in memory and saved again at the next change)", self.plugin, exc)
            return False
        return True

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def run_states(store_path: str | None, incident_ids: list[str], now: float) -> dict[str, RunState]:
    """What the store says of each incident's runs; a store that cannot be read says so for each."""
    if not store_path:
        return {i: RunState(unknown="no store is configured (state_path or store)") for i in incident_ids}
    # what a run recorded in the local journal because the store could not take it counts as recorded
    waiting = journal.records(store_path)
    if not incident_ids and not waiting:
        return {}
    journaled = journal.outcomes(store_path, incident_ids)
    try:
        store = Store(store_path, timeout=2.0)
    except StoreError as exc:
        return {i: RunState(outcome=journaled[i]) if i in journaled else RunState(unknown=str(exc))
                for i in incident_ids}
    with store:
        try:
            states = {i: RunState(**state) for i, state in store.run_states(incident_ids, store.clock()).items()}
        except StoreError as exc:
            states = {i: RunState(unknown=str(exc)) for i in incident_ids}
        try:
            if waiting:
                journal.replay(store)  # the record catches up as soon as the store can be written
        except (StoreError, OSError) as exc:
            logger.info("the journal waits for the store a little longer: %s", exc)
    return {i: RunState(outcome=journaled[i]) if i in journaled and states[i].outcome is None else states[i]
            for i in incident_ids}


class Pager:
    """The watchdog's own way to a human: straight to the notification route, not through a playbook or
    the store (the parts that may have failed). Retried, then sent to the fallback route; each send runs in
    a thread of its own so the source never waits on a receiver. What it sent is added to the audit trail
    when the store can be written."""

    def __init__(self, plugin: str, settings: dict[str, Any]) -> None:
        self.plugin, self.settings = plugin, settings
        if settings.get("notify_format") not in FORMATS:
            raise ValueError(f"{plugin}: argument notify_format must be one of {', '.join(FORMATS)}")
        if not settings.get("notify_url"):
            logger.warning("%s: no notify_url: the watchdog cannot page anyone, it can only log", plugin)

    def send(self, watch: Watch, why: str, incident: dict[str, Any] | None = None) -> None:
        summary = f"{watch.incident_type} on {watch.target} needs a human: {why}"
        logger.error("%s: paging: %s (%s)", self.plugin, summary, watch.incident_id)
        severity = (incident or {}).get("severity")
        note = Notification(summary=summary, severity=severity if severity in SEVERITIES else "critical",
                            incident_id=watch.page_key or watch.incident_id, target=watch.target,
                            evidence={"why": why, "incident": incident or {}, "watchdog": asdict(watch)},
                            at=time.time())
        threading.Thread(target=self._deliver, args=(watch, note, "trigger"), daemon=True).start()

    def resolve(self, watch: Watch, why: str) -> None:
        """Close the page of an incident that reached its final state (PagerDuty resolve, a note elsewhere)."""
        logger.info("%s: resolving the page of %s: %s", self.plugin, watch.incident_id, why)
        note = Notification(summary=f"{watch.incident_type} on {watch.target}: {why}", severity="info",
                            incident_id=watch.page_key or watch.incident_id, target=watch.target,
                            evidence={"why": why, "incident_id": watch.incident_id},
                            at=time.time())
        threading.Thread(target=self._deliver, args=(watch, note, "resolve"), daemon=True).start()

    def _deliver(self, watch: Watch, note: Notification, action: str) -> None:
        settings = self.settings
        secrets = [v for v in (settings.get("notify_token"), settings.get("notify_routing_key")) if v]
        headers = {"Authorization": f"Bearer {settings['notify_token']}"} if settings.get("notify_token") else {}
        for url in [u for u in (settings.get("notify_url"), settings.get("notify_fallback_url")) if u]:
            sent, key = note, watch.page_key or watch.incident_id
            if action == "trigger":
                sent, group = grouped(note, url, journal.count_page(url, note.at))
                key = group or key
            document = build(settings["notify_format"], sent, settings.get("notify_routing_key"), action,
                             dedup_key=key)
            try:
                post_json(url, as_json(document), headers, 10.0, True, 3, [url, *secrets], "selfheal-watchdog")
            except PostError as exc:
                logger.error("%s: the %s of %s did not go out: %s", self.plugin,
                             "page" if action == "trigger" else action, watch.incident_id, exc)
                continue
            if action == "trigger":
                watch.delivered = True
            self._record(watch, sent, receiver(url), "escalated" if action == "trigger" else "page_resolved")
            return
        if action == "trigger":
            logger.critical("%s: NOBODY WAS PAGED for %s: %s", self.plugin, watch.incident_id, note.summary)

    def _record(self, watch: Watch, note: Notification, where: str, event: str) -> None:
        path = self.settings.get("store") or self.settings.get("state_path")
        if not path:
            return
        try:
            with Store(path, timeout=2.0) as store:
                store.audit(event, "watchdog", {"summary": note.summary, "receiver": where,
                                                "evidence": note.evidence}, watch.incident_id)
        except StoreError as exc:
            logger.warning("%s: the page of %s went out, but the store cannot record it: %s", self.plugin,
                           watch.incident_id, exc)


def _reply(http_status: int, **body: Any) -> web.Response:
    headers = {"Retry-After": "1"} if http_status == 503 else None
    if http_status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return web.json_response(body, status=http_status, headers=headers)


_SAVE_EVERY = 1.0
_CHUNK_ITEMS = 5000
_OUTBOX_MAX = 1000


class _Server:
    """One source at work: HTTP in, the intake, the pump, checkpoints, events out."""

    def __init__(self, plugin: str, queue: asyncio.Queue[Any], settings: dict[str, Any], pipeline: Pipeline,
                 tick_interval: float) -> None:
        self.plugin, self.queue, self.settings, self.pipeline = plugin, queue, settings, pipeline
        self.tick_interval = tick_interval
        self.counters = Counters()
        self.stateful = pipeline.state_name is not None and bool(settings["state_path"])
        self.state = SavedState(plugin, settings["state_path"], pipeline.state_name)
        path = intake_path(settings, plugin)
        try:
            self.intake = Intake(path)
        except IntakeError as exc:
            self.state.close()
            raise ValueError(f"{plugin}: argument intake_path: {exc}") from None
        if path is None:
            logger.warning("%s: no state_path: accepted items are held in memory only and a restart loses "
                           "those not yet handed to the rulebook", plugin)
        try:
            found, self.offset, outbox = self.state.restore(pipeline.load_state)
        except ValueError:
            self.close()
            raise
        self.acked = 0
        self._ack(self.offset)  # what the saved state already holds
        self.intake.continue_after(self.offset)
        backlog = self.intake.items
        self.unprocessed = backlog
        if found or backlog:
            logger.info("%s: restored its state%s; %d accepted items wait in the intake %s", plugin,
                        "" if found else " (none saved)", backlog, path)
        # events not yet handed on: (event, intake row it came from, 0 for none)
        self.outbox: deque[tuple[dict[str, Any], int]] = deque((event, 0) for event in outbox)
        self.outbox.extend((event, 0) for event in pipeline.restored(time.time()))
        self.dirty = bool(self.outbox)
        self.saved_at = 0.0
        self.last_tick = 0.0
        self.wakeup = asyncio.Event()  # something was accepted
        self.has_events = asyncio.Event()  # the outbox has something for the deliverer
        self.has_events.set()
        self.room = asyncio.Event()  # the outbox has room again
        self.sent = 0  # outbox events put in the rulebook's queue, not yet taken from it
        self.outbox_max = min(_OUTBOX_MAX, settings["buffer_size"])

    # ------------------------------------------------------------------ HTTP

    async def status(self, _request: web.Request) -> web.Response:
        return _reply(200, status="up", buffered=self.unprocessed, intake_rows=self.intake.rows,
                      durable=self.intake.path is not None, **self.counters.__dict__)

    async def metrics(self, _request: web.Request) -> web.Response:
        """The source's own health in Prometheus's text format, so that a Prometheus outside the daemon
        notices it down, not ingesting, or its watchdog stalled (the platform's own alert rules)."""
        labels = f'source="{self.plugin}"'
        lines = []
        for name, value in self.counters.__dict__.items():
            metric = f"selfheal_intake_{name}_total"
            lines += [f"# TYPE {metric} counter", f"{metric}{{{labels}}} {value}"]
        gauges = {"intake_backlog": self.unprocessed, "outbox": len(self.outbox),
                  "last_checkpoint_timestamp_seconds": self.saved_at, **self.pipeline.gauges()}
        for name, value in gauges.items():
            lines += [f"# TYPE selfheal_{name} gauge", f"selfheal_{name}{{{labels}}} {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def receive(self, request: web.Request) -> web.Response:
        received_at = time.time()
        endpoint = request.match_info.get("endpoint", "")
        settings, counters = self.settings, self.counters
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            counters.refused += 1
            return _reply(413, error=f"body larger than {settings['max_body_bytes']} bytes")
        denied = authenticate(request.headers, raw, settings, received_at, self.pipeline.secret_for(endpoint))
        if denied is not None:
            counters.unauthorized += 1
            logger.warning("%s: refused an unauthenticated request on /%s: %s", self.plugin, endpoint, denied)
            return _reply(401, error=denied)
        try:
            self._content_type(request)
            payload = strict_json(raw)
            items = self.pipeline.parse(payload, Inbound(endpoint, received_at, safe_headers(request.headers)))
        except Refused as refused:
            counters.refused += 1
            logger.warning("%s: refused a payload on /%s: %s", self.plugin, endpoint, refused.reason)
            return _reply(refused.status, error=refused.reason)
        except RecursionError:
            counters.refused += 1
            return _reply(400, error="payload is nested too deeply")
        if not items:
            return _reply(202, accepted=0)
        if self.unprocessed + len(items) > settings["buffer_size"]:
            counters.busy += 1
            logger.warning("%s: %d accepted items wait to be processed (buffer_size %d): asking the sender to "
                           "retry %d items", self.plugin, self.unprocessed, settings["buffer_size"], len(items))
            return _reply(503, error="overloaded, retry later", buffered=self.unprocessed)
        try:
            self.intake.append(items, received_at)
        except IntakeError as exc:
            counters.busy += 1
            logger.error("%s: %s; asking the sender to retry", self.plugin, exc)
            return _reply(503, error="cannot keep the items now, retry later")
        self.unprocessed += len(items)
        counters.accepted += len(items)
        self.wakeup.set()
        return _reply(202, accepted=len(items))

    def _content_type(self, request: web.Request) -> None:
        given = request.headers.get("Content-Type")
        kind = (given or "").split(";", 1)[0].strip().lower()
        if kind in JSON_TYPES or kind.endswith("+json"):
            return
        if not given and not self.pipeline.json_content_type_required:  # none, or an empty one
            return
        raise Refused(415, f"send the body as JSON with the header 'Content-Type: application/json' "
                           f"(got {kind or 'no content type'})")

    # ------------------------------------------------------------------ the pump

    async def pump(self) -> None:
        """Forever: process the intake in order, checkpoint, queue the events for the deliverer."""
        while True:
            while len(self.outbox) >= self.outbox_max:  # the rulebook is slow: do not run ahead of it
                self.room.clear()
                await self.room.wait()
            rows = self.intake.after(self.offset)
            count, fresh = 0, len(self.outbox)
            for row_id, items in rows:
                now = time.time()
                for item in items:
                    try:
                        self.outbox.extend((event, row_id) for event in self.pipeline.process(item, now))
                    except Exception:  # a bug must not stop the source; it is logged with its traceback
                        logger.exception("%s: could not process an accepted item; it is skipped", self.plugin)
                count += len(items)
                self.offset = row_id
                if count >= _CHUNK_ITEMS:
                    break
            self.unprocessed -= count
            self.counters.processed += count
            now = time.time()
            if now - self.last_tick >= self.tick_interval:
                self.last_tick = now
                looked = await asyncio.to_thread(self.pipeline.lookup, now)
                self.outbox.extend((event, 0) for event in self.pipeline.tick(time.time(), looked))
            fresh = len(self.outbox) - fresh
            self.dirty = self.dirty or bool(count) or bool(fresh)
            if fresh or (self.dirty and now - self.saved_at >= _SAVE_EVERY):
                self.checkpoint()  # new events are saved before they are handed on
            if fresh:
                self.has_events.set()
            if not self.stateful and not self.outbox:
                self._ack(self.offset)
            if rows:
                await asyncio.sleep(0)  # let requests in between chunks
                continue
            self.wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_interval):
                    await self.wakeup.wait()

    async def deliver(self) -> None:
        """Forever: hand the outbox to the rulebook, oldest first, in text the rule engine can carry.

        An event leaves the outbox only once the rule engine has taken it from its queue: one that
        still waits there when the daemon stops would be lost with the queue."""
        while True:
            self._confirm()
            if len(self.outbox) > self.sent:
                event, _row = self.outbox[self.sent]
                await self.queue.put(for_engine(event))
                self.sent += 1
                self.counters.emitted += 1
            elif self.sent:
                await asyncio.sleep(0.05)  # the engine has not taken them all yet
            else:
                self.has_events.clear()
                await self.has_events.wait()

    def _confirm(self) -> None:
        """Drop from the outbox what the engine took: all but our last `qsize` puts (the queue is FIFO,
        and whatever else shares it only makes ours older)."""
        size = getattr(self.queue, "queue", self.queue)
        waiting = size.qsize() if callable(getattr(size, "qsize", None)) else 0
        while self.sent > waiting:
            _event, row = self.outbox.popleft()
            self.sent -= 1
            self.dirty = True  # the saved outbox still holds it: the next checkpoint drops it
            self.room.set()
            if not self.stateful and row and (not self.outbox or self.outbox[0][1] != row):
                self._ack(row)  # every event of that row is with the rulebook

    def checkpoint(self) -> None:
        """Save the state, the offset and the outbox at once; then the consumed intake can go."""
        if not self.stateful:
            return
        if self.state.save(self.pipeline.to_state(), self.offset, [event for event, _row in self.outbox]):
            self.saved_at = time.time()
            self.dirty = False
            self._ack(self.offset)

    def _ack(self, offset: int) -> None:
        if offset > self.acked:
            self.intake.ack(offset)
            self.acked = offset

    def close(self) -> None:
        self.intake.close()
        self.state.close()


async def serve(plugin: str, queue: asyncio.Queue[Any], settings: dict[str, Any], pipeline: Pipeline,
                tick_interval: float = 0.25) -> None:
    """Serve until cancelled; then stop accepting, checkpoint and return (the stock sources return too)."""
    context = ssl_context(plugin, settings)
    server = _Server(plugin, queue, settings, pipeline, tick_interval)
    app = web.Application(client_max_size=settings["max_body_bytes"])
    app.router.add_get("/", server.status)
    app.router.add_get("/metrics", server.metrics)
    app.router.add_post("/{endpoint:.*}", server.receive)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    tasks: list[asyncio.Task[None]] = []
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings["host"], settings["port"], ssl_context=context)
        await site.start()
        logger.info("%s listening on %s://%s:%d", plugin, "https" if context else "http", settings["host"],
                    settings["port"])
        tasks = [asyncio.create_task(server.pump()), asyncio.create_task(server.deliver())]
        # both run until cancelled: one that ends has failed, and its error stops the source
        done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    except asyncio.CancelledError:
        logger.info("%s stopping: %d accepted items wait in the intake for the next start", plugin,
                    server.unprocessed)
    finally:
        # stop accepting first (requests in flight get a second to finish), then the pump and the deliverer
        with contextlib.suppress(Exception):
            await runner.cleanup()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.dirty = True
        server._confirm()  # what the engine took since the deliverer last looked
        server.checkpoint()
        server.close()


def run_by_hand(main: Callable[[asyncio.Queue[Any], dict[str, Any]], Any]) -> None:
    """Run a source from the command line with its defaults: print every event instead of handing it on."""

    class _PrintQueue(asyncio.Queue[Any]):
        async def put(self, item: Any) -> None:
            print(json.dumps(item))

    asyncio.run(main(_PrintQueue(), {}))
