"""remediate_service_down run by hand against the lab: refusals, healing, escalation."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Lab, wait_for

from ansible_collections.selfheal.core.plugins.module_utils.store import Store

PLAYBOOK = "selfheal.core.remediate_service_down"


@pytest.mark.parametrize(
    ("args", "message", "paged"),
    [
        ((), "needs a target and has none", True),
        (("-e", "selfheal_target=nosuchhost"), "target 'nosuchhost' is not a host of the inventory", True),
        (("-e", "selfheal_target=localhost"), "is the controller", True),
        (("-e", json.dumps({"ansible_eda": {"event": {"signal": {
            "status": "resolved", "target": {"host": "h1", "service": "demo"}}}}})),
         "resolved alerts never trigger actions", False),
    ],
)
def test_refuses_without_a_valid_target_changes_nothing_and_pages_once(lab: Lab, args: tuple[str, ...],
                                                                       message: str, paged: bool) -> None:
    pids = {h.name: lab.pid(h.name) for h in lab.cfg.hosts}
    since = time.time()
    seen = len(lab.notifications())
    proc = lab.playbook(PLAYBOOK, *args)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert message in out
    assert "Nothing was changed" in out
    acted = [e["stage"] for e in lab.stages(since, lab.scratch_store)
             if e["stage"] in ("remediation_started", "action_done", "verified_healthy")]
    assert acted == [], "nothing started, acted or verified"
    assert {h.name: lab.pid(h.name) for h in lab.cfg.hosts} == pids
    pages = [n["body"] for n in lab.notifications()[seen:]]
    if not paged:  # a resolved alert is never paged
        assert pages == []
        return
    assert len(pages) == 1, pages
    page = pages[0]
    assert isinstance(page, dict) and message in " ".join(str(page["summary"]).split())
    assert page["target"] == (args[-1].split("=")[-1] if args else "unknown"), "the page names what the alert named"


def test_healthy_service_is_left_alone(lab: Lab) -> None:
    since = time.time()
    pid = lab.pid("h3")
    proc = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h3")
    assert proc.returncode == 0, proc.stdout
    assert lab.pid("h3") == pid, "least disruptive first: a healthy service is not restarted"
    rec = lab.recoveries(since, lab.scratch_store)[-1]
    assert rec.target == "h3" and rec.outcome == "healed"
    assert rec.stages["action_done"]["details"]["action"] == "none"


def test_unhealthy_but_running_service_is_restarted(lab: Lab) -> None:
    url = lab.host("h4")["selfheal_health_url"].replace("/healthz", "/fault?healthy=0")
    pid = lab.pid("h4")
    since = time.time()
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).close()
    proc = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h4")
    assert proc.returncode == 0, proc.stdout
    assert lab.pid("h4") not in (None, pid)
    rec = lab.recoveries(since, lab.scratch_store)[-1]
    assert rec.stages["action_done"]["details"]["action"] == "restarted"
    assert rec.stages["action_done"]["details"]["prior_state"]["healthy"] is False
    store = Store(str(lab.scratch_store))
    try:
        finished = [e for e in store.audit_trail() if e["event"] == "finished"][-1]
    finally:
        store.close()
    evidence = finished["details"]["evidence"]
    assert evidence["action"] == "restarted" and evidence["prior_state"]["healthy"] is False
    assert evidence["verification"]["healthy"] is True, "the verification is on record with the action"


@pytest.fixture
def port_squatter(lab: Lab) -> Iterator[str]:
    """h1's demo service killed and its port held by another process, so it cannot come back."""
    host = lab.cfg.host("h1")
    lab.svc("h1", "kill")
    squatter = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, sys.executable, "-c",
         "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
         f"s.bind(('{host.address}', 8080)); s.listen(); time.sleep(600)"])
    wait_for("the squatter to hold the port", lambda: _port_open(host.address, 8080), 10)
    try:
        yield "h1"
    finally:
        squatter.kill()
        squatter.wait()
        lab.svc("h1", "start")


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def test_failed_remediation_escalates_with_the_evidence(lab: Lab, port_squatter: str, tmp_path: Path) -> None:
    since = time.time()
    seen = len(lab.notifications())
    proc = lab.playbook(PLAYBOOK, "-e", f"selfheal_target={port_squatter}", "-e", "selfheal_verify_timeout=3",
                        store=tmp_path / "store.db")
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "was not healed; escalated with evidence" in proc.stdout
    new = lab.notifications()[seen:]
    assert len(new) == 1, new
    body = new[0]["body"]
    assert isinstance(body, dict)
    assert body["target"] == port_squatter and body["severity"] == "critical"
    assert "is not healed after automatic remediation" in body["summary"]
    evidence = body["evidence"]
    assert evidence["diagnosis"]["running"] is False
    assert evidence["action"] == "started"
    assert evidence["failed_task"]
    rec = [r for r in lab.recoveries(since, tmp_path / "store.db") if r.target == port_squatter][-1]
    assert rec.outcome == "escalated"


