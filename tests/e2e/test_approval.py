"""End to end on the lab: a propose-mode incident waits for a human.

Real parts only: the demo service made unhealthy through its own /fault
endpoint, Prometheus (ServiceHung), Alertmanager, ansible-rulebook
running rulebooks/self_healing.yml with both sources (selfheal.core.alertmanager
and selfheal.core.webhook), the remediation playbook over SSH, the approve
playbook a human would run, and the lab's notification sink.

The catalog runs service_hung in propose mode; the lab's inventory gives
proposals 20 seconds (selfheal_approval_timeout).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

from conftest import Lab, wait_for

from ansible_collections.selfheal.core.plugins.module_utils.signing import signed_headers
from ansible_collections.selfheal.core.plugins.module_utils.store import Store

BOUND = 120  # seconds for each wait; the lab proposes in about 10


def _fault(lab: Lab, host: str, healthy: bool) -> None:
    url = f"http://{lab.host(host)['ansible_host']}:8080/fault?healthy={1 if healthy else 0}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as resp:
        assert resp.status == 200


def _health(lab: Lab, host: str) -> int:
    try:
        with urllib.request.urlopen(lab.host(host)["selfheal_health_url"], timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _stages(lab: Lab, target: str, since: float, incident_id: str | None = None) -> list[dict[str, Any]]:
    return sorted((e for e in lab.stages(since) if e["target"] == target and float(e["at"]) >= since
                   and (incident_id is None or e.get("incident_id") == incident_id)), key=lambda e: e["at"])


def _stage(lab: Lab, target: str, since: float, stage: str, incident_id: str | None = None) -> dict[str, Any] | None:
    return next((e for e in _stages(lab, target, since, incident_id) if e["stage"] == stage), None)


def _outcomes(lab: Lab, incident_id: str) -> list[dict[str, Any]]:
    store = Store(str(lab.cfg.path("store.db")))
    try:
        return [o for o in store.outcomes("service_hung", 200) if o["incident_id"] == incident_id]
    finally:
        store.close()


def _proposed(lab: Lab, target: str, since: float) -> str:
    """Make the target unhealthy and wait for the daemon's proposal; its incident id."""
    _fault(lab, target, healthy=False)
    entry = wait_for(f"a proposal for {target}", lambda: _stage(lab, target, since, "proposed"), BOUND)
    return str(entry["incident_id"])


def _heal_and_settle(lab: Lab, hosts: tuple[str, ...], since: float) -> None:
    """Clean up: clear the faults, then give the daemon up to a minute to see every incident of this test
    resolve, so that the next test (or session) starts from settled state. Never fails: it is cleanup."""
    for host in hosts:
        _fault(lab, host, healthy=True)
    ids = {e["incident_id"] for host in hosts for e in _stages(lab, host, since) if e.get("incident_id")}
    log = lab.cfg.path("log", "rulebook.log")
    deadline = time.monotonic() + 60
    while ids and time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        ids = {i for i in ids if f"incident_resolved: service_hung {i}" not in text}
        time.sleep(0.5)


def _answer(lab: Lab, incident_id: str, decision: str, approver: str, reason: str = "") -> Any:
    answer = {"incident_id": incident_id, "decision": decision, "approver": approver, "reason": reason}
    return lab.playbook("selfheal.core.approve", "-e", json.dumps(answer))


