# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receive Alertmanager webhooks; emit normalized signals, or incidents when correlating."""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import sys
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
    Inbound,
    Pager,
    Pipeline,
    Refused,
    SavedState,
    parse_args,
    run_by_hand,
    run_states,
    serve,
)
from ansible_collections.selfheal.core.plugins.module_utils.catalog import (
    PolicyFileError,
    check_roles,
    load_catalog,
    load_topology,
)
from ansible_collections.selfheal.core.plugins.module_utils.correlation import Correlator
from ansible_collections.selfheal.core.plugins.module_utils.signals import (
    Signal,
    SignalError,
    from_alertmanager,
    get_path,
    strip_port,
)
from ansible_collections.selfheal.core.plugins.module_utils.store import Store
from ansible_collections.selfheal.core.plugins.module_utils.watchdog import DEFAULT_DEADLINE, RunState, Watchdog

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
  - Accepted means kept. The request is answered 202 only once its alerts are
    committed to the source's intake (an SQLite file beside O(state_path), or
    O(intake_path)); Alertmanager never waits for playbooks, and not even a
    killed daemon loses an alert it answered 202. A stop checkpoints and
    returns at once; what was not yet processed is processed at the next start.
  - More than O(buffer_size) alerts accepted and not yet processed (a sustained
    overload, not a burst), or an intake that cannot be written, is answered
    503 with Retry-After, so Alertmanager retries and nothing is dropped.
  - A body that is not JSON (C(Content-Type) must be C(application/json),
    or 415), not standard JSON (NaN, Infinity), or not of Alertmanager's
    shape is refused whole with 400 and the reason; an oversize body gets 413,
    bad credentials 401. Nothing refused reaches the rulebook.
  - Odd but valid alerts are accepted - label and annotation values longer
    than 4096 characters are truncated with a marker that keeps their length,
    an alert without C(alertname) is emitted (correlated, it is unclassified),
    any Unicode text is kept.
  - Events carry C(meta.headers), the request's harmless headers (an
    allow-list; never C(Authorization), cookies, signatures or tokens).
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
      - With no O(token), O(hmac_secret) or O(cafile), the source listens on loopback only, and refuses
        to start on any other O(host).
      - In Alertmanager, C(http_config.authorization.credentials) of the webhook receiver.
    type: str
  hmac_secret:
    description:
      - Secret of HMAC-SHA256 body signatures, at least 16 characters. When set, every request needs
        O(hmac_timestamp_header) (Unix time) and O(hmac_header) (C(sha256=) and the hex HMAC of the
        timestamp, a dot and the body).
    type: str
  hmac_scheme:
    description:
      - V(selfheal) - the signature covers a timestamp, a dot and the body, so a captured request
        cannot be replayed (O(hmac_timestamp_header), O(hmac_max_age)).
      - V(eda) - the convention of C(ansible.eda.webhook) (GitHub style) - an HMAC of the body alone in
        O(hmac_header), hex or base64 (O(hmac_format)), optionally prefixed with C(sha256=). No replay
        protection.
    type: str
    default: selfheal
  hmac_header:
    description:
      - Header that carries the signature. Defaults to C(X-Selfheal-Signature) for the V(selfheal) scheme
        and C(X-Hub-Signature-256) for V(eda).
    type: str
  hmac_timestamp_header:
    description: Header that carries the signed Unix time (V(selfheal) scheme).
    type: str
    default: X-Selfheal-Timestamp
  hmac_max_age:
    description: Seconds a signed request stays valid, against replays (V(selfheal) scheme).
    type: int
    default: 300
  hmac_algo:
    description: Hash of the V(eda) scheme's HMAC.
    type: str
    default: sha256
  hmac_format:
    description: Encoding of the V(eda) scheme's signature, V(hex) or V(base64).
    type: str
    default: hex
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
      - Alerts accepted and not yet processed, past which a request gets 503 with Retry-After
        (a sustained overload).
    type: int
    default: 100000
  intake_path:
    description:
      - SQLite file of the intake, where accepted alerts are kept until they are processed and
        checkpointed. Defaults to a file beside O(state_path)
        (C(<state_path without extension>.alertmanager-intake.db)).
      - Without either, the intake is in memory and a restart loses what was not yet handed on (a warning says so).
    type: str
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
      - SQLite store where the correlator keeps its incidents, the intake offset it has consumed and
        the events not yet handed to the rulebook, so that they survive a restart of the daemon.
        Without it, a restart forgets them.
    type: str
  store:
    description:
      - The store the remediation playbooks record their decisions and outcomes in (C(selfheal_store)),
        read by the watchdog. Defaults to O(state_path).
    type: str
  notify_url:
    description:
      - Where the watchdog pages a human (the receiver of M(selfheal.core.notify)), straight from the
        daemon, without a playbook or the store. With O(correlate), every opened incident is watched until
        it is verified healthy, resolved by itself or paged - an incident no automation handles (never
        automated, observe mode, an inferred cascade, no playbook) is paged at once; one with no live
        run and no outcome past its deadline (the catalog's C(escalation.deadline), default 300 seconds)
        is resumed once (an C(incident_resumed) event), then paged; a store that cannot be read is paged
        as the cause. Each incident is paged at most once, across restarts.
    type: str
  notify_format:
    description: Shape of the watchdog's pages - V(generic), V(slack) or V(pagerduty).
    type: str
    default: generic
  notify_token:
    description: Bearer token for O(notify_url), for receivers that want one.
    type: str
  notify_routing_key:
    description: PagerDuty integration key, with O(notify_format=pagerduty).
    type: str
  notify_fallback_url:
    description: Where a page goes when O(notify_url) does not take it after its retries.
    type: str
  watchdog_interval:
    description: Seconds between two looks of the watchdog at the open incidents.
    type: float
    default: 5.0
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
    "alertmanager_url": (str, None, False),
    "store": (str, None, False),
    "notify_url": (str, None, True),
    "notify_format": (str, "generic", False),
    "notify_token": (str, None, True),
    "notify_routing_key": (str, None, True),
    "notify_fallback_url": (str, None, True),
    "watchdog_interval": (float, 5.0, False),
}
_MAX_ALERTS = 10000
_STATE_NAME = "alertmanager.correlator"


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


