"""Guard decisions per second on SQLite and PostgreSQL, and the latency a guard adds to a run.

For each store it makes DECISIONS decisions the way selfheal.core.guard does
(read leases, cooldowns, failures and circuit state; decide; take the lease;
record the decision and an audit event) on rotating targets, then prints the
rate. It then times the module itself, `ansible localhost -m
selfheal.core.guard` (what a remediation playbook pays per run), as a median
of several runs.

PostgreSQL is the lab's (make lab-up); without it only SQLite is measured.
  python bench/guard.py [--decisions 2000] [--module-runs 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "lab"))
sys.path.insert(0, str(REPO / ".build" / "collections"))

import labctl  # noqa: E402

from ansible_collections.selfheal.core.plugins.module_utils.catalog import load_catalog  # noqa: E402
from ansible_collections.selfheal.core.plugins.module_utils.policy import Facts, decide  # noqa: E402
from ansible_collections.selfheal.core.plugins.module_utils.store import Store, StoreError  # noqa: E402

CATALOG = REPO / "rulebooks" / "catalog.yml"


def _decisions(store: Store, n: int) -> float:
    itype = load_catalog(str(CATALOG)).get("service_down")
    assert itype is not None
    policy = itype.policy
    t0 = time.perf_counter()
    for i in range(n):
        now = time.time()
        target = f"bench-{i % 500}"
        holder = f"run-{i}"
        facts = Facts(now=now, leases=store.leases([target]), cooldowns=store.cooldowns([target]),
                      failures=store.failures(itype.name, now - policy.circuit_window),
                      circuit_escalated_at=store.circuit_escalated_at(itype.name, now - policy.circuit_reset))
        decision = decide(itype.name, policy, [target], 500, holder, facts)
        if decision.allowed:
            token = store.acquire(target, holder, 0.001, now)
            if token is not None:
                store.release(target, holder, token)
        store.record_decision(f"inc-{i}", itype.name, holder, decision.to_dict(), now)
        store.audit("decided", holder, {"allowed": decision.allowed}, f"inc-{i}", now)
    return n / (time.perf_counter() - t0)


def _module_latency(store: str, runs: int, password: str | None) -> float:
    env = {**os.environ, **labctl.daemon_env(labctl.load_config())}
    times = []
    for i in range(runs):
        params = {"incident_id": f"lat-{i}", "incident_type": "service_down", "targets": [f"lat-{i}"],
                  "catalog": str(CATALOG), "store": store}
        if password:
            params["store_password"] = password
        t0 = time.perf_counter()
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "localhost", "-m",
                               "selfheal.core.guard", "-a", json.dumps(params)], capture_output=True, text=True,
                              check=False, env=env, timeout=120)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"guard: the module failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return statistics.median(times)


def _postgres() -> tuple[str, str] | None:
    cfg = labctl.load_config()
    db = next((h for h in cfg.hosts if "postgres" in h.services), None)
    pw_file = cfg.path("postgres_password")
    if db is None or not pw_file.exists():
        return None
    password = pw_file.read_text().strip()
    try:
        import psycopg

        name = f"selfheal_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"postgresql://postgres@{db.address}:5432/postgres", password=password,
                             autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    except Exception as exc:  # noqa: BLE001 - the lab is optional: say why and measure SQLite only
        print(f"[guard] PostgreSQL not measured (lab not up? run make lab-up): {exc}", flush=True)
        return None
    return f"postgresql://postgres@{db.address}:5432/{name}", password


def _drop(url: str, password: str | None) -> None:
    import psycopg

    admin_url, name = url.rsplit("/", 1)
    with psycopg.connect(f"{admin_url}/postgres", password=password, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--module-runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        targets: list[tuple[str, str, str | None]] = [("sqlite", str(Path(tmp) / "store.db"), None)]
        pg = _postgres()
        if pg is not None:
            targets.append(("postgresql", pg[0], pg[1]))
        for name, url, password in targets:
            try:
                store = Store(url, password=password)
            except StoreError as exc:
                print(f"[guard] {name}: {exc}")
                continue
            print(f"[guard] {name}: {args.decisions} decisions", flush=True)
            rate = _decisions(store, args.decisions)
            store.close()
            latency = _module_latency(url, args.module_runs, password)
            rows.append((name, rate, latency))
            if name == "postgresql":
                _drop(url, password)
    print(f"\n{'store':<12} {'decisions/s':>12} {'guard module per run (median)':>32}")
    for name, rate, latency in rows:
        print(f"{name:<12} {rate:>12.0f} {latency * 1000:>29.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
