#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_snapshot
short_description: Read a service's state on its host in one round trip, for the diagnosis
version_added: 0.2.0
description:
  - Runs on the target and returns, in one module call, what a diagnosis of a service needs; the
    service role's C(diagnose) calls it once (one call is also the reachability check).
  - RV(status) is the output of O(status_command); when that output is a JSON object with a C(pid), that
    is the process (the lab's command service manager says so).
  - RV(process) is read from C(/proc); its pid is O(pid), else the status's, else the first line of
    O(pidfile), else systemd's C(MainPID) of O(unit). It is null without a live process.
  - RV(thread_dump) is taken only with O(dump) and O(log) and a process that is not stopped, as the
    lines the process wrote to its log within 2 s of that signal. A stopped (SIGSTOP) process cannot
    answer, and is not sent it.
  - RV(config) includes the file's content (base64, up to 256 KiB), for a rollback to put back
    exactly; do not record it where secrets must not go.
  - Changes nothing, except that O(dump) sends the one signal asked for.
author:
  - selfheal.core developers (@selfheal-core)
options:
  status_command:
    description:
      - The service manager's status command as a list of arguments; exit codes 0 (running) and 3 (not
        running) are answers, others fail the module.
    type: list
    elements: str
    default: []
  pid:
    description:
      - The main process's pid, when known.
    type: int
  pidfile:
    description:
      - Pid file of the main process.
    type: str
    default: ""
  unit:
    description:
      - The systemd unit whose C(MainPID) is the process.
    type: str
    default: ""
  log:
    description:
      - The service's log; its last O(lines) lines go into RV(log_tail), and the thread dump is read from it.
    type: path
    default: ""
  lines:
    description:
      - How many log lines to keep.
    type: int
    default: 30
  config:
    description:
      - The service's configuration file.
    type: path
    default: ""
  dump:
    description:
      - Signal on which the service's runtime dumps its threads to its log, such as V(SIGQUIT) for a JVM.
    type: str
    default: ""
extends_documentation_fragment:
  - selfheal.core.attributes
attributes:
  check_mode:
    support: full
    details: It only reads (and sends O(dump)); it runs the same in check mode.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Diagnose the demo service, with a thread dump
  selfheal.core.service_snapshot:
    status_command: [/usr/local/bin/labsvc, status, demo]
    log: /var/log/demo.log
    config: /etc/demo/demo.conf
    dump: SIGUSR1
  register: snapshot
"""

RETURN = r"""
status:
  description: The status command's answer (null without O(status_command)).
  returned: always
  type: dict
  contains:
    rc:
      description: Its exit code, 0 running or 3 not running.
      type: int
    stdout:
      description: What it printed.
      type: str
    reported:
      description: Its output parsed, when it is a JSON object.
      type: dict
process:
  description: The main process, or null.
  returned: always
  type: dict
  sample:
    {pid: 4242, state: S, stopped: false, elapsed_seconds: 81.2, cpu_seconds: 0.4, rss_bytes: 21430272, threads: 3}
thread_dump:
  description: The dump taken (C(taken), C(lines)), or why not (C(why)); null without O(dump).
  returned: always
  type: dict
log_tail:
  description: The last lines of O(log).
  returned: always
  type: list
  elements: str
connections:
  description: The process's TCP sockets (state, local, peer).
  returned: always
  type: list
  elements: dict
config:
  description: The configuration file (path, sha256, mode, owner, group, size, content in base64), or an error.
  returned: always
  type: dict
"""

import base64
import grp
import hashlib
import json
import os
import pwd
import signal
import stat
import subprocess
import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module

MAX_CONFIG = 256 * 1024


def _process(pid: int) -> dict[str, Any] | None:
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


def _find_pid(params: dict[str, Any], status: dict[str, Any] | None) -> int | None:
    if params["pid"]:
        return int(params["pid"])
    reported = (status or {}).get("reported") or {}
    if isinstance(reported.get("pid"), int) and reported["pid"] > 0:
        return int(reported["pid"])
    if params["pidfile"]:
        try:
            with open(params["pidfile"], encoding="utf-8") as fh:
                return int(fh.readline().strip())
        except (OSError, ValueError):
            return None
    if params["unit"]:
        try:
            out = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", params["unit"]],
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


def _status(command: list[str]) -> dict[str, Any] | None:
    if not command:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModuleError(f"the status command {' '.join(command)} did not answer: {exc}") from exc
    if done.returncode not in (0, 3):
        raise ModuleError(f"the status command {' '.join(command)} failed (rc={done.returncode}): "
                          f"{done.stderr.strip() or done.stdout.strip()}", rc=done.returncode)
    try:
        reported = json.loads(done.stdout)
    except ValueError:
        reported = None
    return {"rc": done.returncode, "stdout": done.stdout.strip(),
            "reported": reported if isinstance(reported, dict) else None}


def snapshot(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    status = _status(params["status_command"])
    pid = _find_pid(params, status)
    process = _process(pid) if pid else None
    log = params["log"]
    result: dict[str, Any] = {"changed": False, "status": status, "process": process, "thread_dump": None,
                              "connections": [], "config": None,
                              "log_tail": _tail(log, params["lines"]) if log else []}
    if process is not None:
        if params["dump"] and log:
            result["thread_dump"] = ({"taken": False, "why": "the process is stopped (SIGSTOP): it cannot answer"}
                                     if process["stopped"] else _dump(process["pid"], log, params["dump"]))
        result["connections"] = _connections(process["pid"])
    if params["config"]:
        result["config"] = _config(params["config"])
    return result


def main() -> None:
    run_module(
        {
            "status_command": {"type": "list", "elements": "str", "default": []},
            "pid": {"type": "int"},
            "pidfile": {"type": "str", "default": ""},
            "unit": {"type": "str", "default": ""},
            "log": {"type": "path", "default": ""},
            "lines": {"type": "int", "default": 30},
            "config": {"type": "path", "default": ""},
            "dump": {"type": "str", "default": ""},
        },
        snapshot,
    )


if __name__ == "__main__":
    main()
