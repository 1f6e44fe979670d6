"""The short version of bench/mttr.py (`make bench` runs it with more runs): one run of service_down and
of conn_pool_exhausted through the daemon, the figures printed and judged against their targets."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, Lab


def test_mttr_bench_measures_each_type_against_its_floor_and_target(daemon: Lab) -> None:
    for host in ("h1", "h4"):
        daemon.wait_until_free(host)
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "mttr.py"), "--runs", "1",
                           "--types", "service_down,conn_pool_exhausted"],
                          capture_output=True, text=True, check=False, env=daemon.env, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for itype in ("service_down", "conn_pool_exhausted"):
        line = next(x for x in proc.stdout.splitlines() if x.startswith(itype) and "median" in x)
        median = float(re.search(r"median +([\d.]+)s", line).group(1))  # type: ignore[union-attr]
        detect = float(re.search(r"detect ([\d.]+)s", line).group(1))  # type: ignore[union-attr]
        low = float(re.search(r"floor ([\d.]+)-", line).group(1))  # type: ignore[union-attr]
        assert 0 < detect <= median and low > 0, line
        assert "target <=" in line and ("meets" in line or "MISSES" in line), line
