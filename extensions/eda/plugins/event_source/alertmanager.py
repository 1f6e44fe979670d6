# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receive Alertmanager webhooks; emit normalized signals, or incidents when correlating."""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    import ansible_collections.selfheal.core.plugins.module_utils  # noqa: F401 pylint: disable=unused-import
except ImportError:
    # ansible-rulebook runs this file by path and does not put the collection
    # root on sys.path: add the directory that holds ansible_collections/.
    sys.path.append(str(Path(__file__).absolute().parents[7]))

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source._ingest import (
    Refused,
    SavedState,
    parse_args,
    run_by_hand,
    serve,
)
from ansible_collections.selfheal.core.plugins.module_utils.catalog import (
    PolicyFileError,
    load_catalog,
    load_topology,
)
from ansible_collections.selfheal.core.plugins.module_utils.correlation import Correlator
from ansible_collections.selfheal.core.plugins.module_utils.signals import (
    SignalError,
    from_alertmanager,
    get_path,
    strip_port,
)

DOCUMENTATION = r"""
---
short_description: Receive alerts from Alertmanager; emit normalized signals or correlated incidents.
description:
  - An ansible-rulebook event source that receives Alertmanager webhook
    notifications (or those of a compatible system) over HTTP or HTTPS.
  - Without O(correlate), every alert becomes one event that carries the stock
    C(ansible.eda.alertmanager) fields C(alert) and C(meta.hosts), plus
    C(signal), the alert normalized to the selfheal.core Signal schema
    (source, fingerprint, status, name, severity, target, labels,
    annotations, starts_at, received_at, episode).
  - With O(correlate), alerts are deduplicated by fingerprint and grouped into
    incidents, one per root cause (see O(catalog) and O(topology)); the events
    are C(incident_opened) once, C(incident_updated) at a bounded rate,
    C(incident_resolved) when every signal has resolved, and
    C(incident_suppressed) when a root cause claims an announced incident.
    Each carries C(kind), C(incident) and C(signal) (the root signal).
  - The request is answered 202 as soon as the alerts are in a bounded buffer;
    Alertmanager never waits for playbooks. When the buffer is full the
    answer is 503 with Retry-After, so Alertmanager retries and nothing is
    dropped silently.
  - A malformed payload is refused whole with 400 and the reason, an oversize
    body gets 413, bad credentials 401. Request headers and secrets are never
    copied into events or logs.
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
  token:
    description:
      - Bearer token the sender must present in its C(Authorization) header,
        at least 16 characters; compared in constant time.
      - In Alertmanager, C(http_config.authorization.credentials) of the webhook receiver.
    type: str
  hmac_secret:
    description:
      - Secret of HMAC-SHA256 body signatures, at least 16 characters. When set, every request needs
        O(hmac_timestamp_header) (Unix time) and O(hmac_header) (C(sha256=) and the hex HMAC of the
        timestamp, a dot and the body).
    type: str
  hmac_header:
    description: Header that carries the signature.
    type: str
    default: X-Selfheal-Signature
  hmac_timestamp_header:
    description: Header that carries the signed Unix time.
    type: str
    default: X-Selfheal-Timestamp
  hmac_max_age:
    description: Seconds a signed request stays valid, against replays.
    type: int
    default: 300
  certfile:
    description: PEM certificate (chain) of the server; enables HTTPS.
    type: str
  keyfile:
    description: PEM private key of O(certfile).
    type: str
  cafile:
    description: PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).
    type: str
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
        before the per-alert events. Ignored with O(correlate).
    type: bool
    default: false
  max_body_bytes:
    description:
      - Largest request body accepted; larger ones get 413.
    type: int
    default: 1048576
  buffer_size:
    description:
      - Alerts held between the HTTP server and the rulebook. When a payload does not fit,
        the request gets 503 with Retry-After.
    type: int
    default: 10000
  correlate:
    description:
      - Emit incidents instead of one event per alert. Needs O(catalog).
    type: bool
    default: false
  catalog:
    description:
      - Catalog file (YAML) whose match rules give each incident its type.
    type: str
  topology:
    description:
      - Topology file (YAML) saying which services depend on which, so that
        symptoms of a failed dependency join the dependency's incident.
    type: str
  group_wait:
    description:
      - Seconds an incident of a service with dependencies waits before it is announced,
        so that a root cause alerting a little later can claim it.
    type: float
    default: 3.0
  update_interval:
    description:
      - Least seconds between two C(incident_updated) events of one incident.
    type: float
    default: 10.0
  state_path:
    description:
      - SQLite store where the correlator keeps its incidents, so that they
        survive a restart of the daemon. Without it, a restart forgets them.
    type: str
  alertmanager_url:
    description:
      - Base URL of the Alertmanager that sends here, for example V(http://127.0.0.1:9093).
        With O(state_path), the incidents restored at start are checked against its active
        alerts; a signal that ended while the daemon was down is resolved (its resolution
        notification was missed). An empty value or an unreachable Alertmanager skips the check,
        with a warning.
    type: str
"""

