"""End to end on the lab: crash a service, watch the daemon heal it.

Real parts only: the demo service in a network namespace, Prometheus,
Alertmanager, ansible-rulebook running rulebooks/self_healing.yml with the
selfheal.core.alertmanager source, and the remediation playbook over SSH.
"""
from __future__ import annotations

import base64
import hashlib
import stat
import time
import urllib.request
from pathlib import Path
from typing import Any

from conftest import Lab, wait_for

from ansible_collections.selfheal.core.plugins.module_utils import timeline
from ansible_collections.selfheal.core.plugins.module_utils.store import Store

RECOVERY_BOUND = 90  # seconds; the lab heals in about 10, CI machines can be slow


def _recovery(lab: Lab, target: str, since: float) -> timeline.Recovery | None:
    for rec in lab.recoveries(since):
        fault = rec.at("fault_injected")
        if rec.target == target and fault is not None and fault >= since and rec.outcome != "open":
            return rec
    return None


def test_crashed_service_is_healed_verified_and_on_record(daemon: Lab) -> None:
    lab, target = daemon, "h2"
    lab.wait_until_free(target)
    others = {h.name: lab.pid(h.name) for h in lab.cfg.hosts if h.name != target}
    assert all(others.values()), f"every other demo service runs before the test: {others}"
    before = lab.pid(target)
    assert before

    since = time.time()
    chaos = lab.playbook("selfheal.core.chaos.service_crash", "-e", f"selfheal_target={target}")
    assert chaos.returncode == 0, chaos.stdout + chaos.stderr
    assert lab.pid(target) is None, "the chaos playbook killed the service"

    rec = wait_for(f"recovery of {target}", lambda: _recovery(lab, target, since), RECOVERY_BOUND)
    assert rec.outcome == "healed", timeline.render(rec)
    assert rec.complete, f"timeline is missing stages:\n{timeline.render(rec)}"
    stages = [e["stage"] for e in sorted(rec.stages.values(), key=lambda e: e["at"])]
    assert stages == ["fault_injected", "alert_fired", "alert_received", "remediation_started", "action_done",
                      "verified_healthy"]
    phases = rec.phases()
    assert all(v is not None and v >= 0 for v in phases.values()), phases
    assert phases["time_to_recovery"] is not None and phases["time_to_recovery"] < RECOVERY_BOUND
    assert rec.stages["action_done"]["details"]["action"] == "started"
    assert rec.stages["action_done"]["details"]["prior_state"]["running"] is False

    after = lab.pid(target)
    assert after and after != before, "a new process serves the target"
    with urllib.request.urlopen(lab.host(target)["selfheal_health_url"], timeout=5) as resp:
        assert resp.status == 200
    assert {name: lab.pid(name) for name in others} == others, "no other host was touched"


def test_resolved_alert_triggers_no_action(daemon: Lab) -> None:
    lab, target = daemon, "h3"
    lab.wait_until_free(target)
    log = lab.cfg.path("log", "rulebook.log")
    log_start = log.stat().st_size
    since = time.time()
    chaos = lab.playbook("selfheal.core.chaos.service_crash", "-e", f"selfheal_target={target}")
    assert chaos.returncode == 0, chaos.stdout + chaos.stderr
    rec = wait_for(f"recovery of {target}", lambda: _recovery(lab, target, since), RECOVERY_BOUND)
    assert rec.outcome == "healed"
    healed_at = rec.at("verified_healthy")
    pid = lab.pid(target)
    # Alertmanager sends the resolved notification within its group interval (5 s in the lab);
    # the correlator turns it into incident_resolved, which the rulebook only logs.
    resolved_seen = wait_for(
        "the resolved notification in the daemon's log",
        lambda: "incident_resolved: service_down" in log.read_bytes()[log_start:].decode(errors="replace"),
        60,
    )
    assert resolved_seen
    time.sleep(3)
    later = [e for e in lab.stages(healed_at) if e["target"] == target and e["at"] > healed_at]
    assert later == [], f"nothing may run for {target} after it healed: {later}"
    assert lab.pid(target) == pid


def _known_good(lab: Lab, target: str) -> dict[str, Any] | None:
    with Store(str(lab.cfg.path("store.db"))) as store:
        return store.known_good([target]).get(target, {}).get("service:demo")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_service_that_dies_again_gets_its_last_known_good_configuration_back(daemon: Lab) -> None:
    """service_down's second step: a bad configuration lands and the service crashes; the restart cannot
    bring it back, so the configuration it last ran healthy with (kept when a fix held) goes back."""
    lab, target = daemon, "h3"
    conf = Path(lab.host(target)["selfheal_service_configs"]["demo"])
    if _known_good(lab, target) is None:  # a first heal that holds keeps the last known good configuration
        lab.wait_until_free(target)
        since = time.time()
        assert lab.playbook("selfheal.core.chaos.service_crash", "-e", f"selfheal_target={target}").returncode == 0
        wait_for(f"recovery of {target}", lambda: _recovery(lab, target, since), RECOVERY_BOUND)
        wait_for("the last known good configuration", lambda: _known_good(lab, target), 30)
    good = _known_good(lab, target)
    assert good is not None and good["config"]["sha256"] == _sha256(conf), "what runs now is the known good"
    others = {h.name: lab.pid(h.name) for h in lab.cfg.hosts if h.name != target}
    lab.wait_until_free(target)
    since = time.time()
    try:
        chaos = lab.playbook("selfheal.core.chaos.service_bad_config", "-e", f"selfheal_target={target}")
        assert chaos.returncode == 0, chaos.stdout + chaos.stderr
        bad = _sha256(conf)
        assert bad != good["config"]["sha256"] and lab.pid(target) is None

        rec = wait_for(f"recovery of {target}", lambda: _recovery(lab, target, since), RECOVERY_BOUND)
        assert rec.outcome == "healed", timeline.render(rec)
        assert _sha256(conf) == good["config"]["sha256"], "the last known good configuration is back"
        assert f"{stat.S_IMODE(conf.stat().st_mode):04o}" == good["config"]["mode"] == "0644"
        with urllib.request.urlopen(lab.host(target)["selfheal_health_url"], timeout=5) as resp:
            assert resp.status == 200
        assert {name: lab.pid(name) for name in others} == others, "no other host was touched"

        incident_id = rec.stages["verified_healthy"]["incident_id"]
        decided = [e for e in lab.audit_trail(incident_id) if e["event"] == "decided"]
        assert decided and decided[0]["details"]["decision"]["allowed"] is True
        evidence = wait_for("the outcome on record", lambda: next(
            (e["details"]["evidence"] for e in lab.audit_trail(incident_id) if e["event"] == "finished"), None), 30)
        assert evidence["step"] == "restore_config"
        assert evidence["failed_steps"][0].startswith("restart:"), evidence["failed_steps"]
        assert evidence["action"] == "restored_config"
        assert evidence["prior_state"]["config"]["sha256"] == bad, "the state before the step is on record"
        assert evidence["verification"]["healthy"] is True
    finally:
        if _sha256(conf) != good["config"]["sha256"]:  # leave the host as the test found it
            conf.write_bytes(base64.b64decode(good["config"]["content"]))
            conf.chmod(0o644)
            lab.svc(target, "start")
