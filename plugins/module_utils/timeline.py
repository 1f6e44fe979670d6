# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incident timeline: an append-only JSON-lines file of what happened when.

Each line is one stage of one recovery: the fault (when chaos injects one),
the alert firing and arriving, the remediation starting, the action done,
health verified, or the escalation. Appends take an exclusive lock, so runs
in parallel never interleave a line. The recovery summary (detect, decide,
act, verify, time to recovery) is computed here and nowhere else.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

STAGES = (
    "fault_injected",
    "alert_fired",
    "alert_received",
    "remediation_started",
    "action_done",
    "verified_healthy",
    "escalated",
    "held_back",
    "proposed",
    "approved",
    "rejected",
    "approval_timed_out",
)
FINAL_STAGES = ("verified_healthy", "escalated", "held_back")
PHASES = (
    ("detect", "fault_injected", "alert_received"),
    ("decide", "alert_received", "remediation_started"),
    ("act", "remediation_started", "action_done"),
    ("verify", "action_done", "verified_healthy"),
)


class TimelineError(Exception):
    """The timeline file cannot be read or written; the message says why."""


def record(path: str, stage: str, target: str, incident_id: str | None = None,
           at: float | None = None, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one stage and return the line written."""
    entry = build(stage, target, incident_id, at, details)
    line = json.dumps(entry, sort_keys=True, default=str) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    except OSError as exc:
        raise TimelineError(f"cannot open timeline {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
    except OSError as exc:
        raise TimelineError(f"cannot append to timeline {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return entry


def build(stage: str, target: str, incident_id: str | None = None, at: float | None = None,
          details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate one timeline entry without writing it (what check mode shows)."""
    if stage not in STAGES:
        raise TimelineError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    if not target:
        raise TimelineError("a timeline entry needs a target")
    return {
        "at": float(at) if at is not None else time.time(),
        "stage": stage,
        "target": target,
        "incident_id": incident_id,
        "details": details or {},
    }


def read(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All entries in file order, and a note for every line that could not be read."""
    entries: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    if not isinstance(entry, dict) or entry.get("stage") not in STAGES:
                        raise ValueError("not a timeline entry")
                    entries.append(entry)
                except ValueError as exc:
                    problems.append(f"{path}:{number}: {exc}")
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TimelineError(f"cannot read timeline {path}: {exc.strerror}") from exc
    return entries, problems


@dataclass
class Recovery:
    """One fault and what followed it on the same target."""

    target: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if "verified_healthy" in self.stages:
            return "healed"
        if "escalated" in self.stages:
            return "escalated"
        if "held_back" in self.stages:
            return "held back"
        if "proposed" in self.stages and "approved" not in self.stages:
            return "waiting for approval"
        return "open"

    @property
    def complete(self) -> bool:
        """Every stage from fault to verified health is on record."""
        wanted = ("fault_injected", "alert_received", "remediation_started", "action_done", "verified_healthy")
        return all(stage in self.stages for stage in wanted)

    def at(self, stage: str) -> float | None:
        entry = self.stages.get(stage)
        return float(entry["at"]) if entry else None

    def phases(self) -> dict[str, float | None]:
        """Seconds spent detecting, deciding, acting, verifying, and the total."""
        out: dict[str, float | None] = {}
        for name, start, end in PHASES:
            t0, t1 = self.at(start), self.at(end)
            out[name] = (t1 - t0) if t0 is not None and t1 is not None else None
        t0, t1 = self.at("fault_injected"), self.at("verified_healthy")
        out["time_to_recovery"] = (t1 - t0) if t0 is not None and t1 is not None else None
        return out


def recoveries(entries: list[dict[str, Any]]) -> list[Recovery]:
    """Split entries into recoveries: each fault opens one for its target.

    Entries for a target that has no open fault (an alert from a real
    failure, not injected) open a recovery of their own at their first stage.
    """
    open_by_target: dict[str, Recovery] = {}
    done: list[Recovery] = []
    for entry in sorted(entries, key=lambda e: float(e["at"])):
        target, stage = entry["target"], entry["stage"]
        current = open_by_target.get(target)
        if stage == "fault_injected" or current is None:
            if current is not None:
                done.append(current)
            current = Recovery(target)
            open_by_target[target] = current
        current.stages.setdefault(stage, entry)
        if stage in FINAL_STAGES:
            done.append(current)
            del open_by_target[target]
    done.extend(open_by_target.values())
    return sorted(done, key=lambda r: min(float(e["at"]) for e in r.stages.values()))


def render(recovery: Recovery) -> str:
    """A human-readable timeline: each stage with its offset from the first."""
    ordered = sorted(recovery.stages.values(), key=lambda e: float(e["at"]))
    t0 = float(ordered[0]["at"])
    lines = [f"timeline for {recovery.target} ({recovery.outcome})"]
    for entry in ordered:
        stamp = time.strftime("%H:%M:%S", time.localtime(float(entry["at"])))
        frac = f"{float(entry['at']) % 1:.3f}"[1:]
        note = entry.get("details", {}).get("summary", "")
        lines.append(f"  {stamp}{frac}  +{float(entry['at']) - t0:7.2f}s  {entry['stage']:<20} {note}".rstrip())
    phases = recovery.phases()
    parts = [f"{name} {value:.2f}s" for name, value in phases.items()
             if name != "time_to_recovery" and value is not None]
    if parts:
        lines.append("  phases: " + ", ".join(parts))
    if phases["time_to_recovery"] is not None:
        lines.append(f"  time to recovery: {phases['time_to_recovery']:.2f}s")
    return "\n".join(lines)
