"""selfheal.core.guard run by Ansible against real stores (SQLite here, PostgreSQL in test_store)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import wait_for

from ansible_collections.selfheal.core.plugins.module_utils.prometheus import instant_query
from ansible_collections.selfheal.core.plugins.module_utils.slo import history
from ansible_collections.selfheal.core.plugins.module_utils.store import Store

ANSIBLE = str(Path(sys.executable).parent / "ansible")
CATALOG: dict[str, Any] = {
    "incident_types": [
        {"name": "service_down", "match": [{"labels": {"alertname": "ServiceDown"}}], "mode": "auto",
         "playbook": "selfheal.core.remediate_service_down", "blast_radius": {"percent": 25, "max": 2},
         "cooldown": 60, "circuit": {"failures": 3, "window": 600, "reset": 1800}},
        {"name": "data_corruption", "match": [{"labels": {"alertname": "Corrupt"}}], "never_automate": True},
    ],
    "windows": [{"name": "db freeze", "kind": "freeze", "start": "2026-12-24T00:00:00Z",
                 "end": "2026-12-27T00:00:00Z", "targets": ["db1"]}],
}


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, str]:
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    return {"catalog": str(catalog), "store": str(tmp_path / "store.db")}


def guard(setup: dict[str, str], *extra: str, **args: Any) -> dict[str, Any]:
    params = {"incident_id": "inc-1", "incident_type": "service_down", "targets": ["h1"], "now": 1795400000.0,
              **setup, **args}
    proc = subprocess.run([ANSIBLE, "localhost", "-m", "selfheal.core.guard", "-a", json.dumps(params), *extra],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                               "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_check_mode_decides_and_writes_nothing(setup: dict[str, str]) -> None:
    result = guard(setup, "--check", targets=[f"h{i}" for i in range(8)], group_size=8)
    assert result["decision"]["allowed"] is True and result["decision"]["serial"] == 2
    assert result["decision"]["batches"] == [["h0", "h1"], ["h2", "h3"], ["h4", "h5"], ["h6", "h7"]]
    assert result["leases"] == {} and result["changed"] is False
    s = Store(setup["store"])
    assert s.audit_trail() == [] and s.leases(["h0"]) == {}
    s.close()


def test_an_allowed_decision_takes_leases_and_a_second_run_is_refused(setup: dict[str, str]) -> None:
    first = guard(setup, holder="run-a")
    assert first["decision"]["allowed"] and first["leases"] == {"h1": 1}
    second = guard(setup, holder="run-b", incident_id="inc-2")
    assert second["decision"]["allowed"] is False
    assert "h1: locked by run-a" in " ".join(second["decision"]["reasons"])
    s = Store(setup["store"])
    assert [e["event"] for e in s.audit_trail()] == ["decided", "decided"]
    s.close()


def test_the_circuit_opens_demotes_and_escalates_once(setup: dict[str, str]) -> None:
    s = Store(setup["store"])
    for i in range(3):
        s.record_outcome(f"old-{i}", "service_down", f"h{i + 5}", "auto", "failed", at=1795400000.0 - 60 + i)
    s.close()
    first = guard(setup)
    assert first["decision"]["mode"] == "propose" and first["decision"]["allowed"] is False
    assert first["decision"]["circuit_open"] and first["decision"]["escalate"]
    again = guard(setup, incident_id="inc-2", now=1795400010.0)
    assert again["decision"]["circuit_open"] and again["decision"]["escalate"] is False


def test_never_automate_and_freezes(setup: dict[str, str]) -> None:
    never = guard(setup, incident_type="data_corruption")
    assert never["decision"]["mode"] == "deny" and never["decision"]["escalate"] is True
    frozen = guard(setup, targets=["db1", "h1"], now=1798200000.0)  # 2026-12-25
    assert frozen["decision"]["targets"] == ["h1"]
    assert "freeze 'db freeze'" in frozen["decision"]["skipped"]["db1"]


def test_bad_catalog_and_unreachable_store_fail_safe(setup: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"incident_types": [{**CATALOG["incident_types"][0], "cooldown": "soon"}]}))
    result = guard({**setup, "catalog": str(bad)})
    assert result["failed"] and f"{bad}: incident_types[0].cooldown: must be a number" in result["msg"]
    down = guard({**setup, "store": "postgresql://selfheal@127.0.0.1:9/selfheal"}, store_password="pw-s3cret-1")
    assert down["failed"] and "fail safe" in down["msg"] and "pw-s3cret-1" not in json.dumps(down)
    unknown = guard(setup, incident_type="nope")
    assert unknown["failed"] and "is not in" in unknown["msg"]
    # the lifecycle asks for a role: a type without one (this catalog's name playbooks) takes no lease
    roleless = guard(setup, need_role=True)
    assert roleless["failed"] and "service_down names no role" in roleless["msg"]
    with Store(setup["store"]) as s:
        assert s.leases(["h1"]) == {} and s.audit_trail() == [], "refused before any lease or decision"


def module(name: str, params: dict[str, Any], *extra: str) -> dict[str, Any]:
    proc = subprocess.run([ANSIBLE, "localhost", "-m", f"selfheal.core.{name}", "-a", json.dumps(params), *extra],
                          capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                               "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_finish_starts_the_cooldown_releases_and_fences_late_runs(setup: dict[str, str]) -> None:
    import time as clock

    now = clock.time()
    first = guard(setup, holder="run-a", now=now)
    done = module("incident", {"store": setup["store"], "incident_id": "inc-1", "incident_type": "service_down",
                               "holder": "run-a", "targets": ["h1"], "tokens": first["leases"],
                               "outcome": "verified", "cooldown": 60})
    assert done["released"] == ["h1"] and done["fenced_out"] == []
    cooling = guard(setup, holder="run-b", incident_id="inc-2", now=now + 1)
    assert cooling["decision"]["allowed"] is False and "cooling down" in cooling["decision"]["skipped"]["h1"]
    # A run whose lease expired and was taken over changes nothing.
    s = Store(setup["store"])
    late_token = s.acquire("h9", "run-late", ttl=0.01, now=now)
    assert late_token is not None and s.acquire("h9", "run-new", ttl=60, now=now + 1) is not None
    s.close()
    late = module("incident", {"store": setup["store"], "incident_id": "inc-3", "incident_type": "service_down",
                               "holder": "run-late", "targets": ["h9"], "tokens": {"h9": late_token},
                               "outcome": "failed"})
    assert late["fenced_out"] == ["h9"] and late["released"] == []
    s = Store(setup["store"])
    assert s.leases(["h9"])["h9"][0] == "run-new" and s.cooldowns(["h9"]) == {}
    s.close()


def test_track_record_reports_ready_for_auto_and_demoted(setup: dict[str, str], tmp_path: Path) -> None:
    catalog = tmp_path / "modes.yml"
    catalog.write_text(yaml.safe_dump({"incident_types": [
        {"name": "careful", "match": [{"labels": {"a": "b"}}], "mode": "propose",
         "playbook": "selfheal.core.remediate_service_down"},
        {"name": "eager", "match": [{"labels": {"a": "c"}}], "mode": "auto",
         "playbook": "selfheal.core.remediate_service_down", "circuit": {"failures": 3}},
    ]}))
    import time as clock

    s = Store(setup["store"])
    now = clock.time()
    for i in range(4):
        s.record_outcome(f"c{i}", "careful", "h1", "propose", "verified", at=now - 100 + i)
    s.close()
    before = module("incident_info", {"store": setup["store"], "catalog": str(catalog)})
    careful = next(r for r in before["track_record"] if r["incident_type"] == "careful")
    assert careful["ready_for_auto"] is False and "4 of the last 5" in careful["verdict"]
    s = Store(setup["store"])
    s.record_outcome("c4", "careful", "h1", "propose", "verified", at=now - 50)
    for i in range(3):
        s.record_outcome(f"e{i}", "eager", "h2", "auto", "failed", at=now - 30 + i)
    s.close()
    after = module("incident_info", {"store": setup["store"], "catalog": str(catalog)})
    records = {r["incident_type"]: r for r in after["track_record"]}
    assert records["careful"]["ready_for_auto"] is True and "ready for auto" in records["careful"]["verdict"]
    assert records["eager"]["demoted"] is True and "runs as propose" in records["eager"]["verdict"]
    assert after["changed"] is False


@pytest.fixture
def prometheus(lab: Any) -> str:
    """The lab's Prometheus, once it has scraped the demo services (a fresh one has no samples yet)."""
    url = str(lab.vars["selfheal_prometheus_url"])
    wait_for("Prometheus to scrape the demo services", lambda: instant_query(url, 'up{job="demo"}'), 60)
    # a window counts only once Prometheus holds half of it: half of the longest window below (2m)
    wait_for("Prometheus to hold 65 s of history", lambda: history(url, "2m") >= 65, 180, 2)
    return url


