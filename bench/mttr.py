"""Time to recovery of every host incident type, split into its phases, beside the floor detection sets.

Runs each type's chaos scenario RUNS times on the lab (the daemon must be up: `make bench` starts
both), waits until the store's audit trail shows it verified healthy, and reads the phases from the
recovery timeline (plugins/module_utils/timeline.py, the one implementation):

  detect   fault injected -> alert received by the daemon
  decide   alert received -> the guard's decision
  act      the decision -> the step's action done
  verify   action done -> verified healthy (and held)

For each type it prints the median and p95 of each phase and of the time to recovery, the target
(service_down median <= 10 s, decide + act + verify <= 4 s; every other type <= 30 s; service_hung, a
propose type, is approved by the bench at once, so its decide phase holds the proposal's round trip), and the floor
of detection: the alert's `for:` plus Alertmanager's group_wait, up to one scrape interval and one
rule evaluation more (what no faster playbook can win back). With --profile it then runs the
service_down remediation once by hand with ansible.posix.profile_tasks and prints where its time goes.

  python bench/mttr.py [--runs 3] [--types service_down,disk_full,...] [--timeout 120] [--profile]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / ".build" / "collections"))

import labctl  # noqa: E402

from ansible_collections.selfheal.core.plugins.module_utils import timeline  # noqa: E402
from ansible_collections.selfheal.core.plugins.module_utils.store import Store  # noqa: E402

PHASES = ("detect", "decide", "act", "verify", "time_to_recovery")


@dataclass(frozen=True)
class Scenario:
    itype: str
    alert: str
    hosts: tuple[str, ...]
    chaos: tuple[str, ...]
    undo: tuple[str, ...] = ()  # run after each recovery (a writer or a client the chaos left running)
    target: float = 30.0
    approve: bool = False  # a propose type: the bench answers its proposal at once, as the lab's on-call


SCENARIOS = (
    Scenario("service_down", "ServiceDown", ("h1", "h2", "h3"), ("selfheal.core.chaos.service_crash",), target=10.0),
    Scenario("service_hung", "ServiceHung", ("h1", "h2", "h3"), ("selfheal.core.chaos.service_hang",),
             approve=True),
    Scenario("disk_full", "DiskFull", ("h1", "h2", "h3"),
             ("selfheal.core.chaos.disk_fill", "-e", "chaos_fill=tmp"),
             ("selfheal.core.chaos.disk_fill", "-e", "chaos_fill=stop")),
    Scenario("disk_filling", "DiskFillingUp", ("h1", "h2", "h3"),
             ("selfheal.core.chaos.disk_fill", "-e", "chaos_fill=grow"),
             ("selfheal.core.chaos.disk_fill", "-e", "chaos_fill=stop")),
    # one fleet host at a time (a leak on the whole fleet is bench/rollout.py's rolling restart)
    Scenario("memory_leak", "MemoryLeak", ("w01", "w02", "w03"),
             ("selfheal.core.chaos.memory_leak", "-e", "chaos_leak_mb=32")),
    Scenario("conn_pool_exhausted", "PostgresConnectionsExhausted", ("h4",),
             ("selfheal.core.chaos.pg_connections",),
             ("selfheal.core.chaos.pg_connections", "-e", "chaos_conns=stop")),
)


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * units[unit]
    return float(text)


def floor(cfg: labctl.Config, alert: str) -> tuple[float, float]:
    """Detection's floor for `alert`: (for + group_wait, that plus one scrape and one evaluation)."""
    prom = yaml.safe_load(cfg.path("prometheus", "prometheus.yml").read_text())["global"]
    rules = yaml.safe_load((REPO / "lab" / "templates" / "alert_rules.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert)
    route = yaml.safe_load(cfg.path("alertmanager", "alertmanager.yml").read_text())["route"]
    low = seconds(rule.get("for", "0s")) + seconds(route.get("group_wait", "30s"))
    return low, low + seconds(prom["scrape_interval"]) + seconds(prom["evaluation_interval"])


def playbook(cfg: labctl.Config, env: dict[str, str], target: str, args: tuple[str, ...]) -> None:
    scratch = Path(tempfile.gettempdir()) / "selfheal-bench-hand-runs.db"
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(cfg.path("inventory.yml")),
                           args[0], "-e", f"selfheal_target={target}", "-e", f"selfheal_store={scratch}", *args[1:]],
                          capture_output=True, text=True, check=False, env=env, timeout=300)
    if proc.returncode != 0:
        sys.exit(f"bench: {args[0]} on {target} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def recovery(cfg: labctl.Config, env: dict[str, str], target: str, since: float, timeout: float,
             approve: bool) -> timeline.Recovery | None:
    """The recovery of `target` since `since`, once it ended; a proposal of it is approved at once when
    `approve` (its decide phase then holds the time the proposal took to be asked and answered)."""
    deadline = time.monotonic() + timeout
    approved = False
    while time.monotonic() < deadline:
        with Store(str(cfg.path("store.db"))) as store:
            rec = timeline.recovery_of(store, target, since)
        if rec is not None and rec.outcome == "waiting for approval" and approve and not approved:
            answer = {"incident_id": rec.stages["proposed"]["incident_id"], "decision": "approve",
                      "approver": "bench-oncall", "reason": "bench/mttr.py answers at once"}
            playbook(cfg, env, target, ("selfheal.core.approve", "-e", json.dumps(answer)))
            approved = True
        elif rec is not None and rec.outcome not in ("open", "waiting for approval"):
            return rec
        time.sleep(0.25)
    return None


