from __future__ import annotations

from typing import Any, TypeAlias

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.catalog import parse_catalog, parse_topology
from ansible_collections.selfheal.core.plugins.module_utils.correlation import CASCADE_TYPE, Correlator
from ansible_collections.selfheal.core.plugins.module_utils.signals import Signal, from_alertmanager

CATALOG = parse_catalog({"incident_types": [
    {"name": "database_down", "match": [{"labels": {"alertname": "PostgresDown"}}],
     "playbook": "selfheal.core.remediate_service_down", "mode": "auto"},
    {"name": "service_down", "match": [{"labels": {"alertname": "ServiceDown"}}],
     "playbook": "selfheal.core.remediate_service_down", "mode": "auto"},
    {"name": "host_down", "match": [{"labels": {"alertname": "HostDown"}}], "mode": "observe"},
]})
TOPOLOGY = parse_topology({"services": {
    "postgres": {"hosts": ["db1"]},
    "api": {"depends_on": ["postgres"]},
    "web": {"depends_on": ["api"]},
    "demo": {},
}})


def sig(name: str, host: str, service: str | None, status: str = "firing", fp: str | None = None,
        severity: str = "critical", starts: str = "2026-11-23T10:00:00Z") -> Signal:
    labels = {"alertname": name, "host": host, "severity": severity}
    if service:
        labels["service"] = service
    return from_alertmanager({"labels": labels, "status": status, "startsAt": starts,
                              "fingerprint": fp or f"{name}-{host}-{service}"}, received_at=0.0)


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["kind"], e["incident"]["type"]) for e in events]


def make(**kw: Any) -> Correlator:
    return Correlator(CATALOG, TOPOLOGY, **{"group_wait": 3.0, "update_interval": 10.0, **kw})


def test_root_without_dependencies_opens_at_once() -> None:
    c = make()
    events = c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    assert kinds(events) == [("incident_opened", "database_down")]
    inc = events[0]["incident"]
    assert inc["root"]["name"] == "postgres@db1" and inc["mode"] == "auto" and inc["signal_count"] == 1
    assert events[0]["signal"]["name"] == "PostgresDown"


def test_duplicates_change_nothing() -> None:
    c = make()
    c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    before = c.to_state()
    for t in range(1, 20):
        assert c.ingest(sig("PostgresDown", "db1", "postgres"), now=t) == []
        assert c.tick(now=t) == []
    after = c.to_state()
    assert [i["signals"] for i in after["incidents"]] == [i["signals"] for i in before["incidents"]]
    assert c.stats.duplicates == 19


def test_storm_of_symptoms_behind_a_root_is_one_incident() -> None:
    c = make()
    events = c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    for i in range(500):
        for alert in ("ApiErrors", "ApiLatency"):
            events += c.ingest(sig(alert, f"h{i}", "api"), now=0.5)
        events += c.ingest(sig("WebErrors", f"h{i}", "web"), now=0.6)
    events += c.tick(now=11)
    assert kinds(events) == [("incident_opened", "database_down"), ("incident_updated", "database_down")]
    [inc] = c.open_incidents()
    assert len(inc.signals) == 1501 and len(inc.symptoms) == 1000
    assert events[-1]["incident"]["symptom_count"] == 1000
    assert len(events[-1]["incident"]["symptoms"]) == 25


def test_symptoms_before_the_root_are_claimed_by_it() -> None:
    c = make()
    events = []
    for i in range(5):
        events += c.ingest(sig("ApiErrors", f"h{i}", "api"), now=0)
    assert events == [] and len(c.open_incidents()) == 5  # waiting for a root
    events += c.ingest(sig("PostgresDown", "db1", "postgres"), now=1)
    events += c.tick(now=5)
    assert kinds(events) == [("incident_opened", "database_down")]
    [inc] = c.open_incidents()
    assert len(inc.signals) == 6


def test_symptoms_without_a_root_alert_become_one_unknown_cascade() -> None:
    c = make()
    for i in range(10):
        assert c.ingest(sig("ApiErrors", f"h{i}", "api"), now=0) == []
    events = c.tick(now=3)
    assert kinds(events) == [("incident_opened", CASCADE_TYPE)]
    inc = events[0]["incident"]
    assert inc["root"]["service"] == "postgres" and inc["inferred_root"] is True
    assert inc["never_automate"] is True and inc["mode"] == "observe" and inc["signal_count"] == 10
    # More symptoms join it; the real root alert, arriving late, claims it.
    c.ingest(sig("WebErrors", "h1", "web"), now=4)
    late = c.ingest(sig("PostgresDown", "db1", "postgres"), now=5)
    assert kinds(late) == [("incident_suppressed", CASCADE_TYPE), ("incident_opened", "database_down")]
    [root] = c.open_incidents()
    assert len(root.signals) == 12