def _slo_catalog(tmp_path: Path, ratio: str) -> dict[str, str]:
    """A catalog whose SLO error ratio is a fixed PromQL expression, evaluated by the lab's real Prometheus."""
    entry = {**CATALOG["incident_types"][0], "slo": {
        "objective": 0.99, "fast_burn": 14.4, "slow_burn": 6, "fast_windows": ["30s", "1m"],
        "slow_windows": ["1m", "2m"],
        # the window is in the query, as in a real SLO; its value is the fixed ratio
        "error_ratio_query": f'{ratio} + 0 * max(max_over_time(up{{job="demo"}}[{{window}}]))'}}
    catalog = tmp_path / "slo-catalog.yml"
    catalog.write_text(yaml.safe_dump({"incident_types": [entry]}))
    return {"catalog": str(catalog), "store": str(tmp_path / "slo-store.db")}


def test_a_fast_burn_acts_at_once(prometheus: str, tmp_path: Path) -> None:
    result = guard(_slo_catalog(tmp_path, "0.2"), prometheus_url=prometheus)
    assert result["decision"]["allowed"] is True and result["decision"]["mode"] == "auto"
    assert any("burning fast (20.0x" in r for r in result["decision"]["reasons"]), result["decision"]["reasons"]
    assert result["burn"]["fast"] == pytest.approx(20.0) and set(result["burn"]["windows"]) == {"30s", "1m", "2m"}


