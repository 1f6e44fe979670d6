"""The lifecycle's rolling restart of the fleet (memory_leak) beside a plain `serial` playbook, in one run.

For each run, on the lab's fleet (w01.., behind the web host's nginx):

  1. every fleet host leaks (its fault endpoint) until each is over the catalog's limit;
  2. the lifecycle heals them by hand: selfheal.core.remediate -e selfheal_incident_type=memory_leak
     -e selfheal_targets=<the fleet>, on a scratch store (drain, restart, verify, put back, per batch
     of the blast radius, with the guard, the diagnosis and the record);
  3. bench/plain_rolling_restart.yml does the same drain, restart, check and re-add per host, in the
     same batches, and nothing else.

The load generator sends requests through nginx during both. It prints each wall time, the ratio
(judged against 1.3x), the most hosts out of the pool at once (from the lifecycle's action records)
beside the batch size, and the requests that failed during each. The rulebook daemon would heal the
leak itself: the bench stops it while it runs, and starts it again after when it was running.

  python bench/rollout.py [--runs 2] [--rate 40]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / ".build" / "collections"))

import labctl  # noqa: E402
import loadgen  # noqa: E402

from ansible_collections.selfheal.core.plugins.module_utils import timeline  # noqa: E402
from ansible_collections.selfheal.core.plugins.module_utils.store import Store  # noqa: E402

LIMIT = 100663296  # the catalog's memory_leak limit_bytes
RATIO = 1.3


def _memory(host: labctl.Host) -> int:
    with urllib.request.urlopen(f"http://{host.address}:{labctl.DEMO_PORT}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("demo_memory_bytes ")))


def _leak(fleet: list[labctl.Host], timeout: float = 60) -> None:
    for host in fleet:
        req = urllib.request.Request(f"http://{host.address}:{labctl.DEMO_PORT}/fault?leak=32", method="POST")
        urllib.request.urlopen(req, timeout=5).close()
    deadline = time.monotonic() + timeout
    while not all(_memory(h) > LIMIT for h in fleet):
        if time.monotonic() > deadline:
            sys.exit("bench: the fleet did not leak past the limit within 60 s")
        time.sleep(0.5)


def _timed(cmd: list[str], env: dict[str, str], load_url: str, rate: float) -> tuple[float, dict[str, Any]]:
    """Run `cmd` with the load generator on; its wall time and the load's counts."""
    stop, counts = threading.Event(), {}
    thread = threading.Thread(target=lambda: counts.update(loadgen.run(load_url, rate, None, None, stop=stop)))
    thread.start()
    time.sleep(1)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=900)
    took = time.monotonic() - start
    time.sleep(1)
    stop.set()
    thread.join(30)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[:4])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return took, counts


def _out_at_once(store: Path, incident_id: str) -> tuple[int, int]:
    """The most fleet hosts out of the pool at the same moment, from the action records; the batch size."""
    with Store(str(store)) as s:
        trail = s.audit_trail(incident_id)
    out = {e["details"]["target"]: float(e["details"]["prior_state"]["balancer"]["at"])
           for e in trail if e["event"] == "action_done"}
    back = {t: float(e["details"]["evidence"]["verification"]["back_in_pool"])
            for e in trail if e["event"] == "finished" for t in e["details"].get("targets") or []}
    batch = next(int(e["details"]["decision"]["serial"]) for e in trail if e["event"] == "decided")
    if set(out) != set(back):
        sys.exit(f"bench: not every drained host is on record as back in the pool: {sorted(set(out) ^ set(back))}")
    return timeline.most_at_once((out[t], back[t]) for t in out), batch


def _failed(counts: dict[str, Any]) -> int:
    return sum(counts["failed"].values()) + sum(n for code, n in counts["answered"].items() if code != "200")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=40, help="requests a second through nginx")
    args = parser.parse_args()
    cfg = labctl.load_config()
    fleet = [h for h in cfg.hosts if "fleet" in h.groups]
    web = next((h for h in cfg.hosts if "nginx" in h.services), None)
    if len(fleet) < 2 or web is None:
        sys.exit("bench: the lab has no fleet behind nginx: bring it up with SELFHEAL_LAB_FLEET=10 (the default)")
    env = {**os.environ, **labctl.daemon_env(cfg)}
    playbook = str(REPO / ".venv" / "bin" / "ansible-playbook")
    inventory = str(cfg.path("inventory.yml"))
    load_url = f"http://{web.address}:{labctl.NGINX_PORT}/"
    daemon_was_up = labctl.daemon_pid(cfg) is not None
    if daemon_was_up:
        print("(the rulebook daemon is stopped while the bench runs: it would heal the leak itself)", flush=True)
        labctl.daemon(cfg, "stop")
    rows: list[dict[str, Any]] = []
    try:
        print(f"rolling restart of {len(fleet)} fleet hosts; {args.rate:.0f} requests/s through nginx", flush=True)
        print(f"{'run':>3} {'lifecycle':>10} {'plain':>8} {'ratio':>6} {'out at once':>12} {'failed':>12}", flush=True)
        for run in range(1, args.runs + 1):
            _leak(fleet)
            with tempfile.TemporaryDirectory() as tmp:
                store, iid = Path(tmp) / "store.db", f"bench-rollout-{run}-{int(time.time())}"
                life, life_load = _timed(
                    [playbook, "-i", inventory, "selfheal.core.remediate", "-e", "selfheal_incident_type=memory_leak",
                     "-e", f"selfheal_targets={','.join(h.name for h in fleet)}", "-e", f"selfheal_store={store}",
                     "-e", f"selfheal_incident_id={iid}"], env, load_url, args.rate)
                most, batch = _out_at_once(store, iid)
            plain, plain_load = _timed([playbook, "-i", inventory, str(REPO / "bench" / "plain_rolling_restart.yml"),
                                        "-e", f"batch={batch}"], env, load_url, args.rate)
            row: dict[str, Any] = {"lifecycle": life, "plain": plain, "most": most, "batch": batch,
                                   "failed": (_failed(life_load), _failed(plain_load)),
                                   "sent": (life_load["sent"], plain_load["sent"])}
            rows.append(row)
            print(f"{run:>3} {life:>9.1f}s {plain:>7.1f}s {life / plain:>5.2f}x {most:>5} of {batch:<4} "
                  f"{row['failed'][0]:>5} / {row['failed'][1]:<5}", flush=True)
    finally:
        if daemon_was_up:
            labctl.daemon(cfg, "start")
    life = statistics.median(r["lifecycle"] for r in rows)
    plain = statistics.median(r["plain"] for r in rows)
    ratio = life / plain
    print(json.dumps({"lifecycle_median_s": round(life, 2), "plain_median_s": round(plain, 2),
                      "ratio": round(ratio, 2)}))
    print(f"\nsummary: the lifecycle's rolling restart of {len(fleet)} hosts {life:.1f}s (median) vs the plain "
          f"serial playbook {plain:.1f}s: {ratio:.2f}x (target <= {RATIO}x: "
          f"{'meets' if ratio <= RATIO else 'MISSES'}); at most {max(r['most'] for r in rows)} hosts out of the "
          f"pool at once (batch {rows[0]['batch']}); failed requests {sum(r['failed'][0] for r in rows)} of "
          f"{sum(r['sent'][0] for r in rows)} (lifecycle), {sum(r['failed'][1] for r in rows)} of "
          f"{sum(r['sent'][1] for r in rows)} (plain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
