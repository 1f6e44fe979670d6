"""The disk role on the lab's own small filesystems: check mode, the steps with nothing to reclaim, and
the failure path where nothing may be reclaimed (the data is under a protected path)."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Lab, tree_state

from ansible_collections.selfheal.core.plugins.module_utils.store import Store

PLAY = """
- hosts: {host}
  gather_facts: false
  vars:
    disk_protected: [data]
  tasks:
    - ansible.builtin.include_role:
        name: selfheal.core.disk
        tasks_from: diagnose
    - ansible.builtin.include_role:
        name: selfheal.core.disk
        tasks_from: remediate
      vars:
        disk_step: {step}
    - ansible.builtin.copy:
        content: "{{{{ {{'diagnosis': disk_diagnosis, 'plan': disk_plan, 'action': disk_action,
                       'prior_state': disk_prior_state}} | to_json }}}}"
        dest: "{out}"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
      changed_when: false  # the test's own record, not a change of the role's
"""


def _role(lab: Lab, tmp_path: Path, host: str, step: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / f"{step}.json"
    return lab.play_facts(PLAY.format(host=host, step=step, out=out), out, *args)


@pytest.fixture
def h1_disk(lab: Lab) -> Iterator[Path]:
    lab.empty_disk("h1")
    yield lab.disk("h1")
    lab.empty_disk("h1")


def test_check_mode_shows_the_plan_and_changes_nothing(lab: Lab, h1_disk: Path, tmp_path: Path) -> None:
    chaos = lab.playbook("selfheal.core.chaos.disk_fill", "-e", "selfheal_target=h1", "-e", "chaos_fill=logs")
    assert chaos.returncode == 0, chaos.stdout[-2000:]
    before = tree_state(h1_disk)
    proc, seen = _role(lab, tmp_path, "h1", "rotate_logs", "--check")
    assert tree_state(h1_disk) == before, "check mode changed nothing"
    assert "changed=1" in proc.stdout.split("PLAY RECAP")[-1], "check mode reports the change it would make"
    assert seen["diagnosis"]["over"] is True and seen["diagnosis"]["usage"]["percent"] >= 90
    log_bytes = seen["diagnosis"]["evidence"]["reclaimable"]["rotate_logs"]["bytes"]
    assert log_bytes > 0.85 * seen["diagnosis"]["usage"]["size"]
    assert f"reclaimable: rotate_logs {log_bytes / 1048576:.2f} MB; largest directories: {h1_disk}/log" in seen["plan"]
    step = seen["prior_state"]["steps"][0]
    assert step["check"] is True and [f["path"] for f in step["files"]] == [str(h1_disk / "log" / "app.log")]


def test_a_step_reclaims_on_its_filesystem_only_and_a_second_run_changes_nothing(
        lab: Lab, h1_disk: Path, tmp_path: Path) -> None:
    chaos = lab.playbook("selfheal.core.chaos.disk_fill", "-e", "selfheal_target=h1", "-e", "chaos_fill=tmp")
    assert chaos.returncode == 0, chaos.stdout[-2000:]
    before = tree_state(h1_disk)
    seen = _role(lab, tmp_path, "h1", "clean_tmp")[1]
    assert seen["action"] == "cleaned_tmp"
    after = tree_state(h1_disk)
    gone = sorted(set(before) - set(after))
    assert gone == [f"tmp/upload-{i}.tmp" for i in range(4)], "only the old temp files went"
    assert {k: v for k, v in before.items() if k not in gone} == after, "everything else is as it was"
    proc, again = _role(lab, tmp_path, "h1", "clean_tmp")
    assert again["action"] == "none" and "changed=0" in proc.stdout.split("PLAY RECAP")[-1], "idempotent"
    # the lab keeps no package cache nor journal on the host's own filesystem: nothing to reclaim there
    reclaimable = again["diagnosis"]["evidence"]["reclaimable"]
    assert reclaimable["clean_package_cache"]["found"] == 0
    assert "not on this filesystem" in reclaimable["clean_package_cache"]["why"]
    assert reclaimable["vacuum_journal"]["found"] == 0 and "journal" in reclaimable["vacuum_journal"]["why"]
    for step in ("clean_package_cache", "vacuum_journal"):
        proc, nothing = _role(lab, tmp_path, "h1", step)
        assert nothing["action"] == "none" and "changed=0" in proc.stdout.split("PLAY RECAP")[-1]


@pytest.fixture
def protected_full(lab: Lab) -> Iterator[Path]:
    """h2's filesystem filled to 95% with data under a protected path (nothing may reclaim it)."""
    lab.empty_disk("h2")
    try:
        chaos = lab.playbook("selfheal.core.chaos.disk_fill", "-e", "selfheal_target=h2", "-e", "chaos_fill=protected")
        assert chaos.returncode == 0, chaos.stdout[-2000:]
        yield lab.disk("h2")
    finally:
        lab.empty_disk("h2")


