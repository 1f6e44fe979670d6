"""The molecule scenario of the collection runs green against the lab."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Lab


@pytest.mark.parametrize(("scenario", "steps"), [
    ("service_down", ("syntax", "converge", "verify")),
    ("service", ("syntax", "prepare", "converge", "idempotence", "verify")),
    ("disk", ("syntax", "prepare", "converge", "idempotence", "verify")),
    ("postgres", ("syntax", "prepare", "converge", "idempotence", "verify", "cleanup")),
    ("memory", ("syntax", "prepare", "converge", "idempotence", "verify")),
])
def test_scenario(lab: Lab, tmp_path: Path, scenario: str, steps: tuple[str, ...]) -> None:
    molecule = Path(sys.executable).parent / "molecule"
    try:
        proc = subprocess.run([str(molecule), "test", "-s", scenario], cwd=REPO / "extensions",
                              capture_output=True, text=True, check=False, timeout=600,
                              env={**lab.env, "SELFHEAL_LAB_INVENTORY": str(lab.inventory_path), "NO_COLOR": "1",
                                   "SELFHEAL_SCRATCH_STORE": str(tmp_path / "store.db")})
        gone = not any((lab.disk("h1") / "tmp").glob("upload-*.tmp"))
        left = [b for b in lab.pg_backends("h4").values() if b["application"].startswith("chaos-")]
    finally:
        # a full disk or a leak left behind would be healed by the daemon in the e2e tests
        if scenario == "disk":
            lab.empty_disk("h1")
        if scenario == "postgres":
            lab.playbook("selfheal.core.chaos.pg_connections", "-e", "selfheal_target=h4", "-e", "chaos_conns=stop")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for step in steps:
        assert f"{step}: Executed: Successful" in out, step
    assert "already prepared" not in out, "prepare ran (the scenario forgets the last run's state)"
    if scenario == "disk":
        assert gone, "the old temp files are gone"
    elif scenario == "postgres":
        assert left == [], "cleanup ended the leaking client"
    else:
        assert lab.pid({"service": lab.cfg.hosts[0].name, "memory": "w01"}.get(scenario, "h2")) is not None