EXAMPLES = r"""
- name: Heal what Alertmanager reports, one incident per root cause
  hosts: all
  sources:
    - selfheal.core.alertmanager:
        host: 127.0.0.1
        port: 5000
        token: "{{ alertmanager_token }}"
        correlate: true
        catalog: /etc/selfheal/catalog.yml
        topology: /etc/selfheal/topology.yml
        state_path: /var/lib/selfheal/store.db
  rules:
    - name: Restart a service that is down
      condition: event.kind == "incident_opened" and event.incident.type == "service_down"
      action:
        run_playbook:
          name: selfheal.core.remediate_service_down
"""

PLUGIN = "selfheal.core.alertmanager"
logger = logging.getLogger(__name__)

_ARGS: dict[str, tuple[type, Any, bool]] = {
    "data_alerts_path": (str, "alerts", False),
    "data_host_path": (str, "labels.instance", False),
    "data_path_separator": (str, ".", False),
    "skip_original_data": (bool, False, False),
    "correlate": (bool, False, False),
    "catalog": (str, None, False),
    "topology": (str, None, False),
    "group_wait": (float, 3.0, False),
    "update_interval": (float, 10.0, False),
    "state_path": (str, None, False),
    "alertmanager_url": (str, None, False),
}
_MAX_ALERTS = 10000
_STATE_NAME = "alertmanager.correlator"
_SAVE_EVERY = 1.0


def _alerts(payload: Any, settings: dict[str, Any]) -> list[Any]:
    if not settings["data_alerts_path"]:
        return [payload]
    if not isinstance(payload, dict):
        raise Refused(400, f"payload must be a JSON object, got {type(payload).__name__}")
    try:
        alerts = get_path(payload, settings["data_alerts_path"], settings["data_path_separator"])
    except KeyError:
        raise Refused(400, f"payload has no {settings['data_alerts_path']!r}") from None
    alerts = alerts if isinstance(alerts, list) else [alerts]
    if len(alerts) > _MAX_ALERTS:
        raise Refused(413, f"{len(alerts)} alerts in one payload; at most {_MAX_ALERTS}")
    return alerts


def _events(payload: Any, endpoint: str, settings: dict[str, Any], received_at: float) -> list[dict[str, Any]]:
    """One payload to the stock-compatible events (original payload, then one per alert); Refused if bad."""
    alerts = _alerts(payload, settings)
    events: list[dict[str, Any]] = []
    if not settings["skip_original_data"] and not settings["correlate"]:
        events.append({"payload": payload, "meta": {"endpoint": endpoint}})
    for index, alert in enumerate(alerts):
        hosts: list[str] = []
        if settings["data_host_path"] and isinstance(alert, dict):
            try:
                found = get_path(alert, settings["data_host_path"], settings["data_path_separator"])
            except KeyError:
                found = None
            if isinstance(found, str) and found:
                hosts.append(strip_port(found))
        try:
            signal = from_alertmanager(alert, received_at, hosts[0] if hosts else None)
        except SignalError as exc:
            raise Refused(400, f"alert {index}: {exc}") from None
        events.append({"alert": alert, "signal": signal, "meta": {"endpoint": endpoint, "hosts": hosts}})
    return events


