"""A storm behind one failed dependency, through real Alertmanager and ansible-rulebook.

The database on the db host is killed. Prometheus then fires PostgresDown for
it, and ServiceHung and DependencyDown for the demo service on every
host (their health checks need the database). The daemon must open one
incident for the database, run one remediation (restart PostgreSQL), and
act on no symptom. Re-sent alerts afterwards start nothing.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from conftest import Lab, wait_for

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source.alertmanager import saved_state
from ansible_collections.selfheal.core.plugins.module_utils.store import Store

BOUND = 120


def _am_alerts(lab: Lab) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{lab.cfg.ports['alertmanager']}/api/v2/alerts"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _runs_since(lab: Lab, since: float) -> list[dict[str, Any]]:
    return [e for e in lab.stages(since) if e["stage"] == "remediation_started" and e["at"] >= since]


def _incident(lab: Lab, incident_id: str) -> dict[str, Any]:
    store = Store(str(lab.cfg.path("store.db")))
    try:
        state = saved_state(store)["correlator"]
    finally:
        store.close()
    return next(i for i in state["incidents"] if i["id"] == incident_id)


def test_storm_behind_a_failed_database_is_one_incident_and_one_run(daemon: Lab) -> None:
    lab = daemon
    db = next(h for h in lab.cfg.hosts if "db" in h.groups)
    lab.wait_until_free(db.name)
    since = time.time()
    assert lab.svc(db.name, "kill", "postgres").returncode == 0

    # Real alerts: the root and its symptoms on every host.
    def storm_seen() -> list[dict[str, Any]] | None:
        alerts = [a for a in _am_alerts(lab) if a["status"]["state"] == "active"]
        names = {a["labels"]["alertname"] for a in alerts}
        hosts = {a["labels"].get("host") for a in alerts if a["labels"]["alertname"] != "PostgresDown"}
        return alerts if "PostgresDown" in names and len(hosts) >= 3 else None

    def healed() -> dict[str, Any] | None:
        recs = [r for r in lab.recoveries(since) if (r.at("remediation_started") or 0) >= since and r.outcome != "open"]
        return recs[0].stages["verified_healthy"] if recs and recs[0].outcome == "healed" else None

    alerts = None
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline and not healed():
        alerts = storm_seen() or alerts
        time.sleep(0.3)
    verified = wait_for("the database to be healed", healed, 5)
    assert verified["target"] == db.name
    runs = _runs_since(lab, since)
    assert len(runs) == 1, f"one remediation for the root cause, got {runs}"
    assert runs[0]["target"] == db.name and runs[0]["incident_id"].startswith("database_down-")
    assert lab.pid(db.name, "postgres") is not None

    incident = wait_for("the incident to resolve",
                        lambda: (i := _incident(lab, runs[0]["incident_id"]))["state"] == "resolved" and i, 90)
    assert len(incident["signals"]) >= 5, incident["signals"]
    assert len(incident["symptoms"]) >= 3, incident["symptoms"]
    assert alerts is not None, "Alertmanager showed the storm while it lasted"

    # Alertmanager retrying those notifications later starts nothing.
    payload = {"version": "4", "status": "firing", "receiver": "selfheal", "groupKey": "{}:{}",
               "alerts": [{"status": "firing", "labels": a["labels"], "annotations": a["annotations"],
                           "startsAt": a["startsAt"], "endsAt": a["endsAt"], "fingerprint": a["fingerprint"]}
                          for a in alerts]}
    url = f"http://127.0.0.1:{lab.cfg.ports['rulebook']}/api/v1/alerts"
    token = lab.cfg.path("source_token").read_text().strip()
    resend_at = time.time()
    for _attempt in range(3):
        req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 202
    time.sleep(8)
    assert _runs_since(lab, resend_at) == []


def test_the_source_token_never_reaches_logs_events_or_records(daemon: Lab) -> None:
    """Alertmanager presents the token on every notification; nothing the daemon writes may hold it."""
    lab = daemon
    token = lab.cfg.path("source_token").read_text().strip()
    url = f"http://127.0.0.1:{lab.cfg.ports['rulebook']}/api/v1/alerts"
    bad = urllib.request.Request(url, data=b'{"alerts": []}', method="POST",
                                 headers={"Authorization": "Bearer not-the-token-at-all-000"})
    try:
        urllib.request.urlopen(bad, timeout=5)
        raise AssertionError("a wrong token was accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    written = [lab.cfg.path("log", "rulebook.log"), lab.cfg.path("log", "alertmanager.log"),
               lab.cfg.path("notifications.jsonl"), lab.cfg.path("store.db")]
    checked = 0
    for path in written:
        if path.exists():
            checked += 1
            assert token.encode() not in path.read_bytes(), f"the token leaked into {path}"
            assert b"not-the-token-at-all" not in path.read_bytes(), f"a presented token leaked into {path}"
    assert checked >= 3
    assert "refused an unauthenticated request" in lab.cfg.path("log", "rulebook.log").read_text(errors="replace")
