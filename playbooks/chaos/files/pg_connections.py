#!/usr/bin/env python
"""Chaos for conn_pool_exhausted: open connections to PostgreSQL and hold them, as a leaking client does.

pg_connections.py --socket-dir DIR --port P --pidfile F (--open --idle N | --stop)

--open   a detached holder starts N psql sessions that run one query and then sit idle (the leak), one
         that runs a long query (active: it must survive), and one that opened a transaction and sits in
         it (idle in transaction: it must survive too); it holds them until --stop. Prints the holder's
         pid and the backends' pids by role once every session is connected.
--stop   end the holder and its sessions (and any backend of theirs still busy in a query).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

ROLES = {"active": "SELECT pg_sleep(3600);\n", "in_transaction": "BEGIN; SELECT txid_current();\n"}


def psql(args: argparse.Namespace, app: str, stdin: int | None = None, sql: str | None = None) -> subprocess.Popen:
    binary = shutil.which("psql") or sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    cmd = [binary, "-X", "-q", "-A", "-t", "-h", args.socket_dir, "-p", str(args.port), "-U", "postgres",
           "-d", "postgres"] + (["-c", sql] if sql else [])
    return subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL if sql is None else subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env={**os.environ, "PGAPPNAME": app}, text=True)


def backends(args: argparse.Namespace) -> dict[str, list[int]]:
    sql = ("SELECT coalesce(json_object_agg(application_name, pids), '{}') FROM (SELECT application_name, "
           "json_agg(pid) AS pids FROM pg_stat_activity WHERE application_name LIKE 'chaos-%' "
           "AND pid <> pg_backend_pid() GROUP BY 1) s")
    out = psql(args, "chaos-probe", sql=sql).communicate(timeout=30)[0]
    return json.loads(out or "{}")


def hold(args: argparse.Namespace) -> None:
    sessions = []
    for app, sql in [("chaos-idle", "SELECT 1;\n")] * args.idle + [(f"chaos-{r}", s) for r, s in ROLES.items()]:
        p = psql(args, app, stdin=subprocess.PIPE)
        assert p.stdin is not None
        p.stdin.write(sql)  # then nothing more: the session sits as its last statement left it
        p.stdin.flush()
        sessions.append(p)

    def end(*_args: object) -> None:
        for p in sessions:
            p.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    while True:
        time.sleep(3600)


def stop(pidfile: str) -> bool:
    try:
        with open(pidfile) as fh:
            pid = int(fh.read().split()[0])
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, IndexError):
        return False
    finally:
        if os.path.exists(pidfile):
            os.unlink(pidfile)
    return True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket-dir", required=True)
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--idle", type=int, default=20)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--open", action="store_true")
    mode.add_argument("--stop", action="store_true")
    args = parser.parse_args()
    if args.stop:
        stopped = stop(args.pidfile)
        # a backend busy in a query does not notice its client is gone until the query ends: end it too
        sql = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
               "WHERE application_name LIKE 'chaos-%' AND pid <> pg_backend_pid()")
        ended = psql(args, "chaos-stop", sql=sql).communicate(timeout=30)[0]
        print(json.dumps({"stopped": stopped, "backends_ended": int(ended.strip() or 0)}))
        return 0
    stop(args.pidfile)
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        with open(args.pidfile, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        hold(args)
    os.waitpid(child, 0)
    want = args.idle + len(ROLES)
    deadline = time.monotonic() + 30
    found: dict[str, list[int]] = {}
    while time.monotonic() < deadline:
        found = backends(args)
        if sum(len(v) for v in found.values()) >= want:
            break
        time.sleep(0.2)
    got = {k.removeprefix("chaos-"): sorted(v) for k, v in found.items()}
    print(json.dumps({"backends": got, "opened": sum(len(v) for v in got.values()), "wanted": want}))
    return 0 if sum(len(v) for v in got.values()) >= want else 1


if __name__ == "__main__":
    sys.exit(main())