def test_a_single_symptom_without_root_opens_its_own_incident_after_the_wait() -> None:
    c = make()
    assert c.ingest(sig("ServiceDown", "h1", "api"), now=0) == []
    assert c.tick(now=2.9) == []
    assert kinds(c.tick(now=3)) == [("incident_opened", "service_down")]


def test_services_on_a_down_host_are_its_symptoms() -> None:
    c = make()
    assert kinds(c.ingest(sig("HostDown", "h7", None), now=0)) == [("incident_opened", "host_down")]
    assert c.ingest(sig("ServiceDown", "h7", "demo"), now=1) == []
    assert kinds(c.ingest(sig("ServiceDown", "h8", "demo"), now=1)) == [("incident_opened", "service_down")]
    assert len(c.open_incidents()) == 2


def test_resolution_closes_the_incident_once_all_signals_resolve() -> None:
    c = make()
    c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    c.ingest(sig("ApiErrors", "h1", "api"), now=0)
    assert c.ingest(sig("PostgresDown", "db1", "postgres", status="resolved"), now=5) == []
    events = c.ingest(sig("ApiErrors", "h1", "api", status="resolved"), now=6)
    assert kinds(events) == [("incident_resolved", "database_down")]
    assert c.ingest(sig("ApiErrors", "h1", "api", status="resolved"), now=7) == []  # re-sent resolved
    assert c.open_incidents() == []


def test_refire_after_resolution_is_a_new_incident() -> None:
    c = make()
    first = c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    c.ingest(sig("PostgresDown", "db1", "postgres", status="resolved"), now=5)
    again = c.ingest(sig("PostgresDown", "db1", "postgres", starts="2026-11-23T11:00:00Z"), now=60)
    assert kinds(again) == [("incident_opened", "database_down")]
    assert again[0]["incident"]["id"] != first[0]["incident"]["id"]


def test_a_new_episode_after_a_missed_resolution_closes_the_old_incident_and_opens_a_new_one() -> None:
    """The daemon was down when the resolution came (or Alertmanager lost it): the incident stayed open.
    The same alert firing with a new startsAt proves that episode ended; it must not be swallowed."""
    c = make()
    first = c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    assert c.ingest(sig("PostgresDown", "db1", "postgres"), now=30) == [], "a repeat of the episode is nothing"
    again = c.ingest(sig("PostgresDown", "db1", "postgres", starts="2026-11-23T11:00:00Z"), now=60)
    assert kinds(again) == [("incident_resolved", "database_down"), ("incident_opened", "database_down")]
    assert again[0]["incident"]["id"] == first[0]["incident"]["id"] != again[1]["incident"]["id"]
    assert c.stats.missed_resolutions == 1 and len(c.open_incidents()) == 1


def test_a_late_retry_of_the_same_episode_does_not_reopen() -> None:
    c = make()
    c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    c.ingest(sig("PostgresDown", "db1", "postgres", status="resolved"), now=5)
    assert c.ingest(sig("PostgresDown", "db1", "postgres"), now=6) == []  # Alertmanager retrying, late
    assert c.open_incidents() == []


def test_a_blip_resolved_within_the_wait_is_never_announced() -> None:
    c = make()
    assert c.ingest(sig("ApiErrors", "h1", "api"), now=0) == []
    assert c.ingest(sig("ApiErrors", "h1", "api", status="resolved"), now=1) == []
    assert c.tick(now=10) == []


def test_updates_are_rate_limited() -> None:
    c = make(update_interval=10)
    c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    updates = []
    for t in range(1, 31):
        c.ingest(sig("ApiErrors", f"h{t}", "api"), now=t)
        updates += [e for e in c.tick(now=t) if e["kind"] == "incident_updated"]
    assert [e["at"] for e in updates] == [10, 20, 30]


