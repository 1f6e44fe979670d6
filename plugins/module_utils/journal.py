# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a record waits while the store cannot take it, so that the record catches up later.

A run whose store is locked, read-only or full still knows how it ended
(escalated, say, with the store as the cause). `append()` keeps that record
in a local file of the controller, one JSON line, written and synced at once;
`outcomes()` lets the watchdog read it beside the store (so it does not page a
second time for what a playbook already paged); `replay()` moves the records
into the store as soon as it can be written again, and empties the file.
The file is keyed by the store it stands in for, in SELFHEAL_JOURNAL_DIR
(default $XDG_STATE_HOME/selfheal, or ~/.local/state/selfheal: private to the
user the daemon and its playbooks run as, and kept across reboots).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from typing import Any


def _local(kind: str, key: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    directory = os.environ.get("SELFHEAL_JOURNAL_DIR") or os.path.join(state, "selfheal")
    return os.path.join(directory, f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl")


def path_for(store_target: str) -> str:
    return _local("journal", store_target)


def count_page(route: str, now: float, window: float = 3600.0) -> int:
    """Note one page sent to `route` (a receiver URL) at `now`; how many went there within `window`,
    this one included. Kept locally, beside the journal, so that the page budget holds across the daemon
    and every playbook run without the store (which may be what failed). 1 when it cannot be kept: a
    budget that cannot be counted never holds a page back."""
    path = _local("pages", route)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return 1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as fh:
            times = []
            for line in fh.read().split():
                try:
                    times.append(float(line))
                except ValueError:
                    continue
            times = [t for t in times if 0 <= now - t < window] + [now]
            fh.seek(0)
            fh.truncate()
            fh.write("".join(f"{t!r}\n" for t in times))
        return len(times)
    except OSError:
        return 1
    finally:
        os.close(fd)


def append(store_target: str, record: dict[str, Any]) -> str:
    """Keep `record` for the store `store_target`; the journal's path. OSError when even that fails."""
    path = path_for(store_target)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (json.dumps(record, sort_keys=True, default=str) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def records(store_target: str) -> list[dict[str, Any]]:
    """What waits for the store (a torn last line, from a crash mid-write, is skipped)."""
    try:
        with open(path_for(store_target)) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def outcomes(store_target: str, incident_ids: list[str]) -> dict[str, str]:
    """The last journaled outcome of each of `incident_ids` that has one."""
    wanted = set(incident_ids)
    return {r["incident_id"]: r["outcome"] for r in records(store_target)
            if r.get("incident_id") in wanted and r.get("outcome")}


def replay(store: Any) -> int:
    """Move what waits into `store` (a Store that can be written now); how many records. Keeps the file if
    the store fails midway (a record replayed twice is an outcome counted twice, not one lost)."""
    path = path_for(store.target)
    if not os.path.exists(path):
        return 0
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        pending = records(store.target)
        for r in pending:
            if r.get("kind") == "audit":  # an audit event (a chaos run's fault) the store could not take
                store.audit(r["event"], r["holder"], r.get("details") or {}, r.get("incident_id"), r["at"])
                continue
            for target in r.get("targets") or ["unknown"]:
                store.record_outcome(r["incident_id"], r["incident_type"], target, r["mode"], r["outcome"], r["at"],
                                     known_good=r.get("known_good"))
            store.audit("finished", r.get("holder", "journal"), {**r.get("summary", {}), "journaled": True},
                        r["incident_id"], r["at"])
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    return len(pending)