def test_a_slow_burn_only_observes(prometheus: str, tmp_path: Path) -> None:
    result = guard(_slo_catalog(tmp_path, "0.07"), prometheus_url=prometheus)
    assert result["decision"]["allowed"] is False and result["decision"]["mode"] == "observe"
    assert any("burning slowly (7.0x)" in r for r in result["decision"]["reasons"]), result["decision"]["reasons"]
    assert result["leases"] == {}


def test_an_unreachable_prometheus_is_said_and_the_decision_goes_on(lab: Any, tmp_path: Path) -> None:
    result = guard(_slo_catalog(tmp_path, "0.2"), prometheus_url="http://127.0.0.1:9", prometheus_timeout=2)
    assert result["decision"]["allowed"] is True
    unknown = [r for r in result["decision"]["reasons"] if r.startswith("error-budget burn unknown")]
    assert unknown and "127.0.0.1:9" in unknown[0], result["decision"]["reasons"]


@pytest.mark.parametrize("opted_in", [True, False])
def test_a_propose_type_promotes_itself_only_when_its_catalog_entry_opts_in(tmp_path: Path, opted_in: bool) -> None:
    entry = {**CATALOG["incident_types"][0], "name": "service_hung", "mode": "propose",
             "promotion": {"after": 3, "automatic": opted_in}}
    catalog = tmp_path / "promote.yml"
    catalog.write_text(yaml.safe_dump({"incident_types": [entry]}))
    setup = {"catalog": str(catalog), "store": str(tmp_path / "promote.db")}
    s = Store(setup["store"])
    for i in range(3):
        s.record_outcome(f"old-{i}", "service_hung", "h9", "propose", "verified", at=1795390000.0 + i)
    s.close()
    result = guard(setup, incident_type="service_hung")
    reasons = " ".join(result["decision"]["reasons"])
    if opted_in:
        assert result["decision"]["mode"] == "auto" and result["decision"]["allowed"] is True
        assert "promoted itself to auto: its last 3 approved runs all verified" in reasons
        s = Store(setup["store"])
        for i in range(60):  # many automatic runs since: the approved ones still count
            s.record_outcome(f"auto-{i}", "service_hung", f"h{i % 4}", "auto", "verified", at=1795395000.0 + i)
        s.close()
        later = guard(setup, incident_type="service_hung", incident_id="inc-later", targets=["h7"])
        assert later["decision"]["mode"] == "auto", later["decision"]["reasons"]
    else:
        assert result["decision"]["mode"] == "propose" and result["decision"]["allowed"] is False
        assert "waiting for a human approval" in reasons


def test_a_target_with_its_own_failures_is_skipped_while_others_proceed(setup: dict[str, str]) -> None:
    s = Store(setup["store"])
    for i in range(2):
        s.record_outcome(f"old-{i}", "service_down", "h1", "auto", "escalated", at=1795400000.0 - 120 + i)
    s.close()
    result = guard(setup, targets=["h1", "h2"], group_size=8)
    assert result["decision"]["allowed"] is True and result["decision"]["circuit_open"] is False
    assert result["decision"]["targets"] == ["h2"] and list(result["leases"]) == ["h2"]
    assert "circuit open for this target: 2 failed automatic runs" in result["decision"]["skipped"]["h1"]