def test_memory_is_bounded_by_ttl_and_size() -> None:
    c = make(resolved_ttl=60, max_incidents=50)
    for i in range(200):
        c.ingest(sig("ServiceDown", f"h{i}", "demo"), now=i)
        c.ingest(sig("ServiceDown", f"h{i}", "demo", status="resolved"), now=i + 0.5)
        c.tick(now=i + 0.5)
    assert len(c.incidents) <= 50 and len(c.by_fingerprint) <= 50
    c.tick(now=1000)
    assert c.incidents == {} and c.by_fingerprint == {}


def test_state_survives_a_restart() -> None:
    c = make()
    c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    c.ingest(sig("ApiErrors", "h1", "api"), now=1)
    restored = make()
    restored.load_state(c.to_state())
    assert restored.ingest(sig("ApiErrors", "h1", "api"), now=2) == []  # still a duplicate
    events = restored.ingest(sig("PostgresDown", "db1", "postgres", status="resolved"), now=3)
    events += restored.ingest(sig("ApiErrors", "h1", "api", status="resolved"), now=3)
    assert kinds(events) == [("incident_resolved", "database_down")]
    with pytest.raises(ValueError, match="version"):
        restored.load_state({"version": 99})


# --------------------------------------------------------------------------- properties

_SERVICES = ["postgres", "api", "web", "demo", None]
Step: TypeAlias = "tuple[str, str, str | None, str, float]"
_step = st.tuples(
    st.sampled_from(["PostgresDown", "ServiceDown", "ApiErrors", "HostDown"]),
    st.sampled_from(["db1", "h1", "h2", "h3"]),
    st.sampled_from(_SERVICES),
    st.sampled_from(["firing", "firing", "resolved"]),
    st.floats(min_value=0, max_value=5, allow_nan=False),
)


def _check_accounting(c: Correlator) -> None:
    owners: dict[str, list[str]] = {}
    for inc in c.incidents.values():
        for fp in inc.signals:
            owners.setdefault(fp, []).append(inc.id)
    for fp, ids in owners.items():
        assert len(ids) == 1, f"{fp} is in {ids}"
        assert c.by_fingerprint[fp] == ids[0]
    assert set(c.by_fingerprint) == set(owners)
    for inc in c.incidents.values():
        if inc.state == "suppressed":
            assert inc.signals == {} and inc.merged_into is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=60))
def test_every_signal_is_accounted_to_exactly_one_incident(steps: list[Step]) -> None:
    c = make()
    now = 0.0
    seen: set[str] = set()
    opened: set[str] = set()
    for name, host, service, status, dt in steps:
        now += dt
        s = sig(name, host, service, status=status)
        for event in c.ingest(s, now) + c.tick(now):
            if event["kind"] == "incident_opened":
                assert event["incident"]["id"] not in opened, "an incident opens once"
                opened.add(event["incident"]["id"])
        if status == "firing":
            seen.add(s.fingerprint)
        _check_accounting(c)
    firing_now = {fp for inc in c.incidents.values() for fp, st_ in inc.signals.items() if st_ == "firing"}
    assert firing_now <= seen


@settings(max_examples=200, deadline=None)
@given(st.lists(_step, min_size=1, max_size=30), st.integers(min_value=1, max_value=5))
def test_repeating_every_signal_changes_nothing(steps: list[Step], repeats: int) -> None:
    once, many = make(), make()
    now = 0.0
    for name, host, service, status, dt in steps:
        now += dt
        s = sig(name, host, service, status=status)
        a = once.ingest(s, now) + once.tick(now)
        b = many.ingest(s, now)
        for _repeat in range(repeats):
            b += many.ingest(s, now)
        b += many.tick(now)
        assert kinds(a) == kinds(b)
    assert [(i.type, i.state, sorted(i.signals)) for i in once.incidents.values()] == \
        [(i.type, i.state, sorted(i.signals)) for i in many.incidents.values()]


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.randoms(use_true_random=False))
def test_a_storm_of_n_symptoms_of_one_root_yields_one_incident(n: int, rnd: Any) -> None:
    c = make()
    signals = [sig(rnd.choice(["ApiErrors", "ApiLatency", "WebErrors"]), f"h{i}", rnd.choice(["api", "web"]))
               for i in range(n)]
    root_at = rnd.randrange(0, n + 1)
    signals.insert(root_at, sig("PostgresDown", "db1", "postgres"))
    events = []
    for k, s in enumerate(signals):
        events += c.ingest(s, now=k * 0.001)
    events += c.tick(now=60)
    assert [e["kind"] for e in events if e["kind"] == "incident_opened"] == ["incident_opened"]
    [inc] = c.open_incidents()
    assert inc.type == "database_down" and len(inc.signals) == len({s.fingerprint for s in signals})
    for s in signals:
        events += c.ingest(sig(s.name, s.target.host or "", s.target.service, status="resolved",
                               fp=s.fingerprint), now=61)
    assert [e["kind"] for e in events].count("incident_resolved") == 1
    assert c.open_incidents() == []


