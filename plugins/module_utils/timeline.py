# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The recovery timeline, read from the store's audit trail: the one record of what happened.

Each part writes its own events to the audit trail as it happens: a chaos playbook the fault it
injected (``fault_injected``); the guard its decision, with the alert as it started firing and reached
the daemon and the approval it acted on (``decided``); each step of the ladder the action it took with
the prior state it recorded (``action_done``) and then its result (``verified_healthy`` or
``step_failed``); proposals theirs (``proposed``, ``escalated``); every run its outcome (``finished``).
`entries()` turns those events into the stages below, per target; the recovery summary (detect, decide,
act, verify, time to recovery) is computed here and nowhere else.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.signals import SignalError, parse_time

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
# events that are a stage of their own (their details name the target)
_AS_STAGE = ("fault_injected", "action_done", "verified_healthy", "proposed", "escalated")
# how a run that ended otherwise than verified shows on the timeline
_FINISHED = {"escalated": ("escalated",), "rolled_back": ("escalated",), "failed": ("escalated",),
             "rejected": ("rejected", "escalated"), "timed_out": ("approval_timed_out", "escalated")}


def _entry(stage: str, target: str, at: float, incident_id: str | None, details: dict[str, Any]) -> dict[str, Any]:
    return {"at": float(at), "stage": stage, "target": target, "incident_id": incident_id, "details": details}


def _when(value: Any) -> float | None:
    try:
        return parse_time(value)
    except SignalError:
        return None


def _decided(row: dict[str, Any]) -> list[dict[str, Any]]:
    d, iid, at = row["details"], row["incident_id"], row["at"]
    decision = d.get("decision") or {}
    signal = d.get("signal") or {}
    out: list[dict[str, Any]] = []
    for target in d.get("requested") or decision.get("targets") or []:
        if d.get("approval"):
            approval = d["approval"]
            reason = f": {approval['reason']}" if approval.get("reason") else ""
            out.append(_entry("approved", target, at, iid,
                              {"summary": f"approved by {approval.get('approver')}{reason}", "approval": approval}))
        else:
            fired, received = _when(signal.get("starts_at")), _when(signal.get("received_at"))
            if fired is not None:
                out.append(_entry("alert_fired", target, fired, iid, {
                    "summary": f"{signal.get('name', 'alert')} ({signal.get('severity', 'unknown')})",
                    "fingerprint": signal.get("fingerprint")}))
            if received is not None:
                more = f" (+{signal['symptom_count']} symptoms)" if signal.get("symptom_count") else ""
                out.append(_entry("alert_received", target, received, iid,
                                  {"summary": f"{signal.get('summary') or signal.get('name', 'alert')}{more}"}))
        if decision.get("allowed") and target in decision.get("targets", []):
            out.append(_entry("remediation_started", target, at, iid,
                              {"summary": f"{decision.get('mode')}: steps {', '.join(decision.get('steps', []))}",
                               "decision": decision}))
        elif not decision.get("allowed") and decision.get("mode") != "propose":
            out.append(_entry("held_back", target, at, iid,
                              {"summary": "; ".join(decision.get("reasons", [])[1:]), "decision": decision}))
    return out


def entries(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages of recovery in the audit trail's events (as Store.audit_trail returns them), by time."""
    out: list[dict[str, Any]] = []
    for row in rows:
        event, d = row["event"], row.get("details") or {}
        if event == "decided":
            out.extend(_decided(row))
        elif event in _AS_STAGE and d.get("target"):
            details = dict(d)
            if event == "action_done":
                details.setdefault("summary", f"{d.get('action', 'acted')} (step {d.get('step')})")
            elif event == "verified_healthy":
                held = f", held {float(d['held_until']) - float(row['at']):.0f}s" if d.get("held_until") else ""
                details.setdefault("summary", f"step {d.get('step')} verified{held}")
            out.append(_entry(event, str(d["target"]), row["at"], row["incident_id"], details))
        elif event == "finished" and d.get("outcome") in _FINISHED:
            summary = (d.get("evidence") or {}).get("summary") or f"outcome {d['outcome']}"
            for target in d.get("targets") or []:
                for stage in _FINISHED[d["outcome"]]:
                    out.append(_entry(stage, target, row["at"], row["incident_id"], {"summary": summary}))
    return sorted(out, key=lambda e: e["at"])


def most_at_once(intervals: Iterable[tuple[float, float]]) -> int:
    """The most of these (start, end) intervals open at the same moment: how many targets were out of their
    pool, or being changed, at once (an interval that ends when another starts does not overlap it)."""
    edges = sorted(edge for start, end in intervals for edge in ((start, 1), (end, -1)))
    most = now = 0
    for _at, change in edges:
        now += change
        most = max(most, now)
    return most


def load(store: Any, since: float, limit: int = 100000) -> list[dict[str, Any]]:
    """The stages recorded in `store` (a Store) since `since`."""
    return entries(store.audit_trail(since=since, limit=limit))


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


def recovery_of(store: Any, target: str, since: float) -> Recovery | None:
    """The recovery of `target` that starts with a fault injected at or after `since`, if one is recorded."""
    for rec in recoveries(load(store, since)):
        fault = rec.at("fault_injected")
        if rec.target == target and fault is not None and fault >= since:
            return rec
    return None


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
