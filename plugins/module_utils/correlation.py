# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Correlation: turn a stream of Signals into Incidents, one per root cause.

The rules, in the order they apply to a firing signal:

1. Dedupe: a fingerprint already known with the same status changes nothing.
2. Symptom of an open root: if the signal's service depends (directly or
   not, per the topology) on the root service of an open incident, or runs
   on a host whose own incident is open, it joins that incident.
3. Same target: a signal for the target of an open incident joins it.
4. Otherwise it opens a new incident for its own target. An incident whose
   service has upstream dependencies waits ``group_wait`` seconds before it
   is announced, so a root cause that alerts a little later can claim it.
   When ``cascade_threshold`` or more such waiting incidents share the same
   top upstream service and no incident is open for it, they become one
   ``unknown_cascade`` incident for that service, inferred, never automated.

A new root incident claims waiting or open incidents of services that depend
on it (they become ``suppressed``, their signals move to the root). An
incident is resolved when all its signals are. Events: ``incident_opened``
once, ``incident_updated`` at most every ``update_interval`` seconds,
``incident_resolved`` once, ``incident_suppressed`` when an announced
incident is claimed by its root. Memory is bounded: resolved and suppressed
incidents are forgotten after ``resolved_ttl`` seconds, and the number of
incidents is capped at ``max_incidents`` (oldest finished ones first).

Time is always passed in (``now``): the correlator is deterministic, which
is what its property tests rely on.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.catalog import Catalog, IncidentType, Topology
from ansible_collections.selfheal.core.plugins.module_utils.signals import Signal

logger = logging.getLogger(__name__)

CASCADE_TYPE = "unknown_cascade"
UNCLASSIFIED_TYPE = "unclassified"
OPEN_STATES = ("pending", "open")
_SEVERITY_RANK = {"critical": 4, "error": 3, "warning": 2, "info": 1}
_EVENT_SYMPTOMS = 25
_EVENT_TARGETS = 1000


@dataclass
class Incident:
    id: str
    type: str
    state: str
    root: dict[str, Any]
    root_key: str
    root_service: str | None
    root_host: str | None
    inferred: bool
    mode: str
    playbook: str | None
    never_automate: bool
    root_signal: dict[str, Any] | None
    first_seen: float
    due: float
    signals: dict[str, str] = field(default_factory=dict)  # fingerprint -> firing | resolved
    starts: dict[str, str | None] = field(default_factory=dict)  # fingerprint -> starts_at of its episode
    symptoms: dict[str, int] = field(default_factory=dict)  # target name -> signals
    severity: str = "none"
    duplicates: int = 0
    opened_at: float | None = None
    updated_at: float | None = None
    resolved_at: float | None = None
    finished_at: float | None = None
    dirty: bool = False
    merged_into: str | None = None
    # a group-scoped incident (one per service of a fleet): its hosts, each with how many signals
    targets: dict[str, int] = field(default_factory=dict)

    @property
    def announced(self) -> bool:
        return self.opened_at is not None

    def summary(self) -> dict[str, Any]:
        """What an incident event carries (bounded, whatever the size of the storm)."""
        firing = sum(1 for s in self.signals.values() if s == "firing")
        symptoms = sorted(self.symptoms, key=lambda k: (-self.symptoms[k], k))
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state,
            "mode": self.mode,
            "playbook": self.playbook,
            "never_automate": self.never_automate,
            "root": self.root,
            "inferred_root": self.inferred,
            "severity": self.severity,
            "signal_count": len(self.signals),
            "firing_count": firing,
            "duplicates": self.duplicates,
            "symptom_count": len(self.symptoms),
            "symptoms": symptoms[:_EVENT_SYMPTOMS],
            # the hosts a group-scoped incident covers (the guard batches them); empty: its root's host
            "targets": sorted(self.targets)[:_EVENT_TARGETS],
            "first_seen": self.first_seen,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
            "resolved_at": self.resolved_at,
            "merged_into": self.merged_into,
        }


@dataclass
class Stats:
    signals: int = 0
    duplicates: int = 0
    stale_resolved: int = 0
    missed_resolutions: int = 0
    evicted: int = 0


