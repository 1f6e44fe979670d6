#!/usr/bin/env python
"""Read-only snapshot of a service on its host, printed as one JSON object: the diagnosis in one round trip.

    service_snapshot.py [--pid N | --pidfile PATH | --unit NAME] [--log PATH] [--lines N] [--config PATH]
                        [--dump SIGNAL]

pid          --pid, else the first line of --pidfile, else systemd's MainPID of --unit
process      state (R running, S sleeping, D disk wait, T stopped, Z zombie), seconds since start,
             CPU seconds, resident memory, threads; null without a live pid
thread_dump  with --dump, the lines the process wrote to its log after that signal (a runtime that
             dumps its threads on it); never sent to a stopped process, which cannot answer
log_tail     the last --lines lines of its log
connections  its TCP sockets (ss), local and peer address and state
config       the configuration file: path, sha256, mode, owner, group, size and content (base64)

Standard library only, Python 3.8+: it runs under the target's own python3. Changes nothing, except
that --dump sends the one signal asked for.
"""
from __future__ import annotations

import argparse
import base64
import grp
import hashlib
import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time

MAX_CONFIG = 256 * 1024


def _process(pid: int) -> dict[str, object] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="utf-8") as fh:
            uptime = float(fh.read().split()[0])
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    page = os.sysconf("SC_PAGE_SIZE")
    state = fields[0]
    return {
        "pid": pid,
        "state": state,
        "stopped": state in ("T", "t"),
        "elapsed_seconds": round(uptime - int(fields[19]) / ticks, 1),
        "cpu_seconds": round((int(fields[11]) + int(fields[12])) / ticks, 2),
        "rss_bytes": int(fields[21]) * page,
        "threads": int(fields[17]),
    }


def _find_pid(args: argparse.Namespace) -> int | None:
    if args.pid:
        return int(args.pid)
    if args.pidfile:
        try:
            with open(args.pidfile, encoding="utf-8") as fh:
                return int(fh.readline().strip())
        except (OSError, ValueError):
            return None
    if args.unit:
        try:
            out = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", args.unit],
                                 capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None
        return int(out) if out.isdigit() and int(out) > 0 else None
    return None


def _tail(path: str, lines: int, start: int = 0) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines else text.splitlines()


def _dump(pid: int, log: str, sig: str) -> dict[str, object]:
    try:
        start = os.path.getsize(log)
    except OSError:
        return {"taken": False, "why": f"no log at {log} to read the dump from"}
    try:
        os.kill(pid, getattr(signal, sig))
    except (OSError, AttributeError) as exc:
        return {"taken": False, "why": f"cannot send {sig} to {pid}: {exc}"}
    deadline = time.monotonic() + 2.0
    size = start
    while time.monotonic() < deadline:
        time.sleep(0.15)
        grown = os.path.getsize(log)
        if grown > start and grown == size:  # written, and done: the log stopped growing
            break
        size = grown
    lines = _tail(log, 0, start)
    if not lines:
        return {"taken": False, "why": f"{sig} sent; the process wrote nothing to {log} within 2 s"}
    return {"taken": True, "signal": sig, "lines": lines[:400]}


def _connections(pid: int) -> list[dict[str, str]]:
    try:
        out = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        parts = line.split()
        if len(parts) >= 5:
            found.append({"state": parts[0], "local": parts[3], "peer": parts[4]})
    return found[:200]


def _config(path: str) -> dict[str, object] | None:
    try:
        info = os.stat(path)
        if info.st_size > MAX_CONFIG:
            return {"path": path, "error": f"larger than {MAX_CONFIG} bytes: not kept"}
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return {"path": path, "error": exc.strerror}
    return {
        "path": path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "mode": f"{stat.S_IMODE(info.st_mode):04o}",
        "owner": _name(pwd.getpwuid, info.st_uid),
        "group": _name(grp.getgrgid, info.st_gid),
        "size": len(data),
        "content": base64.b64encode(data).decode(),
    }


def _name(lookup: object, ident: int) -> str:
    try:
        return str(lookup(ident)[0])  # type: ignore[operator]
    except KeyError:
        return str(ident)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int)
    parser.add_argument("--pidfile", default="")
    parser.add_argument("--unit", default="")
    parser.add_argument("--log", default="")
    parser.add_argument("--lines", type=int, default=30)
    parser.add_argument("--config", default="")
    parser.add_argument("--dump", default="", help="signal that makes the process dump its threads, e.g. SIGUSR1")
    args = parser.parse_args()
    pid = _find_pid(args)
    process = _process(pid) if pid else None
    result: dict[str, object] = {"process": process, "thread_dump": None, "connections": [], "config": None,
                                 "log_tail": _tail(args.log, args.lines) if args.log else []}
    if process is not None:
        if args.dump and args.log:
            result["thread_dump"] = ({"taken": False, "why": "the process is stopped (SIGSTOP): it cannot answer"}
                                     if process["stopped"] else _dump(process["pid"], args.log, args.dump))
        result["connections"] = _connections(process["pid"])  # type: ignore[arg-type]
    if args.config:
        result["config"] = _config(args.config)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
