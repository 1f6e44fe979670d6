"""The service role by hand on the lab: its diagnosis of a hung service, and check mode."""
from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import Lab

PLAY = """
- hosts: {host}
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: selfheal.core.service
        tasks_from: diagnose
      vars:
        service_name: demo
    - ansible.builtin.copy:
        content: "{{{{ service_diagnosis | combine({{'plan': service_plan}}) | to_json }}}}"
        dest: "{out}"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
      changed_when: false  # the test's own record, not a change of the role's
    - ansible.builtin.include_role:
        name: selfheal.core.service
        tasks_from: remediate
      vars:
        service_name: demo
"""


def _run(lab: Lab, tmp_path: Path, host: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "diagnosis.json"
    return lab.play_facts(PLAY.format(host=host, out=out), out, *args)


def test_a_slow_service_is_diagnosed_with_a_thread_dump_its_log_and_connections(lab: Lab, tmp_path: Path) -> None:
    host = "h1"
    chaos = lab.playbook("selfheal.core.chaos.service_hang", "-e", f"selfheal_target={host}", "-e", "chaos_hang=slow")
    assert chaos.returncode == 0, chaos.stdout[-2000:]
    pid = lab.pid(host)
    diagnosis = _run(lab, tmp_path, host)[1]
    assert diagnosis["running"] is True and diagnosis["healthy"] is False and diagnosis["stopped"] is False
    evidence = diagnosis["evidence"]
    assert evidence["process"]["pid"] == pid and evidence["process"]["rss_bytes"] > 0
    dump = evidence["thread_dump"]
    assert dump["taken"] is True and any(line.startswith("Thread 0x") for line in dump["lines"]), dump
    assert any("do_GET" in line for line in dump["lines"]), "the dump shows the threads stuck serving"
    assert evidence["log_tail"] and any(c["state"] == "LISTEN" for c in evidence["connections"])
    assert "content" not in evidence["config"] and len(evidence["config"]["sha256"]) == 64
    assert lab.pid(host) not in (None, pid), "then it was restarted"


def test_check_mode_shows_the_plan_and_changes_nothing(lab: Lab, tmp_path: Path) -> None:
    host = "h1"  # the lab's command-based manager (its command does not run in check mode)
    assert lab.svc(host, "kill").returncode == 0
    try:
        proc, diagnosis = _run(lab, tmp_path, host, "--check")
        assert diagnosis["running"] is False and diagnosis["plan"] == f"start demo on {host}"
        assert lab.pid(host) is None, "check mode started nothing"
        assert "changed=0" in proc.stdout.split("PLAY RECAP")[-1], proc.stdout[-1500:]
    finally:
        lab.svc(host, "start")


def test_a_real_service_manager_restarts_it_through_debian_service(lab: Lab, tmp_path: Path) -> None:
    """h2's demo service is managed as a real one (the lab's inventory: selfheal_service_manager auto):
    service_facts reads it from `service --status-all` and ansible.builtin.service starts it through
    /etc/init.d/demo, an LSB init script; not the lab's command-based manager."""
    host = "h2"
    assert lab.host(host)["selfheal_service_manager"] == "auto"
    assert lab.svc(host, "kill").returncode == 0
    try:
        dry = _run(lab, tmp_path, host, "--check")[0]
        assert "changed=1" in dry.stdout.split("PLAY RECAP")[-1], "check mode reports the start it would do"
        assert lab.pid(host) is None, "check mode started nothing"
        proc, diagnosis = _run(lab, tmp_path, host)
        assert diagnosis["running"] is False, diagnosis
        assert "Remediate | start or restart via the service manager] ***\nchanged: [h2]" in proc.stdout
        assert "start or restart via the service command] ***\nskipping: [h2]" in proc.stdout
        assert lab.pid(host) is not None, "the init script started it in h2's namespace"
        status = subprocess.run(["ip", "netns", "exec", lab.cfg.host(host).netns, "service", "demo", "status"],
                                capture_output=True, text=True, check=False, timeout=60,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        assert status.returncode == 0 and '"running": true' in status.stdout, status.stdout + status.stderr
    finally:
        lab.svc(host, "start")