class Correlator:
    def __init__(self, catalog: Catalog | None = None, topology: Topology | None = None, *,
                 group_wait: float = 3.0, update_interval: float = 10.0, window: float = 3600.0,
                 cascade_threshold: int = 3, resolved_ttl: float = 3600.0, max_incidents: int = 10000) -> None:
        if group_wait < 0 or update_interval < 0 or window <= 0 or resolved_ttl < 0:
            raise ValueError("group_wait, update_interval and resolved_ttl must be >= 0, window > 0")
        if cascade_threshold < 2 or max_incidents < 1:
            raise ValueError("cascade_threshold must be >= 2 and max_incidents >= 1")
        self.catalog = catalog
        self.topology = topology or Topology()
        self.group_wait = group_wait
        self.update_interval = update_interval
        self.window = window
        self.cascade_threshold = cascade_threshold
        self.resolved_ttl = resolved_ttl
        self.max_incidents = max_incidents
        self.incidents: dict[str, Incident] = {}
        self.by_fingerprint: dict[str, str] = {}
        self.stats = Stats()
        self._serial = 0

    # ------------------------------------------------------------------ ingest

    def ingest(self, signal: Signal, now: float) -> list[dict[str, Any]]:
        """Account one signal; return the events it causes (often none)."""
        self.stats.signals += 1
        events: list[dict[str, Any]] = []
        known = self.incidents.get(self.by_fingerprint.get(signal.fingerprint, ""))
        if known is not None and known.state not in OPEN_STATES:
            if signal.status == "resolved" or known.starts.get(signal.fingerprint) == signal.starts_at:
                # a re-sent resolved, or a late retry of the firing notification of the same episode
                known.duplicates += 1
                self.stats.duplicates += 1
                return events
            self._forget(signal.fingerprint)  # the same alert firing again: a new episode
            known = None
        if known is not None and self._new_episode(known, signal):
            # The alert fires again while its last episode is still firing here: that episode's
            # resolution was missed (the daemon was down, or Alertmanager lost it). It is over.
            self.stats.missed_resolutions += 1
            known.signals[signal.fingerprint] = "resolved"
            if all(s == "resolved" for s in known.signals.values()):
                events.extend(self._resolve(known, now))
            self._forget(signal.fingerprint)
            known = None
        if known is not None:
            if known.signals.get(signal.fingerprint) == signal.status:
                known.duplicates += 1
                self.stats.duplicates += 1
                return events
            known.signals[signal.fingerprint] = signal.status
            if signal.status == "resolved" and all(s == "resolved" for s in known.signals.values()):
                return self._resolve(known, now)
            known.dirty = known.announced
            return events
        if signal.status == "resolved":
            self.stats.stale_resolved += 1  # resolved before we ever saw it fire: nothing to close
            return events
        itype = self.catalog.classify(signal) if self.catalog else None
        home = self._home_for(signal, now, itype)
        if home is not None:
            self._attach(home, signal)
            home.dirty = home.announced
            return events
        incident = self._open_new(signal, now, itype)
        events.extend(self._claim_dependents(incident, now))
        if incident.due <= now:
            events.append(self._announce(incident, now))
        return events

    @staticmethod
    def _new_episode(known: Incident, signal: Signal) -> bool:
        previous = known.starts.get(signal.fingerprint)
        return (signal.status == "firing" and known.signals.get(signal.fingerprint) == "firing"
                and previous is not None and signal.starts_at is not None and previous != signal.starts_at)

    def _home_for(self, signal: Signal, now: float, itype: IncidentType | None) -> Incident | None:
        service, host = signal.target.service, signal.target.host
        upstream = set(self.topology.upstream(service))
        key = _key(signal, itype)
        best: Incident | None = None
        for inc in self.incidents.values():
            if inc.state not in OPEN_STATES or now - inc.first_seen > self.window:
                continue
            if inc.root_key == key:
                if key.startswith("group:") and inc.announced:
                    continue  # its run has its hosts: one that alerts later is the next group's
                return inc
            is_root_of_it = (inc.root_service in upstream) or (
                inc.root.get("kind") == "host" and host is not None and inc.root_host == host)
            if is_root_of_it and (best is None or best.first_seen > inc.first_seen):
                best = inc
        return best

    def _attach(self, incident: Incident, signal: Signal) -> None:
        incident.signals[signal.fingerprint] = signal.status
        incident.starts[signal.fingerprint] = signal.starts_at
        self.by_fingerprint[signal.fingerprint] = incident.id
        group = incident.root_key.startswith("group:")
        if group and signal.target.host:
            incident.targets[signal.target.host] = incident.targets.get(signal.target.host, 0) + 1
        if not group and _target_key(signal) != incident.root_key:
            name = signal.target.name
            incident.symptoms[name] = incident.symptoms.get(name, 0) + 1
        if _SEVERITY_RANK.get(signal.severity, 0) > _SEVERITY_RANK.get(incident.severity, 0):
            incident.severity = signal.severity

    def _open_new(self, signal: Signal, now: float, itype: IncidentType | None) -> Incident:
        key = _key(signal, itype)
        # a group waits for the rest of its hosts, as a service with dependencies waits for its root cause
        waits = bool(self.topology.upstream(signal.target.service)) or key.startswith("group:")
        incident = Incident(
            id=self._new_id(itype.name if itype else UNCLASSIFIED_TYPE, key, now),
            type=itype.name if itype else UNCLASSIFIED_TYPE,
            state="pending",
            root=asdict(signal.target),
            root_key=key,
            root_service=signal.target.service,
            root_host=signal.target.host,
            inferred=False,
            mode=itype.mode if itype else "observe",
            playbook=itype.playbook if itype else None,
            never_automate=itype.never_automate if itype else False,
            root_signal=signal.to_dict(),
            first_seen=now,
            due=now + self.group_wait if waits else now,
        )
        self.incidents[incident.id] = incident
        self._attach(incident, signal)
        return incident

    def _claim_dependents(self, root: Incident, now: float) -> list[dict[str, Any]]:
        """Incidents of services that depend on `root` become its symptoms."""
        events: list[dict[str, Any]] = []
        if not root.root_service and root.root.get("kind") != "host":
            return events
        for other in list(self.incidents.values()):
            if other is root or other.state not in OPEN_STATES:
                continue
            depends = root.root_service is not None and root.root_service in self.topology.upstream(
                other.root_service)
            same_service_cascade = other.inferred and other.root_service == root.root_service
            on_down_host = root.root.get("kind") == "host" and other.root_host == root.root_host
            if depends or same_service_cascade or on_down_host:
                events.extend(self._merge(other, root, now))
        return events

    def _merge(self, child: Incident, root: Incident, now: float) -> list[dict[str, Any]]:
        for fp, status in child.signals.items():
            root.signals[fp] = status
            root.starts[fp] = child.starts.get(fp)
            self.by_fingerprint[fp] = root.id
        if not child.inferred:
            name = child.root.get("name", child.root_key)
            root.symptoms[name] = root.symptoms.get(name, 0) + len(child.signals)
        for name, count in child.symptoms.items():
            root.symptoms[name] = root.symptoms.get(name, 0) + count
        root.duplicates += child.duplicates
        if _SEVERITY_RANK.get(child.severity, 0) > _SEVERITY_RANK.get(root.severity, 0):
            root.severity = child.severity
        root.dirty = root.announced
        announced = child.announced
        child.state, child.merged_into, child.finished_at = "suppressed", root.id, now
        child.signals, child.starts = {}, {}
        return [self._event("incident_suppressed", child, now)] if announced else []

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Announce incidents whose wait is over, emit due updates, forget old ones."""
        events: list[dict[str, Any]] = []
        due = [i for i in self.incidents.values() if i.state == "pending" and i.due <= now]
        groups: dict[str, list[Incident]] = {}
        for inc in due:
            top = self.topology.top(inc.root_service)
            if top is not None:
                groups.setdefault(top, []).append(inc)
        for top, members in groups.items():
            if len(members) >= self.cascade_threshold:
                cascade = self._cascade(top, members, now)
                events.append(self._announce(cascade, now))
        for inc in due:
            if inc.state == "pending":
                events.append(self._announce(inc, now))
        for inc in self.incidents.values():
            if inc.state == "open" and inc.dirty and now - (inc.updated_at or 0) >= self.update_interval:
                inc.dirty = False
                inc.updated_at = now
                events.append(self._event("incident_updated", inc, now))
        self._evict(now)
        return events

    def _cascade(self, top: str, members: list[Incident], now: float) -> Incident:
        cascade = Incident(
            id=self._new_id(CASCADE_TYPE, f"service:{top}", now),
            type=CASCADE_TYPE, state="pending",
            root={"kind": "service", "name": top, "host": None, "namespace": None, "service": top},
            root_key=f"service:{top}", root_service=top, root_host=None, inferred=True,
            mode="observe", playbook=None, never_automate=True, root_signal=None,
            first_seen=min(m.first_seen for m in members), due=now,
        )
        self.incidents[cascade.id] = cascade
        for member in members:
            self._merge(member, cascade, now)
        return cascade

    def _announce(self, incident: Incident, now: float) -> dict[str, Any]:
        incident.state = "open"
        incident.opened_at = incident.updated_at = now
        incident.dirty = False
        return self._event("incident_opened", incident, now)

    def _resolve(self, incident: Incident, now: float) -> list[dict[str, Any]]:
        announced = incident.announced
        incident.state = "resolved"
        incident.resolved_at = incident.finished_at = now
        incident.dirty = False
        return [self._event("incident_resolved", incident, now)] if announced else []

    def _event(self, kind: str, incident: Incident, now: float) -> dict[str, Any]:
        return {"kind": kind, "incident": incident.summary(), "signal": incident.root_signal or {}, "at": now}

    def _forget(self, fingerprint: str) -> None:
        inc = self.incidents.get(self.by_fingerprint.pop(fingerprint, ""))
        if inc is not None:
            inc.signals.pop(fingerprint, None)
            inc.starts.pop(fingerprint, None)

    def _evict(self, now: float) -> None:
        finished = [i for i in self.incidents.values()
                    if i.state not in OPEN_STATES and now - (i.finished_at or now) >= self.resolved_ttl]
        for inc in finished:
            self._drop(inc)
        if len(self.incidents) > self.max_incidents:
            order = sorted(self.incidents.values(),
                           key=lambda i: (i.state in OPEN_STATES, i.finished_at or i.first_seen))
            for inc in order[: len(self.incidents) - self.max_incidents]:
                if inc.state in OPEN_STATES:
                    logger.warning("correlator full (%d incidents): forgetting open incident %s",
                                   self.max_incidents, inc.id)
                self._drop(inc)

    def _drop(self, incident: Incident) -> None:
        for fp in incident.signals:
            if self.by_fingerprint.get(fp) == incident.id:
                del self.by_fingerprint[fp]
        del self.incidents[incident.id]
        self.stats.evicted += 1

    def _new_id(self, itype: str, key: str, now: float) -> str:
        self._serial += 1
        digest = hashlib.sha256(f"{key}|{now}|{self._serial}".encode()).hexdigest()[:10]
        return f"{itype}-{digest}"

    # ------------------------------------------------------------------ state

    def reconcile(self, active: set[str], now: float) -> list[dict[str, Any]]:
        """Resolve what is no longer firing: `active` holds the fingerprints Alertmanager has active now.

        After a restart, an incident restored from the store may have missed its resolution while the
        daemon was down; Alertmanager's own list of active alerts says which signals have ended.
        """
        events: list[dict[str, Any]] = []
        for incident in self.open_incidents():
            gone = [fp for fp, status in incident.signals.items() if status == "firing" and fp not in active]
            if not gone:
                continue
            for fp in gone:
                incident.signals[fp] = "resolved"
            self.stats.missed_resolutions += len(gone)
            if all(status == "resolved" for status in incident.signals.values()):
                events.extend(self._resolve(incident, now))
            else:
                incident.dirty = incident.announced
            for fp in gone:  # if it fires after all (a peer that had not synced), it is news, not a duplicate
                self._forget(fp)
        return events

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.state in OPEN_STATES]

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "serial": self._serial,
                "incidents": [asdict(i) for i in self.incidents.values()]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what to_state() saved (after a restart); unknown versions are refused."""
        if state.get("version") != 1:
            raise ValueError(f"unsupported correlator state version {state.get('version')!r}")
        self.incidents = {}
        self.by_fingerprint = {}
        for data in state.get("incidents", []):
            inc = Incident(**data)
            self.incidents[inc.id] = inc
            for fp in inc.signals:
                self.by_fingerprint[fp] = inc.id
        self._serial = int(state.get("serial", 0))


def _target_key(signal: Signal) -> str:
    return f"{signal.target.kind}:{signal.target.name}"


def _key(signal: Signal, itype: IncidentType | None) -> str:
    """What one incident is about: its target, or for a group-scoped type its service across the fleet."""
    if itype is not None and itype.scope == "group":
        return f"group:{itype.name}:{signal.target.service or signal.name}"
    return _target_key(signal)
