"""End to end on the lab: fill a host's own filesystem for real, watch the daemon reclaim it.

Real parts only: each host's tmpfs, its node exporter, Prometheus's DiskFull and DiskFillingUp rules,
Alertmanager, the rulebook daemon and the disk role over SSH. The record is the store's audit trail.
"""
from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, tree_state, wait_for

from ansible_collections.selfheal.core.plugins.module_utils import timeline
from ansible_collections.selfheal.core.plugins.module_utils.store import Store

BOUND = 120  # seconds; the lab reclaims in about 15, CI machines can be slow


def _used(path: Path) -> float:
    st = os.statvfs(path)
    return 100.0 * (1 - st.f_bavail / st.f_blocks)


def _outcomes(lab: Lab, itype: str, target: str, since: float) -> list[dict[str, Any]]:
    with Store(str(lab.cfg.path("store.db"))) as store:
        return [o for o in store.outcomes(itype, 50) if o["target"] == target and o["at"] >= since]


def _finished(lab: Lab, incident_id: str) -> list[dict[str, Any]] | None:
    """The incident's audit trail once its run recorded how it ended."""
    trail = lab.audit_trail(incident_id)
    return trail if trail and trail[-1]["event"] == "finished" else None


@pytest.fixture
def empty(daemon: Lab) -> Iterator[Lab]:
    """Every host's filesystem empty before and after (a full disk left behind would be healed later)."""
    for host in daemon.cfg.hosts:
        daemon.empty_disk(host.name)
    yield daemon
    for host in daemon.cfg.hosts:
        daemon.empty_disk(host.name)


def test_a_full_disk_is_reclaimed_on_its_own_filesystem_and_the_record_holds_it(empty: Lab) -> None:
    lab, target = empty, "h1"
    lab.wait_until_free(target)
    others = {h.name: tree_state(lab.disk(h.name)) for h in lab.cfg.hosts if h.name != target}
    pids = {h.name: lab.pid(h.name) for h in lab.cfg.hosts}
    since = time.time()
    chaos = lab.playbook("selfheal.core.chaos.disk_fill", "-e", f"selfheal_target={target}", "-e", "chaos_fill=tmp")
    assert chaos.returncode == 0, chaos.stdout + chaos.stderr
    disk = lab.disk(target)
    protected = tree_state(disk / "data")
    fresh = tree_state(disk / "tmp")["fresh.part"]
    assert protected and _used(disk) > 90, "the chaos playbook filled the disk past the threshold"

    rec = wait_for(f"the disk of {target} reclaimed", lambda: lab.recovery_ended(target, since), BOUND)
    print(timeline.render(rec))
    assert rec.outcome == "healed", timeline.render(rec)
    assert rec.complete, f"stages are missing:\n{timeline.render(rec)}"
    assert _used(disk) < 90
    assert sorted(p.name for p in (disk / "tmp").iterdir()) == ["fresh.part"], "the old temp files are gone"
    assert tree_state(disk / "tmp")["fresh.part"] == fresh, "the fresh temp file is kept as it was"
    assert tree_state(disk / "data") == protected, "every file under the protected path is unchanged"
    assert {h: tree_state(lab.disk(h)) for h in others} == others, "no other host's filesystem was touched"
    assert {h.name: lab.pid(h.name) for h in lab.cfg.hosts} == pids, "no service was touched"

    # the store's record: the decision with its reasons, the action with its prior state, the verification
    incident_id = rec.stages["remediation_started"]["incident_id"]
    trail = wait_for("the run's outcome on record", lambda: _finished(lab, incident_id), 30)
    events = [e["event"] for e in trail]
    assert events[0] == "decided" and "action_done" in events and "verified_healthy" in events, events
    decided = trail[0]["details"]
    assert decided["decision"]["allowed"] is True and decided["decision"]["targets"] == [target]
    assert decided["decision"]["reasons"], "the decision says why"
    assert decided["signal"]["name"] == "DiskFull"
    acted = next(e["details"] for e in trail if e["event"] == "action_done")
    assert acted["step"] == "clean_tmp" and acted["action"] == "cleaned_tmp"
    removed = {Path(f["path"]).name for s in acted["prior_state"]["steps"] for f in s["files"]}
    assert removed == {f"upload-{i}.tmp" for i in range(4)}, removed
    assert all(f["mode"] and f["size"] > 0 for s in acted["prior_state"]["steps"] for f in s["files"])
    finished = trail[-1]["details"]
    assert finished["outcome"] == "verified"
    assert finished["evidence"]["verification"]["usage"]["percent"] < 90
    assert [o["outcome"] for o in _outcomes(lab, "disk_full", target, since)] == ["verified"]


def _max_usage(lab: Lab, target: str, seconds: int) -> float:
    """The highest usage Prometheus saw on the target's filesystem over the last `seconds`."""
    mount = str(lab.disk(target))
    query = (f'max_over_time(((1 - node_filesystem_avail_bytes{{host="{target}", mountpoint="{mount}"}}'
             f' / node_filesystem_size_bytes{{host="{target}", mountpoint="{mount}"}}) * 100)[{seconds}s:1s])')
    url = f"{lab.vars['selfheal_prometheus_url']}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as resp:
        result = json.loads(resp.read())["data"]["result"]
    assert len(result) == 1, f"Prometheus has the target's filesystem: {result}"
    return float(result[0]["value"][1])


def test_a_filling_disk_is_reclaimed_before_it_is_full(empty: Lab) -> None:
    lab, target = empty, "h2"
    lab.wait_until_free(target)
    since = time.time()
    chaos = lab.playbook("selfheal.core.chaos.disk_fill", "-e", f"selfheal_target={target}",
                         "-e", "chaos_fill=grow", "-e", "chaos_rate=2")
    assert chaos.returncode == 0, chaos.stdout + chaos.stderr
    try:
        rec = wait_for(f"the filling disk of {target} reclaimed", lambda: lab.recovery_ended(target, since), BOUND)
        print(timeline.render(rec))
        assert rec.outcome == "healed", timeline.render(rec)
        assert rec.stages["alert_received"]["details"]["summary"].endswith("will be full within 2 minutes at this rate")
        assert rec.stages["action_done"]["details"]["step"] == "rotate_logs"
    finally:
        lab.playbook("selfheal.core.chaos.disk_fill", "-e", f"selfheal_target={target}", "-e", "chaos_fill=stop")
    took = int(time.time() - since) + 5
    peak = _max_usage(lab, target, took)
    print(f"disk_filling: reclaimed {rec.phases()['time_to_recovery']:.1f}s after the writer started; "
          f"peak usage {peak:.1f}% (threshold 90%)")
    assert peak < 90, "reclaimed before usage crossed the threshold"
    assert _outcomes(lab, "disk_full", target, since) == [], "no disk_full incident: it never got full"
    assert [o["outcome"] for o in _outcomes(lab, "disk_filling", target, since)][-1:] == ["verified"]
    assert list((lab.disk(target) / "log").glob("app.log*.gz")), "the log was rotated and compressed, not deleted"
