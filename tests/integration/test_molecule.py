"""The molecule scenario of the collection runs green against the lab."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, Lab


def test_service_down_scenario(lab: Lab, tmp_path: Path) -> None:
    molecule = Path(sys.executable).parent / "molecule"
    proc = subprocess.run([str(molecule), "test", "-s", "service_down"], cwd=REPO / "extensions",
                          capture_output=True, text=True, check=False, timeout=600,
                          env={**lab.env, "SELFHEAL_LAB_INVENTORY": str(lab.inventory_path), "NO_COLOR": "1",
                               "SELFHEAL_SCRATCH_STORE": str(tmp_path / "store.db")})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for step in ("syntax", "converge", "verify"):
        assert f"{step}: Executed: Successful" in out, step
    assert lab.pid("h2") is not None