def wait_free(cfg: labctl.Config, target: str, timeout: float = 300) -> None:
    """Until the last run's cooldown (or lease) on the target is over, so the next run is not held back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Store(str(cfg.path("store.db"))) as store:
            wait = store.busy_until(target) - time.time()
        if wait <= 0:
            return
        print(f"    ({target} is cooling down: {wait:.0f}s)", flush=True)
        time.sleep(min(wait + 0.5, max(0.0, deadline - time.monotonic())))


def wait_quiet(cfg: labctl.Config, alert: str, target: str, timeout: float = 90) -> None:
    """Until the alert of the last run is resolved on the target (so the next run is a new incident)."""
    url = f"http://127.0.0.1:{cfg.ports['alertmanager']}/api/v2/alerts?active=true"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as resp:
            alerts = json.loads(resp.read())
        if not any(a["labels"].get("alertname") == alert and a["labels"].get("host") == target for a in alerts):
            return
        time.sleep(1)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def profile(cfg: labctl.Config, env: dict[str, str]) -> None:
    """service_down's remediation once by hand with a per-task profile (the daemon runs the same play)."""
    target = "h3"
    subprocess.run(["ip", "netns", "exec", cfg.host(target).netns, sys.executable, str(REPO / "lab" / "labctl.py"),
                    "svc", "kill", "demo"], env={**env, "SELFHEAL_LAB_HOST": target}, check=False,
                   capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        penv = {**env, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
                "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "15", "PROFILE_TASKS_SORT_ORDER": "descending"}
        start = time.monotonic()
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-playbook"), "-i", str(cfg.path("inventory.yml")),
                               "selfheal.core.remediate_service_down", "-e", f"selfheal_target={target}",
                               "-e", f"selfheal_store={tmp}/store.db"], capture_output=True, text=True, check=False,
                              env=penv, timeout=300)
        took = time.monotonic() - start
    lines = proc.stdout.splitlines()
    at = next((i for i, line in enumerate(lines) if "=====" in line and i > len(lines) - 40), None)
    print(f"\nprofile: service_down by hand on {target}, {took:.1f}s wall (rc {proc.returncode}); slowest tasks:")
    print("\n".join(lines[at - 1:] if at else lines[-20:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--types", default=",".join(s.itype for s in SCENARIOS))
    parser.add_argument("--timeout", type=float, default=120, help="seconds one recovery may take")
    parser.add_argument("--profile", action="store_true", help="also profile service_down's playbook by task")
    args = parser.parse_args()
    wanted = args.types.split(",")
    unknown = set(wanted) - {s.itype for s in SCENARIOS}
    if args.runs < 1 or unknown:
        parser.error(f"--runs must be at least 1; unknown types: {sorted(unknown)}")
    cfg = labctl.load_config()
    if labctl.daemon_pid(cfg) is None:
        sys.exit("bench: the rulebook daemon is not running: run make daemon-up (make bench does)")
    env = {**os.environ, **labctl.daemon_env(cfg)}
    summary: list[str] = []
    for scenario in (s for s in SCENARIOS if s.itype in wanted):
        low, high = floor(cfg, scenario.alert)
        print(f"\n{scenario.itype}: {args.runs} run(s); detection floor {low:.1f}-{high:.1f}s "
              f"(for + group_wait, + scrape + evaluation)", flush=True)
        print(f"{'run':>3} {'host':<5} " + " ".join(f"{p:>16}" for p in PHASES), flush=True)
        results: list[dict[str, float]] = []
        for run in range(1, args.runs + 1):
            target = scenario.hosts[(run - 1) % len(scenario.hosts)]
            wait_quiet(cfg, scenario.alert, target)
            wait_free(cfg, target)
            since = time.time()
            playbook(cfg, env, target, scenario.chaos)
            rec = recovery(cfg, env, target, since, args.timeout, scenario.approve)
            if scenario.undo:
                playbook(cfg, env, target, scenario.undo)
            if rec is None or rec.outcome != "healed":
                print(f"{run:>3} {target:<5} not healed within {args.timeout:.0f}s"
                      + (f"\n{timeline.render(rec)}" if rec else ""), flush=True)
                return 1
            phases = {k: v or 0.0 for k, v in rec.phases().items()}
            results.append(phases)
            print(f"{run:>3} {target:<5} " + " ".join(f"{phases[p]:>15.2f}s" for p in PHASES), flush=True)
            if scenario.itype.startswith("disk"):  # the next run fills an empty disk
                playbook(cfg, env, target, ("selfheal.core.chaos.disk_fill", "-e", "chaos_fill=stop"))
                labctl.empty_disk(cfg, cfg.host(target))
        med = {p: statistics.median(r[p] for r in results) for p in PHASES}
        print(f"{'median':<9} " + " ".join(f"{med[p]:>15.2f}s" for p in PHASES))
        print(f"{'p95':<9} " + " ".join(f"{p95([r[p] for r in results]):>15.2f}s" for p in PHASES))
        dav = med["decide"] + med["act"] + med["verify"]
        verdict = "meets" if med["time_to_recovery"] <= scenario.target else "MISSES"
        line = (f"{scenario.itype:<20} median {med['time_to_recovery']:6.2f}s (target <= {scenario.target:.0f}s: "
                f"{verdict}); detect {med['detect']:.2f}s vs floor {low:.1f}-{high:.1f}s; decide+act+verify {dav:.2f}s"
                + (" (target <= 4s: " + ("meets" if dav <= 4 else "MISSES") + ")"
                   if scenario.itype == "service_down" else ""))
        summary.append(line)
    print("\nsummary (manual baseline: 22-35 minutes by hand)")
    print("\n".join(summary))
    if args.profile:
        profile(cfg, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