def test_nothing_reclaimable_pages_once_with_the_largest_directories_and_touches_nothing_protected(
        lab: Lab, protected_full: Path, tmp_path: Path) -> None:
    """The failure path: the filesystem is full of data under a protected path. No step may reclaim it;
    exactly one page names the largest directories; every file is as it was (checksums and modes)."""
    host, store, root = "h2", tmp_path / "store.db", protected_full
    (root / "log" / "fresh.log").write_text("a line\n")  # too small to rotate, too new to delete
    before = tree_state(root)
    seen = len(lab.notifications())
    since = time.time()
    proc = lab.playbook("selfheal.core.remediate", "-e", "selfheal_incident_type=disk_full",
                        "-e", f"selfheal_target={host}", "-e", f"selfheal_service={root}", store=store)
    assert proc.returncode != 0, "a remediation that could not heal fails"
    assert tree_state(root) == before, "every file, protected or not, is unchanged (checksums, modes)"
    mine = [n["body"] for n in lab.notifications()[seen:] if n["body"].get("target") == host]
    assert len(mine) == 1, f"exactly one page: {mine}"
    evidence = mine[0]["evidence"]
    assert f"{root}/data" in evidence["plan"] and "(protected)" in evidence["plan"], evidence["plan"]
    largest = evidence["diagnosis"]["evidence"]["largest"]["directories"]
    assert largest[0]["path"] == f"{root}/data" and largest[0]["protected"] is True
    with Store(str(store)) as s:
        outcome = [o for o in s.outcomes("disk_full") if o["target"] == host and o["at"] >= since]
    assert [o["outcome"] for o in outcome] == ["escalated"]


def test_a_reclaim_that_frees_too_little_is_recorded_explained_and_paged_once(
        lab: Lab, protected_full: Path, tmp_path: Path) -> None:
    """The failure path where a step acts: old temp files go, but the protected data keeps the disk over its
    threshold. Only those files went (checksums of everything else unchanged), the record holds the
    action with the files' prior state, the rollback says why nothing is put back, and one page goes out."""
    host, store, root = "h2", tmp_path / "store.db", protected_full
    old = [root / "tmp" / f"old-{i}.tmp" for i in range(3)]
    for path in old:
        path.write_bytes(b"\0" * 65536)
        os.utime(path, (time.time() - 30 * 86400, time.time() - 30 * 86400))
    before = {k: v for k, v in tree_state(root).items() if not k.startswith("tmp/old-")}
    seen = len(lab.notifications())
    since = time.time()
    proc = lab.playbook("selfheal.core.remediate", "-e", "selfheal_incident_type=disk_full",
                        "-e", f"selfheal_target={host}", "-e", f"selfheal_service={root}", store=store)
    assert proc.returncode != 0, "a remediation that could not heal fails"
    assert not any(p.exists() for p in old), "the old temp files were reclaimed"
    assert tree_state(root) == before, "nothing else changed (checksums, modes)"
    mine = [n["body"] for n in lab.notifications()[seen:] if n["body"].get("target") == host]
    assert len(mine) == 1, f"exactly one page: {mine}"
    evidence = mine[0]["evidence"]
    assert evidence["rollback"]["restored"] is False and "not put back" in evidence["rollback"]["why"]
    assert any(s.startswith("clean_tmp:") for s in evidence["steps"]), evidence["steps"]
    with Store(str(store)) as s:
        trail = [e for e in s.audit_trail() if e["at"] >= since - 1]
    acted = [e["details"] for e in trail if e["event"] == "action_done" and e["details"]["step"] == "clean_tmp"]
    assert len(acted) == 1, trail
    [step] = [st for st in acted[0]["prior_state"]["steps"] if st["step"] == "clean_tmp"]
    files = {f["path"]: f for f in step["files"]}
    assert set(files) == {str(p) for p in old} and all(f["mode"] == "0644" for f in files.values()), files
    failed = [e["details"] for e in trail if e["event"] == "step_failed"]
    assert [f.get("counted", True) for f in failed if f["step"] == "clean_tmp"] == [False], \
        "a cumulative ladder's step that made progress is not counted against it"
