#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: upstream
short_description: Drain a server from an nginx upstream, or put it back, with a validated reload
version_added: 0.2.0
description:
  - Runs on the load balancer. Marks the C(server) line of O(member) in the upstreams file O(path)
    V(down) (O(state=drained)) or removes that mark (O(state=active)); then runs O(check_command) and,
    only when it passes, O(reload_command). A check that fails puts the file back exactly as it was and
    nothing is reloaded, so an invalid configuration never reaches a reload.
  - The edit, the check and the reload are one step under an exclusive lock (a C(.lock) file beside
    O(path)), so the hosts of one batch, and two daemons, never interleave their edits.
  - Refuses to drain a member when fewer than O(min_active) servers would be left in the pool.
  - Idempotent; nothing is reloaded when the file already says what was asked.
author:
  - selfheal.core developers (@selfheal-core)
options:
  path:
    description:
      - The file of C(server) lines that the upstream block includes.
    type: path
    required: true
  member:
    description:
      - The server as its line names it, C(address:port).
    type: str
    required: true
  state:
    description:
      - V(drained) takes it out of the pool, V(active) puts it back.
    type: str
    choices: [drained, active]
    required: true
  check_command:
    description:
      - The configuration check, as a list of arguments, such as C(nginx -t -c /etc/nginx/nginx.conf).
    type: list
    elements: str
    required: true
  reload_command:
    description:
      - The graceful reload, as a list of arguments, such as C(nginx -s reload); in-flight requests finish
        on the old workers.
    type: list
    elements: str
    required: true
  min_active:
    description:
      - Servers that must stay in the pool; a drain that would leave fewer is refused (nothing changed).
    type: int
    default: 1
  settle:
    description:
      - Seconds to wait after a reload that drained, for requests in flight to the member to finish.
    type: float
    default: 0.5
  lock_timeout:
    description:
      - Seconds to wait for another run's edit of the same file.
    type: float
    default: 30
extends_documentation_fragment:
  - selfheal.core.attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the file would change; changes and reloads nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Drain web1 from the pool before its restart
  selfheal.core.upstream:
    path: /etc/nginx/upstreams/fleet.conf
    member: 10.0.0.21:8080
    state: drained
    check_command: [nginx, -t]
    reload_command: [nginx, -s, reload]
  delegate_to: lb1
"""

RETURN = r"""
member:
  description: The server asked for.
  returned: always
  type: str
drained:
  description: Whether the file now marks it down.
  returned: always
  type: bool
reloaded:
  description: Whether the load balancer was reloaded.
  returned: always
  type: bool
before_sha256:
  description: SHA-256 of the file before.
  returned: always
  type: str
after_sha256:
  description: SHA-256 of the file after (the same as before when nothing changed).
  returned: always
  type: str
active:
  description: The servers in the pool after this change.
  returned: always
  type: list
  elements: str
"""

import fcntl
import hashlib
import os
import re
import subprocess
import tempfile
import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module

_SERVER = re.compile(r"^(?P<lead>\s*server\s+)(?P<addr>\S+?)(?P<params>(\s[^;#]*)?)\s*;(?P<tail>.*)$")


def _servers(lines: list[str]) -> list[tuple[int, str, bool]]:
    """(line index, address, marked down) of every server line."""
    found = []
    for index, line in enumerate(lines):
        match = _SERVER.match(line)
        if match:
            found.append((index, match["addr"], "down" in (match["params"] or "").split()))
    return found


def edit(text: str, member: str, drained: bool, min_active: int) -> tuple[str, list[str]]:
    """The file with `member` marked down (or not), and the servers left in the pool; ModuleError when the
    member is not there once, or a drain would leave fewer than min_active."""
    lines = text.splitlines(keepends=True)
    servers = _servers(lines)
    mine = [s for s in servers if s[1] == member]
    if len(mine) != 1:
        raise ModuleError(f"{member} is named by {len(mine)} server lines of the upstream, not one: "
                          f"servers are {', '.join(s[1] for s in servers) or 'none'}; nothing was changed")
    index = mine[0][0]
    active = [addr for i, addr, down in servers if not down and i != index]
    if drained and len(active) < min_active:
        raise ModuleError(f"draining {member} would leave {len(active)} server(s) in the pool, fewer than "
                          f"min_active={min_active}; nothing was changed")
    match = _SERVER.match(lines[index])
    if match is None:  # _servers() matched it
        raise ModuleError(f"line {index + 1} of the upstream changed while it was read; nothing was changed")
    params = [p for p in (match["params"] or "").split() if p != "down"] + (["down"] if drained else [])
    end = "\n" if lines[index].endswith("\n") else ""
    tail = match["tail"].rstrip("\n")
    lines[index] = f"{match['lead']}{member}{''.join(' ' + p for p in params)};{tail}{end}"
    return "".join(lines), active + ([] if drained else [member])


def _run(command: list[str], what: str) -> str | None:
    """None when the command succeeded, else what it said."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{what} {' '.join(command)} could not run: {exc}"
    if done.returncode:
        return f"{what} {' '.join(command)} failed (rc={done.returncode}): {(done.stderr or done.stdout).strip()}"
    return None


def _write(path: str, text: str) -> None:
    info = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".upstream-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chown(tmp, info.st_uid, info.st_gid)
        os.chmod(tmp, info.st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _lock(path: str, timeout: float) -> int:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise ModuleError(f"{path} is being changed by another run for more than {timeout:g}s; "
                                  "nothing was changed") from None
            time.sleep(0.05)


def apply(params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    path, member, drained = params["path"], params["member"], params["state"] == "drained"
    fd = _lock(path, params["lock_timeout"])
    try:
        try:
            with open(path, encoding="utf-8") as fh:
                before = fh.read()
        except OSError as exc:
            raise ModuleError(f"cannot read the upstreams file {path}: {exc.strerror}") from exc
        after, active = edit(before, member, drained, params["min_active"])
        result = {"member": member, "drained": drained, "reloaded": False, "active": active,
                  "before_sha256": hashlib.sha256(before.encode()).hexdigest(),
                  "after_sha256": hashlib.sha256(after.encode()).hexdigest(), "changed": after != before}
        if after == before or check_mode:
            return result
        _write(path, after)
        failed = _run(params["check_command"], "the configuration check")
        if failed is not None:
            _write(path, before)
            raise ModuleError(f"{failed}; {path} was put back as it was and nothing was reloaded",
                              **{**result, "drained": not drained, "after_sha256": result["before_sha256"]})
        failed = _run(params["reload_command"], "the reload")
        if failed is not None:
            _write(path, before)
            raise ModuleError(f"{failed}; {path} was put back as it was",
                              **{**result, "drained": not drained, "after_sha256": result["before_sha256"]})
        result["reloaded"] = True
        if drained and params["settle"] > 0:
            time.sleep(params["settle"])
        return result
    finally:
        os.close(fd)


def main() -> None:
    run_module(
        {
            "path": {"type": "path", "required": True},
            "member": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["drained", "active"], "required": True},
            "check_command": {"type": "list", "elements": "str", "required": True},
            "reload_command": {"type": "list", "elements": "str", "required": True},
            "min_active": {"type": "int", "default": 1},
            "settle": {"type": "float", "default": 0.5},
            "lock_timeout": {"type": "float", "default": 30},
        },
        apply,
    )


if __name__ == "__main__":
    main()
