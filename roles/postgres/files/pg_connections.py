#!/usr/bin/env python
"""PostgreSQL's connections against its limit, and the one fix for a leak, printed as one JSON object.

pg_connections.py --socket-dir DIR --port P [--user U] [--dbname D] [--idle-age S] [--long-query S]
                  [--per-pass PCT] [--passes N] [--target PCT] (--diagnose | --usage | --terminate-idle [--check])

--diagnose        the client backends by state, the utilization of max_connections, and the cause:
                    leaked_idle            connections idle for more than --idle-age; closing them gets
                                           utilization below --target
                    long_running_queries   active queries running for more than --long-query
                    traffic_spike          busy, young connections: more load, not a leak (never fixed by
                                           terminating anything)
--usage           utilization only; changes nothing
--terminate-idle  up to --passes passes while utilization is at or over --target; each terminates the
                  oldest backends in state `idle` for more than --idle-age, at most --per-pass percent of
                  max_connections. A backend `active` or `idle in transaction` is never terminated: the
                  state is checked again in the statement that terminates. --check lists the first pass.

Runs psql as the server's local superuser over its Unix socket (trust), so no password is handled.
Exit 0 with the JSON object; 2 with {"error": ...} when the server cannot be asked.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Any

BACKENDS = """
SELECT json_build_object(
  'max_connections', current_setting('max_connections')::int,
  'backends', coalesce((
    SELECT json_agg(json_build_object(
      'pid', pid, 'state', state, 'user', usename, 'application', application_name,
      'client', coalesce(client_addr::text, 'local'),
      'state_age', round(extract(epoch FROM now() - state_change)::numeric, 1),
      'query_age', round(extract(epoch FROM now() - query_start)::numeric, 1)) ORDER BY state_change)
    FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()), '[]'::json))
"""
# Terminates only what is still idle and old enough when the statement runs: a backend that became
# active, or opened a transaction, since it was listed is left alone.
TERMINATE = """
SELECT coalesce(json_agg(json_build_object('pid', pid, 'terminated', pg_terminate_backend(pid))), '[]'::json)
FROM pg_stat_activity
WHERE pid = ANY('{{{pids}}}'::int[]) AND backend_type = 'client backend' AND state = 'idle'
  AND state_change < now() - make_interval(secs => {age})
