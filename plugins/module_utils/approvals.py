# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Proposals waiting for a human, paired with approvals, rejections and timeouts.

A remediation in `propose` mode sends a proposal (what, why, on which
targets, the evidence, and what the remediation needs to run later). A human
answers with an approval or a rejection for that incident. Each proposal is
answered exactly once: by the first decision that arrives before its
deadline, or by its timeout. The outcome is an event:

- `approval_granted`  (proposal + approval): run the remediation;
- `approval_rejected` (proposal + approval): record and escalate;
- `approval_timed_out` (proposal): record and escalate.

`check_*` validate and say why a message cannot be taken (the HTTP layer
answers with that); `take` changes the state and returns the events. The
state is plain data, saved by the caller so that a daemon restart loses no
waiting proposal.
"""
from __future__ import annotations

import re
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.signals import utc_seconds

DECISIONS = ("approve", "reject")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_PROPOSAL_KEYS = {"incident_id", "incident_type", "targets", "summary", "reasons", "evidence", "context", "timeout"}
_APPROVAL_KEYS = {"incident_id", "decision", "approver", "reason"}
_RECENT = 1000  # answered incidents remembered, to tell a late approval what happened


class ApprovalError(ValueError):
    """A message that cannot be taken; `status` is the HTTP status that says so (400 or 409)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _incident_id(payload: dict[str, Any]) -> str:
    incident_id = payload.get("incident_id")
    if not isinstance(incident_id, str) or not _ID.match(incident_id):
        raise ApprovalError(400, "incident_id must be an incident id (letters, digits, _ . : -; at most 128)")
    return incident_id


def _unknown(payload: dict[str, Any], known: set[str], what: str) -> None:
    extra = sorted(set(payload) - known)
    if extra:
        raise ApprovalError(400, f"unknown {what} field(s): {', '.join(extra)[:200]}")


def parse_proposal(payload: Any, default_timeout: float, max_timeout: float = 7 * 86400) -> dict[str, Any]:
    """The proposal, normalized, or ApprovalError(400) with the field at fault."""
    if not isinstance(payload, dict):
        raise ApprovalError(400, "a proposal must be a JSON object")
    _unknown(payload, _PROPOSAL_KEYS, "proposal")
    incident_id = _incident_id(payload)
    targets = payload.get("targets")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) and t for t in targets):
        raise ApprovalError(400, "targets must be a non-empty list of target names")
    timeout = payload.get("timeout", default_timeout)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= max_timeout:
        raise ApprovalError(400, f"timeout must be seconds between 0 and {max_timeout:.0f}")
    for key, kind in (("incident_type", str), ("summary", str), ("reasons", list), ("evidence", dict),
                      ("context", dict)):
        if key in payload and not isinstance(payload[key], kind):
            raise ApprovalError(400, f"{key} must be a {'string' if kind is str else kind.__name__}")
    return {
        "incident_id": incident_id,
        "incident_type": payload.get("incident_type", ""),
        "targets": list(dict.fromkeys(targets)),
        "summary": payload.get("summary", ""),
        "reasons": [str(r) for r in payload.get("reasons", [])],
        "evidence": payload.get("evidence", {}),
        "context": payload.get("context", {}),
        "timeout": float(timeout),
    }


def parse_approval(payload: Any) -> dict[str, Any]:
    """The approval or rejection, normalized, or ApprovalError(400) with the field at fault."""
    if not isinstance(payload, dict):
        raise ApprovalError(400, "an approval must be a JSON object")
    _unknown(payload, _APPROVAL_KEYS, "approval")
    incident_id = _incident_id(payload)
    decision, approver = payload.get("decision"), payload.get("approver")
    if decision not in DECISIONS:
        raise ApprovalError(400, f"decision must be one of {', '.join(DECISIONS)}")
    if not isinstance(approver, str) or not 0 < len(approver) <= 128:
        raise ApprovalError(400, "approver must name who decided (at most 128 characters)")
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise ApprovalError(400, "reason must be a string of at most 2000 characters")
    return {"incident_id": incident_id, "decision": decision, "approver": approver, "reason": reason}