def test_the_heartbeat_renews_leases_while_the_run_lives_and_they_expire_when_it_dies(
        setup: dict[str, str], tmp_path: Path) -> None:
    playbook = tmp_path / "run.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "decide", "selfheal.core.guard": {"incident_id": "inc-hb", "incident_type": "service_down",
                                                   "targets": ["h1"], "lease_ttl": 3, **setup}},
        {"name": "a remediation that takes longer than the lease", "ansible.builtin.pause": {"seconds": 8}},
    ]}]))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                             "-c", "local", str(playbook)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)

    def holder() -> str | None:
        store = Store(setup["store"])
        try:
            lease = store.leases(["h1"]).get("h1")
        finally:
            store.close()
        return lease[0] if lease is not None and lease[1] > time.time() else None

    try:
        wait_for("the guard to take the lease", lambda: holder() is not None, 60)
        time.sleep(5)  # past the 3 s the lease was granted for
        held = holder()
        assert held is not None and held.startswith("inc-hb"), "renewed while the run lives"
        os.killpg(proc.pid, signal.SIGKILL)  # the run dies with its daemon
        proc.wait(10)
        wait_for("the dead run's lease to expire", lambda: holder() is None, 10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_run_that_lost_its_lease_is_fenced_before_its_next_change(setup: dict[str, str]) -> None:
    import time as clock

    decided = guard(setup, holder="run-a", now=clock.time(), heartbeat=False, lease_ttl=8)
    fence = {"action": "fence", "store": setup["store"], "incident_id": "inc-1", "holder": "run-a",
             "targets": ["h1"], "tokens": decided["leases"]}
    held = module("incident", fence)
    assert held.get("failed") is not True and held["held"] == ["h1"], held
    clock.sleep(8.5)  # no heartbeat renewed it: by the store's clock the lease is gone
    lost = module("incident", fence)
    assert lost["failed"] is True and "stops before its next change" in lost["msg"], lost
    stranger = module("incident", {**fence, "holder": "run-b", "tokens": {"h1": 999}})
    assert stranger["failed"] is True


def test_a_relapse_counts_on_the_circuit_and_the_one_that_opens_it_flaps(setup: dict[str, str]) -> None:
    finish = {"store": setup["store"], "incident_id": "inc-1", "incident_type": "service_down", "holder": "run-a",
              "targets": ["h1"], "outcome": "not_held", "cooldown": 1}
    refused = module("incident", finish)
    assert refused["failed"] is True and "outcome is not_held but all of the following are missing: catalog" in \
        refused["msg"], refused["msg"]
    first = module("incident", {**finish, "catalog": setup["catalog"]})
    assert first["outcome"] == "not_held" and first["relapse"]["flaps"] is False, first
    second = module("incident", {**finish, "catalog": setup["catalog"], "incident_id": "inc-2"})
    assert second["outcome"] == "escalated" and second["relapse"]["flaps"] is True
    assert "flaps" in second["relapse"]["why"]
    import time as clock

    after = guard(setup, incident_id="inc-3", now=clock.time() + 5)
    decision = after["decision"]
    assert decision["allowed"] is False and "circuit open for this target" in decision["skipped"]["h1"]
    assert decision["retry_at"] is None, "a flapping target waits for a human, not for a retry"
    assert decision["already_paged"] is True, "the flap was paged: the held-back run pages nobody again"


def test_failed_steps_recorded_by_runs_skip_the_step_within_the_ladder_window(tmp_path: Path) -> None:
    """The whole loop through the modules: three runs record that restart did not verify, and the next
    decision skips it; a failure whose data source was down is not counted; a week later it is tried again."""
    entry = {**CATALOG["incident_types"][0], "steps": ["restart", "restore_config"],
             "ladder": {"skip_after": 3, "window": 3600}}
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(yaml.safe_dump({"incident_types": [entry]}))
    setup = {"catalog": str(catalog), "store": str(tmp_path / "store.db")}
    step = {"action": "step", "store": setup["store"], "incident_type": "service_down", "holder": "run",
            "targets": ["h1"], "step": "restart", "verified": False}
    for i in range(2):
        assert module("incident", {**step, "incident_id": f"inc-{i}"}).get("failed") is not True
    unasked = module("incident", {**step, "incident_id": "inc-unasked", "counted": False})
    assert unasked.get("failed") is not True
    now = time.time()
    tried = guard(setup, incident_id="inc-a", heartbeat=False, now=now)["decision"]
    assert tried["steps"] == ["restart", "restore_config"], "2 counted failures of 3: still tried"
    assert "step restart: 0 of its last 2 attempts verified" in tried["reasons"], tried["reasons"]
    module("incident", {**step, "incident_id": "inc-3"})
    skipped = guard(setup, incident_id="inc-b", heartbeat=False, now=time.time())["decision"]
    assert skipped["steps"] == ["restore_config"], skipped
    assert any(r.startswith("step restart skipped: its last 3 attempts all failed") for r in skipped["reasons"])
    later = guard(setup, incident_id="inc-c", heartbeat=False, now=time.time() + 3601)["decision"]
    assert later["steps"] == ["restart", "restore_config"], "failures older than the window are forgotten"
    with Store(setup["store"]) as s:
        uncounted = [e for e in s.audit_trail("inc-unasked") if e["event"] == "step_failed"]
    assert [e["details"].get("counted") for e in uncounted] == [False], "on record, marked as not counted"