def test_reconcile_resolves_what_alertmanager_no_longer_has_active() -> None:
    """After a restart: incidents restored from the store are checked against Alertmanager's active alerts."""
    c = make()
    db = c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    c.ingest(sig("ApiErrors", "h1", "api"), now=1)
    c.tick(now=10)
    restored = make()
    restored.load_state(c.to_state())
    assert restored.reconcile({"PostgresDown-db1-postgres", "ApiErrors-h1-api"}, now=20) == []
    events = restored.reconcile({"ApiErrors-h1-api"}, now=21)
    assert events == [], "one symptom still fires: the incident stays open"
    events = restored.reconcile(set(), now=22)
    assert kinds(events) == [("incident_resolved", "database_down")]
    assert events[0]["incident"]["id"] == db[0]["incident"]["id"] and restored.open_incidents() == []


def test_an_alert_reconciled_away_that_fires_after_all_is_news() -> None:
    """Alertmanager answered an empty list (restarted, or an HA peer not synced yet): if the same episode
    then arrives again, it opens an incident instead of being dropped as a late retry."""
    c = make()
    c.ingest(sig("PostgresDown", "db1", "postgres"), now=0)
    assert kinds(c.reconcile(set(), now=10)) == [("incident_resolved", "database_down")]
    again = c.ingest(sig("PostgresDown", "db1", "postgres"), now=11)
    assert kinds(again) == [("incident_opened", "database_down")]


FLEET = parse_catalog({"incident_types": [
    {"name": "memory_leak", "match": [{"labels": {"alertname": "MemoryHigh"}}], "scope": "group",
     "role": "selfheal.core.service", "mode": "auto"},
    {"name": "service_down", "match": [{"labels": {"alertname": "ServiceDown"}}],
     "role": "selfheal.core.service", "mode": "auto"},
]})


def test_a_fleet_type_is_one_incident_per_group_with_its_hosts_not_one_per_host() -> None:
    c = Correlator(FLEET, TOPOLOGY, group_wait=3.0)
    hosts = [f"w{i:02d}" for i in range(1, 11)]
    events = [e for i, h in enumerate(hosts) for e in c.ingest(sig("MemoryHigh", h, "demo"), now=i * 0.2)]
    events += c.ingest(sig("ServiceDown", "w03", "demo"), now=2.1)
    assert kinds(events) == [("incident_opened", "service_down")], "a target type still opens per target"
    [opened] = [e for e in c.tick(now=3.5) if e["kind"] == "incident_opened"]
    incident = opened["incident"]
    assert incident["type"] == "memory_leak" and incident["targets"] == hosts, incident
    assert incident["symptom_count"] == 0, "a group's hosts are its targets, not symptoms"
    assert c.tick(now=20) == [], "announced once"
    # a host that alerts after the group was announced is the next group's, not a member its run never saw
    assert c.ingest(sig("MemoryHigh", "w11", "demo"), now=21) == []
    [later] = [e for e in c.tick(now=25) if e["kind"] == "incident_opened"]
    assert later["incident"]["targets"] == ["w11"] and later["incident"]["id"] != incident["id"]
    resolved = [e for h in hosts for e in c.ingest(sig("MemoryHigh", h, "demo", status="resolved"), now=30)]
    assert [e["kind"] for e in resolved] == ["incident_resolved"], "resolved once every host's alert ended"
    restored = Correlator(FLEET, TOPOLOGY)
    restored.load_state(c.to_state())
    assert restored.incidents[later["incident"]["id"]].targets == {"w11": 1}


def test_scope_is_target_or_group() -> None:
    from ansible_collections.selfheal.core.plugins.module_utils.catalog import PolicyFileError

    with pytest.raises(PolicyFileError, match=r"incident_types\[0\].scope: must be target or group"):
        parse_catalog({"incident_types": [{"name": "x", "match": [{"labels": {"a": "b"}}], "scope": "fleet"}]})