def _events(payload: Any, request: Inbound, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One payload to the stock-compatible events (original payload, then one per alert); Refused if bad."""
    alerts = _alerts(payload, settings)
    meta = {"endpoint": request.endpoint, "headers": request.headers}
    events: list[dict[str, Any]] = []
    if not settings["skip_original_data"] and not settings["correlate"]:
        events.append({"payload": payload, "meta": meta})
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
            signal = from_alertmanager(alert, request.received_at, hosts[0] if hosts else None)
        except SignalError as exc:
            raise Refused(400, f"alert {index}: {exc}") from None
        # the alert as normalized (long values truncated): what the rulebook and the record see
        alert = {**alert, "labels": signal.labels, "annotations": signal.annotations}
        events.append({"alert": alert, "signal": signal.to_dict(), "meta": {**meta, "hosts": hosts}})
    return events


class _Pipeline(Pipeline):
    """What happens to an accepted alert: passed on as is, or correlated and watched."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.correlator: Correlator | None = None
        if not settings["correlate"]:
            return
        if not settings["catalog"]:
            raise ValueError(f"{PLUGIN}: argument correlate needs argument catalog (the incident types)")
        try:
            self.catalog = load_catalog(settings["catalog"])
            check_roles(self.catalog, collection_roots())
            topology = load_topology(settings["topology"]) if settings["topology"] else None
        except PolicyFileError as exc:
            raise ValueError(f"{PLUGIN}: {exc}") from None
        if settings["group_wait"] < 0 or settings["update_interval"] < 0:
            raise ValueError(f"{PLUGIN}: arguments group_wait and update_interval must be >= 0")
        self.correlator = Correlator(self.catalog, topology, group_wait=settings["group_wait"],
                                     update_interval=settings["update_interval"])
        self.state_name = _STATE_NAME
        self.watchdog = Watchdog()
        self.pager = Pager(PLUGIN, settings)
        self.watched_at = 0.0

    def load_state(self, state: dict[str, Any]) -> None:
        assert self.correlator is not None
        correlator = state.get("correlator", state)  # a state saved before the watchdog is the correlator's
        self.correlator.load_state(correlator)
        self.watchdog.load_state(state.get("watchdog", []))
        for watch in self.watchdog.watches.values():  # paged, and not known to have reached the receiver
            if watch.paged and not watch.delivered:
                self.pager.send(watch, "the page of an earlier start may not have been delivered")
        logger.info("%s: restored %d incidents (%d watched) from %s", PLUGIN, len(self.correlator.incidents),
                    len(self.watchdog.pending()), self.settings["state_path"])

    def to_state(self) -> dict[str, Any]:
        if self.correlator is None:
            return {}
        return {"correlator": self.correlator.to_state(), "watchdog": self.watchdog.to_state()}

    def restored(self, now: float) -> list[dict[str, Any]]:
        """Resolve restored incidents whose alerts Alertmanager no longer has active."""
        url = self.settings["alertmanager_url"]
        if self.correlator is None or not url or not self.correlator.incidents:
            return []
        active = _active_fingerprints(url)
        if active is None:
            return []
        events = self._watch(self.correlator.reconcile(active, now), now)
        logger.info("%s: %d restored incidents resolved while the daemon was down (checked with %s)", PLUGIN,
                    len(events), f"{urlsplit(url).hostname}:{urlsplit(url).port}")
        return events

    def parse(self, payload: Any, request: Inbound) -> list[Any]:
        return _events(payload, request, self.settings)

    def process(self, item: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if self.correlator is None:
            return [item]
        signal = item.get("signal")
        return self._watch(self.correlator.ingest(Signal.from_dict(signal), now), now) if signal is not None else []

    def lookup(self, now: float) -> Any:
        """What the store says of the watched incidents, when the watchdog's next look is due."""
        if self.correlator is None or now - self.watched_at < self.settings["watchdog_interval"]:
            return None
        return run_states(self.settings["store"] or self.settings["state_path"], self.watchdog.pending(), now)

    def tick(self, now: float, looked: Any = None) -> list[dict[str, Any]]:
        if self.correlator is None:
            return []
        events = self._watch(self.correlator.tick(now), now)
        if looked is not None:
            self.watched_at = now
            events += self._look(now, looked)
        return events

    def gauges(self) -> dict[str, float]:
        if self.correlator is None:
            return {}
        return {"incidents_open": len(self.correlator.open_incidents()),
                "watchdog_watched": len(self.watchdog.pending()),
                "watchdog_last_look_timestamp_seconds": self.watched_at}

    def _watch(self, events: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Tell the watchdog what the correlator announced and ended."""
        for event in events:
            incident = event["incident"]
            if event["kind"] == "incident_opened":
                itype = self.catalog.get(incident["type"])
                self.watchdog.open(incident, itype.deadline if itype else DEFAULT_DEADLINE, now)
            elif event["kind"] in ("incident_resolved", "incident_suppressed"):
                self.watchdog.close(incident["id"], now)
        return events

    def _look(self, now: float, states: dict[str, RunState]) -> list[dict[str, Any]]:
        """One round of the watchdog: resume, page or resolve what is due (see module_utils/watchdog.py)."""
        assert self.correlator is not None
        events: list[dict[str, Any]] = []
        for action in self.watchdog.tick(now, states):
            incident = self.correlator.incidents.get(action.incident_id)
            summary = incident.summary() if incident is not None else {"id": action.incident_id}
            if action.kind == "resolve":
                self.pager.resolve(self.watchdog.watches[action.incident_id], action.why)
                continue
            if action.kind == "resume" and incident is not None:
                logger.warning("%s: %s: %s", PLUGIN, action.incident_id, action.why)
                events.append({"kind": "incident_resumed", "incident": summary, "signal": incident.root_signal or {},
                               "why": action.why, "at": now})
            else:
                self.pager.send(self.watchdog.watches[action.incident_id], action.why, summary)
                events.append({"kind": "incident_escalated", "incident": summary,
                               "signal": (incident.root_signal if incident else None) or {}, "why": action.why,
                               "at": now})
        self.watchdog.forget(set(self.correlator.incidents))
        return events


def collection_roots() -> list[str]:
    """Where the daemon's playbooks find collections: ANSIBLE_COLLECTIONS_PATH (or Ansible's defaults),
    and the one this plugin is installed in."""
    here = os.path.abspath(__file__).split(os.sep + "ansible_collections" + os.sep)[0]
    paths = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.environ.get("ANSIBLE_COLLECTIONS_PATHS") or ""
    default = [os.path.expanduser("~/.ansible/collections"), "/usr/share/ansible/collections"]
    return list(dict.fromkeys([*(p for p in paths.split(os.pathsep) if p), *default, here]))


def saved_state(store: Store) -> dict[str, Any]:
    """What the correlating source saved in `store`: {"correlator": {...}, "watchdog": [...]} (for reports,
    benchmarks and tests; empty when nothing was saved)."""
    state = SavedState.read(store, _STATE_NAME) or {}
    return state if "correlator" in state else {"correlator": state, "watchdog": []}


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
    """Serve the webhook until cancelled; then return, as the stock source does."""
    settings = parse_args(PLUGIN, args, _ARGS)
    if not settings["data_path_separator"]:
        raise ValueError(f"{PLUGIN}: argument data_path_separator must not be empty")
    await serve(PLUGIN, queue, settings, _Pipeline(settings))


if __name__ == "__main__":
    run_by_hand(main)
