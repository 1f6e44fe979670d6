"""The self-healing demo: crash a service in the lab and watch it heal.

Expects the lab and the rulebook daemon to be up (`make demo` does both).
Injects the fault with the chaos playbook, waits for the recovery to finish
in the store's audit trail, and prints the recovery timeline with its phases and the
time to recovery. Exit 0 when the service was healed and verified.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / ".build" / "collections"))
sys.path.insert(0, str(REPO / "lab"))

from labctl import daemon_env, load_config  # noqa: E402

from ansible_collections.selfheal.core.plugins.module_utils import timeline  # noqa: E402
from ansible_collections.selfheal.core.plugins.module_utils.store import Store  # noqa: E402


def lab_inventory(lab_dir: Path) -> dict:
    path = lab_dir / "inventory.yml"
    if not path.exists():
        sys.exit(f"demo: the lab is not up ({path} is missing): run make lab-up")
    return json.loads(path.read_text())


def pick_target(lab_dir: Path, hosts: list[str], preferred: str) -> str:
    """`preferred`, unless the guard would hold it back for a cooldown: then a host that is not cooling.

    Every automatic action starts a cooldown on its target (60 s for service_down in the lab's
    catalog), so a demo run right after another one picks another host, or waits for the first free.
    """
    store_path = lab_dir / "store.db"
    if not store_path.exists():
        return preferred
    store = Store(str(store_path))
    now = time.time()
    try:
        cooling = store.cooldowns(hosts)
        # a host whose run still holds its lease will cool down as soon as the run records its outcome
        for host, (_holder, expires) in store.leases(hosts).items():
            if expires > now:
                cooling[host] = max(cooling.get(host, 0), now + 60)
    finally:
        store.close()
    order = [preferred] + [h for h in hosts if h != preferred]
    for host in order:
        if cooling.get(host, 0) <= now:
            if host != preferred:
                print(f"demo: {preferred} is cooling down after the last run; using {host}", flush=True)
            return host
    host = min(order, key=lambda h: cooling[h])
    wait = cooling[host] - now
    print(f"demo: every host is cooling down after recent runs; waiting {wait:.0f}s for {host}", flush=True)
    time.sleep(wait + 0.5)
    return host


def crash(inventory_path: Path, target: str, service: str) -> None:
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory_path),
           "selfheal.core.chaos.service_crash", "-e", f"selfheal_target={target}", "-e", f"selfheal_service={service}"]
    env = {**os.environ, **daemon_env(load_config())}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.exit(f"demo: the chaos playbook failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def wait_recovery(store_path: str, target: str, since: float, timeout: float,
                  quiet: bool = False) -> timeline.Recovery | None:
    """The recovery of `target` that starts with a fault at or after `since`, once final, as the store's
    audit trail records it."""
    deadline = time.monotonic() + timeout
    last_stage = ""
    while time.monotonic() < deadline:
        with Store(store_path) as store:
            rec = timeline.recovery_of(store, target, since)
        if rec is not None:
            newest = max(rec.stages.values(), key=lambda e: float(e["at"]))["stage"]
            if newest != last_stage and not quiet:
                print(f"  ... {newest}", flush=True)
                last_stage = newest
            if rec.outcome != "open":
                return rec
        time.sleep(0.25)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="h1", help="lab host whose service crashes (default h1)")
    parser.add_argument("--service", default="demo")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the recovery")
    args = parser.parse_args()
    lab_dir = Path(os.environ.get("SELFHEAL_LAB_DIR") or REPO / ".lab")
    inventory = lab_inventory(lab_dir)
    lab_vars = inventory["all"]["vars"]
    if args.target not in inventory["all"]["hosts"]:
        sys.exit(f"demo: {args.target} is not a lab host; hosts: {', '.join(inventory['all']['hosts'])}")
    args.target = pick_target(lab_dir, list(inventory["all"]["hosts"]), args.target)
    host = inventory["all"]["hosts"][args.target]
    print(f"demo: crashing {args.service} on {args.target} ({host['ansible_host']}) with SIGKILL", flush=True)
    since = time.time()
    crash(lab_dir / "inventory.yml", args.target, args.service)
    rec = wait_recovery(lab_vars["selfheal_chaos_store"], args.target, since, args.timeout)
    if rec is None:
        print(f"demo: no recovery finished within {args.timeout:.0f}s; see {lab_dir / 'log' / 'rulebook.log'}")
        return 1
    print()
    print(timeline.render(rec))
    with urllib.request.urlopen(host["selfheal_health_url"], timeout=5) as resp:  # noqa: S310 (lab URL)
        print(f"\n{host['selfheal_health_url']} -> {resp.status} {resp.read().decode()}")
    return 0 if rec.outcome == "healed" else 1


if __name__ == "__main__":
    sys.exit(main())