class _Pipeline:
    """What happens to an accepted alert: passed on as is, or correlated."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.correlator: Correlator | None = None
        self.state = SavedState(PLUGIN, None, _STATE_NAME)
        self.saved_at = 0.0
        self.dirty = False
        self.pending: list[dict[str, Any]] = []  # events due at the first tick
        if not settings["correlate"]:
            return
        if not settings["catalog"]:
            raise ValueError(f"{PLUGIN}: argument correlate needs argument catalog (the incident types)")
        try:
            catalog = load_catalog(settings["catalog"])
            topology = load_topology(settings["topology"]) if settings["topology"] else None
        except PolicyFileError as exc:
            raise ValueError(f"{PLUGIN}: {exc}") from None
        if settings["group_wait"] < 0 or settings["update_interval"] < 0:
            raise ValueError(f"{PLUGIN}: arguments group_wait and update_interval must be >= 0")
        self.correlator = Correlator(catalog, topology, group_wait=settings["group_wait"],
                                     update_interval=settings["update_interval"])
        self.state = SavedState(PLUGIN, settings["state_path"], _STATE_NAME)
        if self.state.restore(self.correlator.load_state):
            logger.info("%s: restored %d incidents from %s", PLUGIN, len(self.correlator.incidents),
                        settings["state_path"])
            if settings["alertmanager_url"]:
                self._reconcile(settings["alertmanager_url"])

    def _reconcile(self, url: str) -> None:
        """Resolve restored incidents whose alerts Alertmanager no longer has active."""
        assert self.correlator is not None
        active = _active_fingerprints(url)
        if active is None:
            return
        self.pending = self.correlator.reconcile(active, time.time())
        self.dirty = True
        logger.info("%s: %d restored incidents resolved while the daemon was down (checked with %s)", PLUGIN,
                    len(self.pending), f"{urlsplit(url).hostname}:{urlsplit(url).port}")

    def parse(self, payload: Any, endpoint: str, received_at: float) -> list[Any]:
        return _events(payload, endpoint, self.settings, received_at)

    def process(self, item: dict[str, Any], now: float) -> list[dict[str, Any]]:
        signal = item.get("signal")
        if self.correlator is None:
            if signal is not None:
                item = {**item, "signal": signal.to_dict()}
            return [item]
        self.dirty = True
        return self.correlator.ingest(signal, now) if signal is not None else []

    def tick(self, now: float) -> list[dict[str, Any]]:
        if self.correlator is None:
            return []
        events, self.pending = self.pending + self.correlator.tick(now), []
        if events:
            self.dirty = True
        if self.dirty and now - self.saved_at >= _SAVE_EVERY:
            self.save()
        return events

    def save(self) -> None:
        if self.correlator is None or not self.dirty:
            return
        if self.state.save(self.correlator.to_state()):
            self.dirty = False
            self.saved_at = time.time()


def _active_fingerprints(url: str, timeout: float = 5.0) -> set[str] | None:
    """Fingerprints of the alerts Alertmanager has active (silenced and inhibited ones too); None if unknown."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        logger.warning("%s: alertmanager_url must be http(s)://host:port; restored incidents not checked", PLUGIN)
        return None
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/api/v2/alerts?active=true&silenced=true&inhibited=true",
                     headers={"Accept": "application/json"})
        resp = conn.getresponse()
        body = resp.read(16 * 1024 * 1024)
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        alerts = json.loads(body)
        return {a["fingerprint"] for a in alerts if isinstance(a, dict) and isinstance(a.get("fingerprint"), str)}
    except (OSError, http.client.HTTPException, ValueError, TypeError) as exc:
        logger.warning("%s: cannot list active alerts at %s:%s (%s); restored incidents are kept as they were",
                       PLUGIN, parts.hostname, parts.port, exc)
        return None
    finally:
        conn.close()


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Serve the webhook until cancelled."""
    settings = parse_args(PLUGIN, args, _ARGS)
    if not settings["data_path_separator"]:
        raise ValueError(f"{PLUGIN}: argument data_path_separator must not be empty")
    pipeline = _Pipeline(settings)
    try:
        # serve() calls on_idle when idle and once more when it stops: the last save
        await serve(PLUGIN, queue, settings, pipeline.parse, pipeline.process, pipeline.tick,
                    on_idle=pipeline.save)
    finally:
        pipeline.state.close()


if __name__ == "__main__":
    run_by_hand(main)
