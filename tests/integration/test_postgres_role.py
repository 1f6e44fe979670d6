"""The postgres role (conn_pool_exhausted) against the lab's real PostgreSQL on h4: a leaking client made
by the chaos playbook, pg_stat_activity read before and after, check mode, the cap per pass, the
backends that must survive, and the failure path where the cause is not a leak."""
from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Lab, wait_for

from ansible_collections.selfheal.core.plugins.module_utils.store import Store

HOST = "h4"
PLAY = """
- hosts: {host}
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: selfheal.core.postgres
    - ansible.builtin.copy:
        content: "{{{{ {{'diagnosis': postgres_diagnosis, 'plan': postgres_plan, 'action': postgres_action,
                       'prior_state': postgres_prior_state}} | to_json }}}}"
        dest: "{out}"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
      changed_when: false  # the test's own record, not a change of the role's
"""


def _role(lab: Lab, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "result.json"
    return lab.play_facts(PLAY.format(host=HOST, out=out), out, *args)


def _by_app(backends: dict[int, dict[str, Any]], app: str) -> set[int]:
    return {pid for pid, b in backends.items() if b["application"] == app}


@pytest.fixture
def leak(lab: Lab) -> Iterator[dict[str, Any]]:
    """22 leaked idle sessions, one active and one idle in transaction on h4, old enough (the lab: 5 s)."""
    opened = lab.playbook("selfheal.core.chaos.pg_connections", "-e", f"selfheal_target={HOST}")
    assert opened.returncode == 0, opened.stdout[-3000:] + opened.stderr
    time.sleep(lab.host(HOST)["selfheal_postgres_idle_age"] + 1)
    backends = lab.pg_backends(HOST)
    assert len(_by_app(backends, "chaos-idle")) == 22, backends
    yield backends
    lab.playbook("selfheal.core.chaos.pg_connections", "-e", f"selfheal_target={HOST}", "-e", "chaos_conns=stop")
    wait_for("the chaos sessions to end", lambda: not any(
        b["application"].startswith("chaos-") for b in lab.pg_backends(HOST).values()), 30)


def test_check_mode_shows_the_plan_and_terminates_nothing(lab: Lab, leak: dict[int, Any], tmp_path: Path) -> None:
    proc, got = _role(lab, tmp_path, "--check")
    assert "changed=1" in proc.stdout, "check mode reports the change it would make"
    assert got["diagnosis"]["cause"] == "leaked_idle"
    assert "Would terminate at most 4 idle connection(s) per pass" in got["plan"]
    assert set(lab.pg_backends(HOST)) >= set(leak), "no backend was terminated"


def test_only_old_idle_backends_go_at_most_15_percent_per_pass_and_a_second_run_changes_nothing(
        lab: Lab, leak: dict[int, Any], tmp_path: Path) -> None:
    keep = _by_app(leak, "chaos-active") | _by_app(leak, "chaos-in_transaction")
    assert len(keep) == 2 and {leak[p]["state"] for p in keep} == {"active", "idle in transaction"}
    got = _role(lab, tmp_path)[1]
    after = lab.pg_backends(HOST)
    limit = got["diagnosis"]["usage"]["max_connections"]
    cap = math.floor(limit * 0.15)
    passes = got["prior_state"]["passes"]
    terminated = {b["pid"] for p in passes for b in p["terminated"]}
    print(f"conn_pool_exhausted: {len(leak)} -> {len(after)} backends of {limit} in {len(passes)} pass(es) of at "
          f"most {cap}: {[len(p['terminated']) for p in passes]} terminated")
    assert got["action"] == "terminated_idle"
    assert all(0 < len(p["terminated"]) <= cap for p in passes), passes
    assert terminated <= _by_app(leak, "chaos-idle"), "only idle backends were terminated"
    assert keep <= set(after), "the active backend and the one in a transaction survive (their pids)"
    assert not terminated & set(after), "what was terminated is gone from pg_stat_activity"
    assert len(set(leak) - set(after)) == len(terminated), "nothing else was terminated"
    assert 100.0 * len(after) / limit < 60, "utilization is below the target"
    # what the record says is what pg_stat_activity shows (give or take a health check's connection)
    assert abs(passes[-1]["usage_after"]["used"] - len(after)) <= 1, (passes[-1]["usage_after"], after)

    again, second = _role(lab, tmp_path)
    assert "changed=0" in again.stdout and second["action"] == "none", "a second run changes nothing"
    assert set(lab.pg_backends(HOST)) >= set(after) - terminated


def test_a_spike_is_not_fixed_by_terminating_anything_and_pages_once(lab: Lab, tmp_path: Path) -> None:
    """The same connections, but young (idle age 3600 s): not a leak. The lifecycle refuses the step and
    pages a human once with the diagnosis; pg_stat_activity is as it was."""
    opened = lab.playbook("selfheal.core.chaos.pg_connections", "-e", f"selfheal_target={HOST}")
    assert opened.returncode == 0, opened.stdout[-3000:]
    try:
        before = lab.pg_backends(HOST)
        seen = len(lab.notifications())
        store = tmp_path / "store.db"
        proc = lab.playbook("selfheal.core.remediate", "-e", f"selfheal_target={HOST}",
                            "-e", "selfheal_service=postgres", "-e", "selfheal_incident_type=conn_pool_exhausted",
                            "-e", "selfheal_postgres_idle_age=3600", store=store)
        assert proc.returncode != 0, proc.stdout[-3000:]
        pages = [n["body"] for n in lab.notifications()[seen:] if n["body"].get("target") == HOST]
        assert len(pages) == 1, pages
        assert "not terminating anything, the cause is traffic_spike" in pages[0]["summary"]
        assert pages[0]["evidence"]["diagnosis"]["cause"] == "traffic_spike"
        assert set(lab.pg_backends(HOST)) >= set(before), "no backend was terminated"
        with Store(str(store)) as s:
            assert [o["outcome"] for o in s.outcomes("conn_pool_exhausted")] == ["escalated"]
    finally:
        lab.playbook("selfheal.core.chaos.pg_connections", "-e", f"selfheal_target={HOST}", "-e", "chaos_conns=stop")


def test_a_pass_that_terminates_too_little_is_recorded_and_paged_once(
        lab: Lab, leak: dict[int, Any], tmp_path: Path) -> None:
    """The failure path where the step acts: one pass only (postgres_passes=1) ends 4 of the 22 leaked
    sessions, which leaves the pool over its target. No more than 15% went, the active backend and the
    one in a transaction survive, the record holds the pass with the counts before, the rollback says
    why nothing is reopened, and one page goes out."""
    keep = _by_app(leak, "chaos-active") | _by_app(leak, "chaos-in_transaction")
    seen = len(lab.notifications())
    store = tmp_path / "store.db"
    proc = lab.playbook("selfheal.core.remediate", "-e", f"selfheal_target={HOST}", "-e", "selfheal_service=postgres",
                        "-e", "selfheal_incident_type=conn_pool_exhausted", "-e", "postgres_passes=1", store=store)
    assert proc.returncode != 0, proc.stdout[-3000:]
    after = lab.pg_backends(HOST)
    gone = set(leak) - set(after)
    assert 0 < len(gone) <= math.floor(30 * 0.15) and gone <= _by_app(leak, "chaos-idle"), gone
    assert keep <= set(after), "work in flight survives (its pids)"
    pages = [n["body"] for n in lab.notifications()[seen:] if n["body"].get("target") == HOST]
    assert len(pages) == 1, pages
    evidence = pages[0]["evidence"]
    assert evidence["rollback"]["restored"] is False and "not reopened" in evidence["rollback"]["why"]
    with Store(str(store)) as s:
        assert [o["outcome"] for o in s.outcomes("conn_pool_exhausted")] == ["escalated"]
        acted = [e["details"] for e in s.audit_trail() if e["event"] == "action_done"]
    assert len(acted) == 1 and acted[0]["action"] == "terminated_idle", acted
    [first] = acted[0]["prior_state"]["passes"]
    assert first["usage_before"]["by_state"]["idle"] >= 22 and len(first["terminated"]) == len(gone)
