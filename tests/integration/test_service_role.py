"""The service role by hand on the lab: its diagnosis of a hung service, and check mode."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import VENV_BIN, Lab

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
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(host=host, out=out))
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(lab.inventory_path), str(play), *args],
                          capture_output=True, text=True, check=False, env=lab.env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc, json.loads(out.read_text())


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
    host = "h2"
    assert lab.svc(host, "kill").returncode == 0
    try:
        proc, diagnosis = _run(lab, tmp_path, host, "--check")
        assert diagnosis["running"] is False and diagnosis["plan"] == f"start demo on {host}"
        assert lab.pid(host) is None, "check mode started nothing"
        assert "changed=0" in proc.stdout.split("PLAY RECAP")[-1], proc.stdout[-1500:]
    finally:
        lab.svc(host, "start")