"""


class PgError(Exception):
    """The server cannot be asked; the message says why."""


def psql_binary() -> str:
    found = shutil.which("psql") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"), reverse=True)), None)
    if not found:
        raise PgError("psql is not installed on the target (the postgresql-client package)")
    return found


def query(args: argparse.Namespace, sql: str) -> Any:
    cmd = [psql_binary(), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", args.socket_dir,
           "-p", str(args.port), "-U", args.user, "-d", args.dbname, "-c", sql]
    env = {**os.environ, "PGAPPNAME": "selfheal", "PGCONNECT_TIMEOUT": "5"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PgError(f"psql did not answer: {exc}") from exc
    if proc.returncode != 0:
        raise PgError(f"psql failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def snapshot(args: argparse.Namespace) -> dict[str, Any]:
    raw = query(args, BACKENDS)
    backends = raw["backends"]
    limit = int(raw["max_connections"])
    by_state: dict[str, int] = {}
    for b in backends:
        by_state[b["state"] or "unknown"] = by_state.get(b["state"] or "unknown", 0) + 1
    return {"max_connections": limit, "used": len(backends), "percent": round(100.0 * len(backends) / limit, 1),
            "by_state": by_state, "backends": backends}


def leaked(snap: dict[str, Any], idle_age: float) -> list[dict[str, Any]]:
    """Idle for longer than idle_age, oldest first."""
    return sorted((b for b in snap["backends"] if b["state"] == "idle" and float(b["state_age"]) > idle_age),
                  key=lambda b: -float(b["state_age"]))


def diagnose(args: argparse.Namespace) -> dict[str, Any]:
    snap = snapshot(args)
    idle = leaked(snap, args.idle_age)
    long = [b for b in snap["backends"] if b["state"] == "active" and float(b["query_age"] or 0) > args.long_query]
    in_tx = [b for b in snap["backends"] if (b["state"] or "").startswith("idle in transaction")]
    after = 100.0 * (snap["used"] - len(idle)) / snap["max_connections"]
    if idle and after < args.target:
        cause = "leaked_idle"
        why = (f"{len(idle)} connection(s) idle for more than {args.idle_age:g}s; closing them leaves "
               f"{after:.0f}% used (target below {args.target:g}%)")
    elif long:
        cause = "long_running_queries"
        why = f"{len(long)} quer(ies) running for more than {args.long_query:g}s: a human decides what to cancel"
    else:
        cause = "traffic_spike"
        why = (f"{snap['by_state'].get('active', 0)} active connection(s) and only {len(idle)} leaked idle: more "
               "load, not a leak; it is scaled or escalated, never fixed by terminating connections")
    return {**usage_of(snap), "cause": cause, "why": why, "leaked_idle": idle, "long_running": long,
            "idle_in_transaction": in_tx, "per_pass": per_pass(args, snap), "backends": snap["backends"]}


def usage_of(snap: dict[str, Any]) -> dict[str, Any]:
    return {"usage": {k: snap[k] for k in ("max_connections", "used", "percent", "by_state")}}


def per_pass(args: argparse.Namespace, snap: dict[str, Any]) -> int:
    """At most this many per pass, rounded down: on a server so small that the share is under one
    connection, none is terminated (the verification fails and a human is paged), never more than it."""
    return math.floor(snap["max_connections"] * args.per_pass / 100.0)


def terminate_idle(args: argparse.Namespace) -> dict[str, Any]:
    first = snap = snapshot(args)
    passes: list[dict[str, Any]] = []
    for number in range(1, args.passes + 1):
        if snap["percent"] < args.target:
            break
        cap = per_pass(args, snap)
        chosen = leaked(snap, args.idle_age)[:cap]
        if not chosen:
            break
        if args.check:
            passes.append({"pass": number, "would_terminate": chosen, "cap": cap})
            break
        pids = ",".join(str(int(b["pid"])) for b in chosen)
        done = {int(r["pid"]) for r in query(args, TERMINATE.format(pids=pids, age=float(args.idle_age)))
                if r["terminated"]}
        before = snap
        deadline = time.monotonic() + 5
        while True:  # a terminated backend leaves pg_stat_activity when its process has exited
            snap = snapshot(args)
            if not done & {int(b["pid"]) for b in snap["backends"]} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        passes.append({"pass": number, "cap": cap, "usage_before": usage_of(before)["usage"],
                       "terminated": [b for b in chosen if int(b["pid"]) in done],
                       "left_alone": [b for b in chosen if int(b["pid"]) not in done],
                       "usage_after": usage_of(snap)["usage"]})
    terminated = [b for p in passes for b in p.get("terminated", [])]
    found = sum(len(p.get("would_terminate", [])) for p in passes) if args.check else len(terminated)
    return {"step": "terminate_idle", "check": args.check, "changed": bool(terminated), "found": found,
            "passes": passes, "terminated": terminated, "usage_before": usage_of(first)["usage"],
            "usage_after": usage_of(snap)["usage"],
            "why": "" if found else f"no connection idle for more than {args.idle_age:g}s"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket-dir", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--dbname", default="postgres")
    parser.add_argument("--idle-age", type=float, default=300)
    parser.add_argument("--long-query", type=float, default=60)
    parser.add_argument("--per-pass", type=float, default=15)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--target", type=float, default=70)
    parser.add_argument("--check", action="store_true")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--diagnose", action="store_true")
    mode.add_argument("--usage", action="store_true")
    mode.add_argument("--terminate-idle", action="store_true")
    args = parser.parse_args()
    if not 0 < args.per_pass <= 100 or args.passes < 1 or args.idle_age < 0:
        print(json.dumps({"error": "--per-pass must be in (0, 100], --passes at least 1, --idle-age not negative"}))
        return 2
    try:
        if args.diagnose:
            out = diagnose(args)
        elif args.usage:
            out = usage_of(snapshot(args))
        else:
            out = terminate_idle(args)
    except (PgError, ValueError, KeyError) as exc:
        print(json.dumps({"error": f"PostgreSQL on {args.socket_dir}:{args.port}: {exc}"}))
        return 2
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