def test_a_page_that_cannot_go_out_is_on_record_as_unpaged_for_the_watchdog(
        lab: Lab, port_squatter: str, tmp_path: Path) -> None:
    """The fix fails and the pager is unreachable too: the outcome says unpaged (not escalated), which the
    daemon's watchdog pages for by its own path, and the run fails saying so."""
    store = tmp_path / "store.db"
    proc = lab.playbook(PLAYBOOK, "-e", f"selfheal_target={port_squatter}", "-e", "selfheal_verify_timeout=3",
                        "-e", "selfheal_notify_url=http://127.0.0.1:9/escalations", store=store)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "on record as unpaged: the watchdog pages" in " ".join(proc.stdout.split()), proc.stdout[-3000:]
    with Store(str(store)) as s:
        # the escalate role's record of the page (mode deny, off the circuit) and the run's own outcome
        outcomes = sorted((o["target"], o["outcome"], o["mode"]) for o in s.outcomes("service_down"))
        assert outcomes == [(port_squatter, "unpaged", "auto"), (port_squatter, "unpaged", "deny")], outcomes
        assert s.run_states([o["incident_id"] for o in s.outcomes("service_down")], time.time()).popitem()[1][
            "outcome"] == "unpaged"


def test_the_lifecycle_in_check_mode_shows_the_plan_and_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    """--check on a stopped service: the decision and the plan are shown; the service stays down, no lease,
    no outcome, no page."""
    target, store = "h1", tmp_path / "store.db"
    lab.svc(target, "stop")
    try:
        seen = len(lab.notifications())
        proc = lab.playbook(PLAYBOOK, "-e", f"selfheal_target={target}", "--check", store=store)
        assert proc.returncode == 0, proc.stdout[-3000:]
        assert "Check mode | the plan, then verify; nothing was changed: restart" in proc.stdout
        assert "start demo on h1" in proc.stdout
        assert lab.pid(target) is None, "the service is still stopped"
        assert lab.notifications()[seen:] == []
        with Store(str(store)) as s:
            assert s.outcomes("service_down") == [] and s.leases([target]) == {} and s.audit_trail() == []
    finally:
        lab.svc(target, "start")


def test_an_unreachable_target_is_escalated_recorded_and_released(lab: Lab, tmp_path: Path) -> None:
    """SSH to the target fails (port 2 has no sshd): a human is paged, the outcome is on record, no lease stays."""
    store = tmp_path / "store.db"
    seen = len(lab.notifications())
    proc = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h2", "-e", "ansible_port=2", store=store, timeout=180)
    assert proc.returncode != 0, proc.stdout[-3000:]
    new = [n["body"] for n in lab.notifications()[seen:]]
    assert len(new) == 1 and isinstance(new[0], dict) and "is unreachable" in new[0]["summary"], new
    s = Store(str(store))
    try:
        outcomes = s.outcomes("service_down")
        assert [(o["target"], o["outcome"]) for o in outcomes] == [("h2", "escalated")]
        live = {t: lease for t, lease in s.leases(["h2"]).items() if lease[1] > time.time()}
        assert live == {}, "the lease was released"
    finally:
        s.close()