def test_an_approved_proposal_is_remediated_and_verified(daemon: Lab) -> None:
    lab, target = daemon, "h1"
    lab.wait_until_free(target)
    since = time.time()
    try:
        incident_id = _proposed(lab, target, since)
        assert incident_id.startswith("service_hung-")
        pid = lab.pid(target)
        asked = wait_for("the human is asked", lambda: [n for n in lab.notifications(since)
                                                        if incident_id in n["body"]["summary"]], 30)
        assert "approval needed" in asked[0]["body"]["summary"]
        assert "selfheal.core.approve" in asked[0]["body"]["summary"]
        assert asked[0]["body"]["evidence"]["evidence"]["diagnosis"]["healthy"] is False

        # A forged approval (wrong secret) is refused and changes nothing.
        body = json.dumps({"incident_id": incident_id, "decision": "approve", "approver": "mallory"}).encode()
        forged = urllib.request.Request(f"{lab.vars['selfheal_approval_url']}/approvals", data=body, method="POST",
                                        headers={"Content-Type": "application/json",
                                                 **signed_headers("not-the-secret-0123456789", body, time.time())})
        try:
            urllib.request.urlopen(forged, timeout=5)
            raise AssertionError("a forged approval was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        time.sleep(2)
        assert _stage(lab, target, since, "approved") is None and lab.pid(target) == pid

        answer = _answer(lab, incident_id, "approve", "e2e-oncall", "checked the dashboard")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        healed = wait_for(f"{target} verified healthy",
                          lambda: _stage(lab, target, since, "verified_healthy", incident_id), BOUND)
        assert healed
        stages = [e["stage"] for e in _stages(lab, target, since, incident_id)]
        assert stages == ["alert_fired", "alert_received", "proposed", "approved", "remediation_started",
                          "action_done", "verified_healthy"], stages
        approved = _stage(lab, target, since, "approved", incident_id)
        assert approved is not None and approved["details"]["approval"]["approver"] == "e2e-oncall"
        assert _health(lab, target) == 200
        assert lab.pid(target) not in (None, pid), "the approved restart started a new process"
        outcomes = wait_for("the outcome on record", lambda: _outcomes(lab, incident_id), 30)
        assert [(o["outcome"], o["mode"]) for o in outcomes] == [("verified", "propose")]

        # The proposal was answered once: a second approval is refused with what happened.
        again = _answer(lab, incident_id, "approve", "e2e-oncall")
        assert again.returncode != 0 and "approved by e2e-oncall" in again.stdout
    finally:
        _heal_and_settle(lab, (target,), since)


def test_rejected_and_unanswered_proposals_are_recorded_escalated_and_change_nothing(daemon: Lab) -> None:
    lab = daemon
    rejected_host, silent_host = "h2", "h3"
    since = time.time()
    try:
        pids = {h: lab.pid(h) for h in (rejected_host, silent_host)}
        rejected_id = _proposed(lab, rejected_host, since)
        answer = _answer(lab, rejected_id, "reject", "e2e-oncall", "wait for the release")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        silent_id = _proposed(lab, silent_host, since)
        rejected = wait_for("the rejection on record",
                            lambda: _stage(lab, rejected_host, since, "rejected", rejected_id), BOUND)
        assert "rejected by e2e-oncall: wait for the release" in rejected["details"]["summary"]

        timed_out = wait_for("the timeout on record",
                             lambda: _stage(lab, silent_host, since, "approval_timed_out", silent_id), BOUND)
        proposed_at = float(_stage(lab, silent_host, since, "proposed", silent_id)["at"])  # type: ignore[index]
        waited = float(timed_out["at"]) - proposed_at
        assert waited >= lab.vars["selfheal_approval_timeout"] - 1, f"timed out after {waited:.1f}s only"

        for host, incident_id, outcome, why in ((rejected_host, rejected_id, "rejected", "rejected by e2e-oncall"),
                                                (silent_host, silent_id, "timed_out", "no decision within 20s")):
            assert wait_for(f"{host} escalated", lambda h=host, i=incident_id: _stage(lab, h, since, "escalated", i),
                            60)
            stages = [e["stage"] for e in _stages(lab, host, since, incident_id)]
            assert "remediation_started" not in stages and "action_done" not in stages, stages
            assert lab.pid(host) == pids[host], f"nothing was restarted on {host}"
            assert _health(lab, host) == 503, f"{host} is left as it was, for the human"
            pages = [n["body"] for n in lab.notifications(since) if why in n["body"]["summary"]]
            assert pages and pages[0]["evidence"]["proposal"]["incident_id"] == incident_id, why
            assert [o["outcome"] for o in _outcomes(lab, incident_id)] == [outcome]
    finally:
        _heal_and_settle(lab, (rejected_host, silent_host), since)


def test_a_frozen_service_is_diagnosed_first_and_killed_at_once_when_approved(daemon: Lab) -> None:
    """service_hung: SIGSTOP leaves the process alive and silent (the scrape times out: ServiceHung, not
    ServiceDown). The proposal carries the diagnosis; approved, the frozen process is killed at once (it
    cannot use a grace period) and started, and the record keeps the diagnosis with the action."""
    lab, target = daemon, "h2"
    lab.wait_until_free(target)
    since = time.time()
    pid = lab.pid(target)
    assert pid
    others = {h.name: lab.pid(h.name) for h in lab.cfg.hosts if h.name != target}
    try:
        chaos = lab.playbook("selfheal.core.chaos.service_hang", "-e", f"selfheal_target={target}",
                             "-e", "chaos_hang=stop")
        assert chaos.returncode == 0, chaos.stdout + chaos.stderr
        proposed = wait_for(f"a proposal for {target}", lambda: _stage(lab, target, since, "proposed"), BOUND)
        incident_id = str(proposed["incident_id"])
        assert incident_id.startswith("service_hung-"), incident_id
        asked = wait_for("the human is asked", lambda: [n for n in lab.notifications(since)
                                                        if incident_id in n["body"]["summary"]], 30)
        diagnosis = asked[0]["body"]["evidence"]["evidence"]["diagnosis"]
        assert diagnosis["stopped"] is True and diagnosis["evidence"]["process"]["state"] == "T"
        assert "kill (stopped" in asked[0]["body"]["evidence"]["summary"]

        answer = _answer(lab, incident_id, "approve", "e2e-oncall", "frozen, restart it")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert wait_for(f"{target} verified healthy",
                        lambda: _stage(lab, target, since, "verified_healthy", incident_id), BOUND)
        assert lab.pid(target) not in (None, pid) and _health(lab, target) == 200
        assert {h: lab.pid(h) for h in others} == others, "only the frozen target was touched"
        finished = wait_for("the outcome on record", lambda: next(
            (e["details"]["evidence"] for e in lab.audit_trail(incident_id) if e["event"] == "finished"), None), 30)
        assert finished["action"] == "killed_and_started"
        kept = finished["diagnosis"]["evidence"]
        assert kept["process"]["pid"] == pid and kept["process"]["stopped"] is True
        assert kept["log_tail"], "the last log lines are kept in the record"
        assert kept["thread_dump"]["taken"] is False and "stopped" in kept["thread_dump"]["why"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a failed test leaves no frozen process behind
        _heal_and_settle(lab, (target,), since)
