"""After a restart, the alertmanager source checks restored incidents against the lab's real Alertmanager.

An incident restored from the store whose alert Alertmanager no longer has active missed its
resolution while the daemon was down: it is resolved at start. One whose alert is still active stays.
"""
from __future__ import annotations

import datetime
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import REPO, Lab

sys.path.insert(0, str(REPO / "tests" / "unit" / "extensions" / "eda"))
from source_harness import Client, drain, serve

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source import alertmanager
from ansible_collections.selfheal.core.extensions.eda.plugins.event_source.alertmanager import saved_state
from ansible_collections.selfheal.core.plugins.module_utils.catalog import load_catalog
from ansible_collections.selfheal.core.plugins.module_utils.correlation import Correlator
from ansible_collections.selfheal.core.plugins.module_utils.signals import from_alertmanager
from ansible_collections.selfheal.core.plugins.module_utils.store import Store

CATALOG = str(REPO / "rulebooks" / "catalog.yml")


def _am(lab: Lab, path: str, body: Any = None) -> Any:
    url = f"http://127.0.0.1:{lab.cfg.ports['alertmanager']}/api/v2/{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(time.time() + seconds, datetime.UTC).isoformat().replace("+00:00", "Z")


def test_restored_incidents_whose_alerts_ended_are_resolved_at_start(lab: Lab, tmp_path: Path) -> None:
    labels = {"alertname": "ServiceDown", "host": "h2", "service": "reconcile-probe", "incident_type": "service_down"}
    _am(lab, "alerts", [{"labels": labels, "startsAt": _when(-5), "endsAt": _when(120)}])
    try:
        active = [a for a in _am(lab, "alerts") if a["labels"].get("service") == "reconcile-probe"]
        assert len(active) == 1, "the lab's Alertmanager took the probe alert"
        live_fp = active[0]["fingerprint"]

        correlator = Correlator(load_catalog(CATALOG), None, group_wait=0)
        live = correlator.ingest(from_alertmanager({**active[0], "status": "firing"}, received_at=0), now=0)
        gone_alert = {"labels": {**labels, "host": "h3"}, "status": "firing", "startsAt": _when(-600),
                      "fingerprint": "0000000000000bad"}
        gone = correlator.ingest(from_alertmanager(gone_alert, received_at=0), now=0)
        assert [e["kind"] for e in live + gone] == ["incident_opened", "incident_opened"]
        store = Store(str(tmp_path / "store.db"))
        store.save_state("alertmanager.correlator", correlator.to_state())
        store.close()

        async def body(post: Client, queue: Any) -> None:
            [event] = await drain(queue, 1)
            assert event["kind"] == "incident_resolved"
            assert event["incident"]["id"] == gone[0]["incident"]["id"], "only the incident whose alert ended"

        serve(alertmanager.main, {"correlate": True, "catalog": CATALOG, "state_path": str(tmp_path / "store.db"),
                                  "alertmanager_url": f"http://127.0.0.1:{lab.cfg.ports['alertmanager']}"}, body)
        store = Store(str(tmp_path / "store.db"))
        state = saved_state(store)["correlator"]
        store.close()
        assert state is not None
        states = {i["id"]: i["state"] for i in state["incidents"]}
        assert states[live[0]["incident"]["id"]] == "open" and states[gone[0]["incident"]["id"]] == "resolved"
        assert live_fp in json.dumps(state)
    finally:
        _am(lab, "alerts", [{"labels": labels, "startsAt": _when(-5), "endsAt": _when(-1)}])