def test_probe_and_audit_modules_ad_hoc(lab: Lab, tmp_path: Path) -> None:
    ansible = str(Path(sys.executable).parent / "ansible")

    def adhoc(module: str, args: str, *extra: str) -> dict[str, object]:
        proc = subprocess.run([ansible, "localhost", "-m", module, "-a", args, *extra],
                              capture_output=True, text=True, check=False, timeout=120,
                              env={**lab.env, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                                   "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
        return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]

    healthy = adhoc("selfheal.core.probe", f"url={lab.host('h2')['selfheal_health_url']} timeout=5")
    assert healthy["healthy"] is True and healthy["status"] == 200 and healthy["changed"] is False
    dead = adhoc("selfheal.core.probe", "url=http://127.0.0.1:9/healthz timeout=1 interval=0.2")
    assert dead["failed"] is True and dead["healthy"] is False
    assert "not healthy after" in str(dead["msg"]) and "no answer" in str(dead["last_error"])

    prometheus = lab.vars["selfheal_prometheus_url"]
    seen_args = {"url": prometheus, "query": 'up{host="h2", service="demo"} == 1', "timeout": 10}
    seen = adhoc("selfheal.core.probe", json.dumps(seen_args))
    assert seen["healthy"] is True and '"host": "h2"' in str(seen["body"])
    unseen_args = {"url": prometheus, "query": 'up{host="nowhere"} == 1', "timeout": 1, "interval": 0.2}
    unseen = adhoc("selfheal.core.probe", json.dumps(unseen_args))
    assert unseen["failed"] is True and "PromQL verification" in str(unseen["msg"])
    assert "returned no series" in str(unseen["last_error"])

    held = adhoc("selfheal.core.probe", json.dumps({"url": lab.host("h2")["selfheal_health_url"], "hold": 2,
                                                    "interval": 0.5}))
    assert held["held"] is True and float(str(held["elapsed"])) >= 1.5 and int(str(held["attempts"])) >= 3, held
    broke = adhoc("selfheal.core.probe", json.dumps({"url": "http://127.0.0.1:9/healthz", "hold": 30,
                                                     "interval": 0.2, "healthy_streak": 2}))
    assert broke["failed"] is True and broke["held"] is False and float(str(broke["failed_after"])) < 5, broke
    assert "the fix did not hold" in str(broke["msg"])

    store = tmp_path / "audit.db"
    fault = {"store": str(store), "action": "audit", "holder": "chaos", "event": "fault_injected",
             "details": {"target": "h1", "summary": "by hand"}}
    dry = adhoc("selfheal.core.incident", json.dumps(fault), "--check")
    assert dry.get("failed") is not True and not store.exists(), dry
    wet = adhoc("selfheal.core.incident", json.dumps(fault))
    assert wet["changed"] is True, wet
    [stage] = lab.stages(0, store)
    assert (stage["stage"], stage["target"], stage["details"]["summary"]) == ("fault_injected", "h1", "by hand")
    # a chaos run records the time it took before the fault, which may be seconds before the record
    began = time.time() - 30
    late = adhoc("selfheal.core.incident", json.dumps({**fault, "acted_at": began,
                                                       "details": {"target": "h2", "summary": "began earlier"}}))
    assert late["changed"] is True, late
    at = {s["target"]: s["at"] for s in lab.stages(0, store)}
    assert abs(at["h2"] - began) < 0.01 and at["h1"] > at["h2"], at
    bad = adhoc("selfheal.core.incident", json.dumps({k: v for k, v in fault.items() if k != "event"}))
    assert bad["failed"] is True and "action is audit but all of the following are missing: event" in str(bad["msg"])


def test_the_guard_holds_back_a_second_run_during_the_cooldown(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    assert lab.svc("h3", "kill").returncode == 0
    first = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h3", store=store)
    assert first.returncode == 0, first.stdout
    assert "allowed: true" in first.stdout
    pid = lab.pid("h3")
    assert pid is not None
    pages = len(lab.notifications())
    second = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h3", store=store)
    assert second.returncode == 0, second.stdout
    out = " ".join(second.stdout.split())
    assert "h3: cooling down until" in out and "allowed: false" in out
    assert "decided again at" in out and len(lab.notifications()) == pages, \
        "held back only by the cooldown: no page, the watchdog decides it again when the cooldown ends"
    assert "skipping: no hosts matched" in second.stdout
    assert lab.pid("h3") == pid, "nothing was touched"
    s = Store(str(store))
    try:
        events = [e["event"] for e in s.audit_trail()]
        assert events == ["decided", "action_done", "verified_healthy", "finished", "decided"], events
        assert s.leases(["h3"])["h3"][1] == 0, "the first run released its lease"
    finally:
        s.close()


@pytest.fixture
def relapsing(lab: Lab) -> Iterator[str]:
    """h3's demo service crashes 3 s after every start (a fix that verifies and does not hold)."""
    relapse = lab.cfg.path("hosts", "h3", "demo.relapse")
    relapse.write_text("3\n")
    try:
        yield "h3"
    finally:
        relapse.unlink(missing_ok=True)
        lab.svc("h3", "restart")


def test_a_fix_that_does_not_hold_fails_then_the_target_flaps_once_and_is_left_alone(
        lab: Lab, relapsing: str, tmp_path: Path) -> None:
    catalog = yaml.safe_load(Path(lab.vars["selfheal_catalog"]).read_text())
    entry = next(t for t in catalog["incident_types"] if t["name"] == "service_down")
    entry.update(cooldown=1, escalation={"deadline": 60})
    entry["verification"] = {"timeout": 20, "hold": 8}
    (tmp_path / "catalog.yml").write_text(yaml.safe_dump(catalog))
    store = tmp_path / "store.db"
    run = ("-e", f"selfheal_target={relapsing}", "-e", f"selfheal_catalog={tmp_path / 'catalog.yml'}")
    pages = len(lab.notifications())
    assert lab.svc(relapsing, "kill").returncode == 0

    first = lab.playbook(PLAYBOOK, *run, store=store)
    assert first.returncode != 0 and "the fix did not hold" in first.stdout, first.stdout
    assert len(lab.notifications()) == pages, "one relapse is not paged: it is decided again after the cooldown"
    time.sleep(1.5)
    second = lab.playbook(PLAYBOOK, *run, store=store)
    assert second.returncode != 0 and "the fix did not hold" in second.stdout, second.stdout
    flaps = [p for p in lab.notifications()[pages:] if "flaps" in str(p["body"])]
    assert len(flaps) == 1 and len(lab.notifications()) == pages + 1, lab.notifications()[pages:]
    assert flaps[0]["body"]["target"] == relapsing

    time.sleep(1.5)
    third = lab.playbook(PLAYBOOK, *run, store=store)
    out = " ".join(third.stdout.split())
    assert "circuit open for this target" in out and "skipping: no hosts matched" in third.stdout, third.stdout
    s = Store(str(store))
    try:
        outcomes = [o["outcome"] for o in reversed(s.outcomes("service_down"))]
        assert outcomes == ["not_held", "escalated"], outcomes
        finished = [e["details"] for e in s.audit_trail() if e["event"] == "finished"]
        assert finished[-1]["relapse"]["flaps"] is True and finished[-1]["evidence"]["hold"]["held"] is False
        actions = [d["evidence"]["action"] for d in finished]
        assert actions == ["started", "started"], "two automatic restarts, none after the target flapped"
    finally:
        s.close()


def test_a_verification_whose_data_source_is_down_says_so_not_that_the_service_is(lab: Lab, tmp_path: Path) -> None:
    catalog = yaml.safe_load(Path(lab.vars["selfheal_catalog"]).read_text())
    entry = next(t for t in catalog["incident_types"] if t["name"] == "service_down")
    entry["verification"] = {**entry["verification"], "timeout": 3, "hold": 0}
    (tmp_path / "catalog.yml").write_text(yaml.safe_dump(catalog))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing answers there
    pages = len(lab.notifications())
    assert lab.svc("h2", "kill").returncode == 0
    run = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h2", "-e", f"selfheal_catalog={tmp_path / 'catalog.yml'}",
                       "-e", f"selfheal_prometheus_url={nowhere}", store=tmp_path / "store.db")
    assert run.returncode != 0, run.stdout
    [page] = lab.notifications()[pages:]
    summary = " ".join(str(page["body"]["summary"]).split())
    assert "service_down on h2 passed its own check after started" in summary, summary
    assert "Prometheus, the data source of its verification, could not be asked" in summary
    assert "is still down" not in summary
    assert lab.pid("h2") is not None, "the service itself was healed"


def test_a_type_that_opts_in_tells_after_a_heal_with_a_notice_not_a_page(lab: Lab, tmp_path: Path) -> None:
    catalog = yaml.safe_load(Path(lab.vars["selfheal_catalog"]).read_text())
    entry = next(t for t in catalog["incident_types"] if t["name"] == "service_down")
    entry["escalation"] = {**entry.get("escalation", {}), "notify_resolved": True}
    entry["verification"] = {**entry["verification"], "hold": 2}
    (tmp_path / "catalog.yml").write_text(yaml.safe_dump(catalog))
    pages = len(lab.notifications())
    assert lab.svc("h1", "kill").returncode == 0
    run = lab.playbook(PLAYBOOK, "-e", "selfheal_target=h1", "-e", f"selfheal_catalog={tmp_path / 'catalog.yml'}",
                       store=tmp_path / "store.db")
    assert run.returncode == 0, run.stdout
    [notice] = lab.notifications()[pages:]
    body = notice["body"]
    assert body["event_action"] == "notice" and body["severity"] == "info", body
    assert "service_down on h1 healed itself" in " ".join(str(body["summary"]).split())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_state(path: Path) -> dict[str, str]:
    return {"sha256": _sha256(path.read_bytes()), "mode": f"{stat.S_IMODE(path.stat().st_mode):04o}"}


def test_a_known_good_configuration_that_cannot_work_is_rolled_back_exactly_and_paged_once(
        lab: Lab, port_squatter: str, tmp_path: Path) -> None:
    """service_down's ladder on h1: a bad configuration, and its port held by another process. The restart
    fails (the configuration), the restore_config step puts the last known good one back and fails too (the
    port): its rollback puts the bad configuration back exactly, and one page goes out with the evidence."""
    target, store = port_squatter, tmp_path / "store.db"
    conf = Path(lab.host(target)["selfheal_service_configs"]["demo"])
    good = conf.read_bytes()
    # the last known good configuration, as an earlier fix that verified and held kept it
    with Store(str(store)) as s:
        s.record_outcome("earlier-heal", "service_down", target, "auto", "verified", time.time() - 3600,
                         known_good={"service:demo": {"config": {
                             "path": str(conf), **_file_state(conf), "owner": "root", "group": "root",
                             "size": len(good), "content": base64.b64encode(good).decode()}}})
    try:
        chaos = lab.playbook("selfheal.core.chaos.service_bad_config", "-e", f"selfheal_target={target}")
        assert chaos.returncode == 0, chaos.stdout[-2000:]
        bad = _file_state(conf)
        assert bad["sha256"] != _sha256(good) and bad["mode"] == "0600", "the chaos playbook changed the file"
        seen = len(lab.notifications())
        proc = lab.playbook(PLAYBOOK, "-e", f"selfheal_target={target}", "-e", "selfheal_verify_timeout=3",
                            store=store)
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert _file_state(conf) == bad, "the rollback put back exactly the configuration the step replaced"
        pages = [n["body"] for n in lab.notifications()[seen:]]
        assert len(pages) == 1, pages
        evidence = pages[0]["evidence"]
        assert [e.split(":")[0] for e in evidence["steps"]] == ["restart", "restore_config"], evidence["steps"]
        assert evidence["rollback"]["restored"] is True
        assert evidence["prior_state"]["config"]["sha256"] == bad["sha256"]
        assert "content" not in evidence["prior_state"]["config"], "a configuration's content is never paged"
        with Store(str(store)) as s:
            trail = json.dumps(s.audit_trail())
            assert base64.b64encode(conf.read_bytes()).decode() not in trail, "nor recorded in the audit trail"
            assert [o["outcome"] for o in s.outcomes("service_down") if o["incident_id"] != "earlier-heal"] == [
                "rolled_back"]
            finished = [e for e in s.audit_trail() if e["event"] == "finished"][-1]["details"]["evidence"]
            assert finished["rollback"]["restored"] is True and finished["step"] is None
            assert s.known_good([target])[target]["service:demo"]["config"]["sha256"] == _sha256(good)
    finally:
        conf.write_bytes(good)
        conf.chmod(0o644)


def test_an_approved_restart_of_a_hung_service_that_cannot_work_is_paged_once_with_its_diagnosis(
        lab: Lab, tmp_path: Path) -> None:
    """service_hung's failure path on h1: it answers 503 and a bad configuration waits for its next start
    (a deploy that only shows on restart). Approved, the restart is done after the diagnosis and fails to
    verify; a restart changes nothing to put back, so the configuration stays exactly as it was, the other
    hosts are untouched, and one page carries the diagnosis (thread dump, log lines)."""
    target, store = "h1", tmp_path / "store.db"
    host = lab.host(target)
    conf = Path(host["selfheal_service_configs"]["demo"])
    good = conf.read_bytes()
    others = {h.name: lab.pid(h.name) for h in lab.cfg.hosts if h.name != target}
    try:
        urllib.request.urlopen(urllib.request.Request(f"http://{host['ansible_host']}:8080/fault?healthy=0",
                                                      method="POST"), timeout=5).close()
        conf.write_text('{"greeting": "half an edit",\n')
        bad = _file_state(conf)
        seen = len(lab.notifications())
        signal = {"status": "firing", "labels": {"alertname": "ServiceHung"}}
        context = {"target": target, "service": "demo", "incident_id": "hung-approved-1",
                   "incident_type": "service_hung", "signal": signal}
        event = {"kind": "approval_granted", "approval": {"approver": "it-oncall", "reason": "restart it"},
                 "proposal": {"incident_id": "hung-approved-1", "targets": [target], "context": context}}
        proc = lab.playbook("selfheal.core.remediate", "-e", json.dumps({"ansible_eda": {"event": event}}),
                            "-e", "selfheal_verify_timeout=3", store=store)
        assert proc.returncode != 0, proc.stdout[-3000:]
        assert _file_state(conf) == bad, "a restart puts nothing back: the configuration is exactly as it was"
        assert {h: lab.pid(h) for h in others} == others, "only the approved target was touched"
        pages = [n["body"] for n in lab.notifications()[seen:]]
        assert len(pages) == 1, pages
        evidence = pages[0]["evidence"]
        assert evidence["diagnosis"]["healthy"] is False and evidence["action"] == "restarted"
        assert evidence["diagnosis"]["evidence"]["thread_dump"], "the thread dump taken before the restart"
        assert evidence["rollback"]["restored"] is False
        with Store(str(store)) as s:
            assert [o["outcome"] for o in s.outcomes("service_hung")] == ["escalated"]
            decided = [e for e in s.audit_trail("hung-approved-1") if e["event"] == "decided"]
            assert decided[0]["details"]["approval"]["approver"] == "it-oncall"
    finally:
        conf.write_bytes(good)
        conf.chmod(0o644)
        lab.svc(target, "restart")