class Approvals:
    """Waiting proposals and how answered ones ended."""

    def __init__(self, max_pending: int = 1000) -> None:
        self.max_pending = max_pending
        self.pending: dict[str, dict[str, Any]] = {}  # incident id -> proposal with proposed_at and deadline
        self.answered: dict[str, str] = {}  # incident id -> how it ended, in words (most recent last)

    # -- checks (no change) -------------------------------------------------------------

    def check_proposal(self, proposal: dict[str, Any]) -> None:
        incident_id = proposal["incident_id"]
        if incident_id in self.answered:  # each incident is proposed once: a replay cannot ask again
            raise ApprovalError(409, f"a proposal for {incident_id} was already answered: it "
                                     f"{self.answered[incident_id]}")
        if incident_id in self.pending:
            until = utc_seconds(self.pending[incident_id]["deadline"])
            raise ApprovalError(409, f"a proposal for {incident_id} is already waiting for a decision (until {until})")
        if len(self.pending) >= self.max_pending:
            raise ApprovalError(409, f"{self.max_pending} proposals are already waiting; decide some first")

    def check_approval(self, approval: dict[str, Any], now: float | None = None) -> None:
        incident_id = approval["incident_id"]
        if now is not None and incident_id in self.pending and self.pending[incident_id]["deadline"] <= now:
            raise ApprovalError(409, f"the proposal for {incident_id} timed out at "
                                     f"{utc_seconds(self.pending[incident_id]['deadline'])}")
        if incident_id not in self.pending:
            ended = self.answered.get(incident_id)
            how = f": it {ended}" if ended else " (never proposed, or forgotten)"
            raise ApprovalError(409, f"no proposal is waiting for {incident_id}{how}")

    # -- changes --------------------------------------------------------------------------

    def propose(self, proposal: dict[str, Any], now: float) -> list[dict[str, Any]]:
        self.check_proposal(proposal)
        entry = {**proposal, "proposed_at": now, "deadline": now + proposal["timeout"]}
        self.pending[proposal["incident_id"]] = entry
        return [{"kind": "proposal_pending", "proposal": entry}]

    def decide(self, approval: dict[str, Any], now: float) -> list[dict[str, Any]]:
        self.check_approval(approval)
        if self.pending[approval["incident_id"]]["deadline"] <= now:  # late: the timeout answered first
            return self.tick(now)
        proposal = self.pending.pop(approval["incident_id"])
        approval = {**approval, "decided_at": now}
        verb = "approved" if approval["decision"] == "approve" else "rejected"
        self._answered(approval["incident_id"], f"was {verb} by {approval['approver']} at {utc_seconds(now)}")
        kind = "approval_granted" if approval["decision"] == "approve" else "approval_rejected"
        return [{"kind": kind, "proposal": proposal, "approval": approval}]

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Proposals whose deadline has passed, each answered by its timeout."""
        events = []
        for incident_id in [i for i, p in self.pending.items() if p["deadline"] <= now]:
            proposal = self.pending.pop(incident_id)
            self._answered(incident_id, f"timed out at {utc_seconds(proposal['deadline'])} without a decision")
            events.append({"kind": "approval_timed_out", "proposal": proposal})
        return events

    def _answered(self, incident_id: str, how: str) -> None:
        self.answered.pop(incident_id, None)
        self.answered[incident_id] = how
        while len(self.answered) > _RECENT:
            self.answered.pop(next(iter(self.answered)))

    # -- state ----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {"version": 1, "pending": self.pending, "answered": self.answered}

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1 or not isinstance(state.get("pending"), dict):
            raise ValueError("saved approval state has an unknown shape")
        self.pending = {k: dict(v) for k, v in state["pending"].items()}
        self.answered = dict(state.get("answered", {}))
