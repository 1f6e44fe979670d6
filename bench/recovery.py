"""Time to recovery of the service-down scenario, split into its phases.

Runs the scenario RUNS times on the lab (the daemon must be up: `make bench`
starts both): crash the demo service on a host, wait until the timeline shows
it verified healthy, and read the phases from the timeline:

  detect   fault injected -> alert received by the daemon
  decide   alert received -> remediation playbook started
  act      remediation started -> action done (service started)
  verify   action done -> verified healthy over HTTP

Prints every run and the median of each phase.
  python bench/recovery.py [--runs 5] [--timeout 120]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / ".build" / "collections"))

import demo  # noqa: E402 (the lab's demo: crash and wait_recovery)
import labctl  # noqa: E402

from ansible_collections.selfheal.core.plugins.module_utils import timeline  # noqa: E402

PHASES = ("detect", "decide", "act", "verify", "time_to_recovery")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120, help="seconds one recovery may take")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    cfg = labctl.load_config()
    if labctl.daemon_pid(cfg) is None:
        sys.exit("bench: the rulebook daemon is not running: run make daemon-up (make bench does)")
    inventory = demo.lab_inventory(Path(cfg.lab_dir))
    path = inventory["all"]["vars"]["selfheal_timeline_path"]
    hosts = [h.name for h in cfg.hosts]
    results: list[dict[str, float | None]] = []
    print(f"{'run':>3} {'host':<5} " + " ".join(f"{p:>16}" for p in PHASES), flush=True)
    for run in range(1, args.runs + 1):
        target = demo.pick_target(Path(cfg.lab_dir), hosts, hosts[(run - 1) % len(hosts)])
        since = time.time()
        demo.crash(Path(cfg.lab_dir) / "inventory.yml", target, "demo")
        rec = demo.wait_recovery(path, target, since, args.timeout, quiet=True)
        if rec is None or rec.outcome != "healed":
            print(f"{run:>3} {target:<5} not healed within {args.timeout:.0f}s"
                  + (f"\n{timeline.render(rec)}" if rec else ""), flush=True)
            return 1
        phases = rec.phases()
        results.append(phases)
        print(f"{run:>3} {target:<5} " + " ".join(f"{phases[p] or 0:>15.2f}s" for p in PHASES), flush=True)
        time.sleep(6)  # let the resolved notification pass before the next crash
    print(f"{'median':<9} " + " ".join(
        f"{statistics.median(r[p] or 0 for r in results):>15.2f}s" for p in PHASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
