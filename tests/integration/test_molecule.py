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
])
def test_scenario(lab: Lab, tmp_path: Path, scenario: str, steps: tuple[str, ...]) -> None:
    molecule = Path(sys.executable).parent / "molecule"
    proc = subprocess.run([str(molecule), "test", "-s", scenario], cwd=REPO / "extensions",
                          capture_output=True, text=True, check=False, timeout=600,
                          env={**lab.env, "SELFHEAL_LAB_INVENTORY": str(lab.inventory_path), "NO_COLOR": "1",
                               "SELFHEAL_SCRATCH_STORE": str(tmp_path / "store.db")})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for step in steps:
        assert f"{step}: Executed: Successful" in out, step
    assert lab.pid(lab.cfg.hosts[0].name if scenario == "service" else "h2") is not None
