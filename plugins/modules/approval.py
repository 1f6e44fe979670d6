#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: approval
short_description: Send a signed proposal, approval or rejection to the approvals webhook of the daemon
version_added: 0.1.0
description:
  - The sender's side of the approval flow. A remediation in C(propose) mode
    sends a proposal (O(action=propose)) with what it would do, why, on which
    targets and the evidence; the daemon's C(selfheal.core.webhook) source
    keeps it waiting until a human approves (O(action=approve)) or rejects
    (O(action=reject)) it, or until its timeout.
  - Every message is signed with HMAC-SHA256 over a timestamp and the body,
    so a forged or replayed message is refused by the daemon.
  - An approval for an incident with no waiting proposal fails with the
    daemon's answer (never proposed, already decided, or timed out). A
    proposal for an incident that already waits is not sent twice
    (C(changed=false)).
author:
  - selfheal.core developers (@selfheal-core)
extends_documentation_fragment:
  - selfheal.core.attributes
attributes:
  check_mode:
    support: full
    details: In check mode the message is built and returned, and nothing is sent.
  diff_mode:
    support: none
options:
  url:
    description:
      - Base URL of the daemon's C(selfheal.core.webhook) source, for example V(http://127.0.0.1:5001).
    type: str
    required: true
  secret:
    description: The source's C(hmac_secret), at least 16 characters.
    type: str
    required: true
  token:
    description: Bearer token, when the source also requires one.
    type: str
  action:
    description: What to send.
    type: str
    choices: [propose, approve, reject]
    required: true
  incident_id:
    description: Id of the incident.
    type: str
    required: true
  approver:
    description: Who decides (O(action=approve) and O(action=reject)).
    type: str
  reason:
    description: Why, in words (optional for a decision).
    type: str
    default: ""
  incident_type:
    description: Incident type of the proposal.
    type: str
    default: ""
  targets:
    description: Targets the proposed remediation would touch (required with O(action=propose)).
    type: list
    elements: str
    default: []
  summary:
    description: One line saying what would be done.
    type: str
    default: ""
  reasons:
    description: Why, as the policy decision's reasons.
    type: list
    elements: str
    default: []
  evidence:
    description: The evidence bundle (decision, diagnosis) the human decides on.
    type: dict
    default: {}
  context:
    description: What the remediation needs when it runs after approval (target, service, incident, signal).
    type: dict
    default: {}
  timeout:
    description: Seconds the proposal waits for a decision before it times out and is escalated.
    type: float
  proposal_path:
    description: Path of proposals on the source.
    type: str
    default: proposals
  approval_path:
    description: Path of approvals on the source.
    type: str
    default: approvals
  http_timeout:
    description: Seconds the request may take.
    type: float
    default: 10
  retries:
    description:
      - Times a connection error or an HTTP 5xx or 429 answer is retried, with a short backoff.
        A retried proposal that had arrived gets 409 (already waiting) and counts as sent.
    type: int
    default: 2
  validate_certs:
    description: Verify the source's TLS certificate.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Propose a restart and wait for a human
  selfheal.core.approval:
    url: http://127.0.0.1:5001
    secret: "{{ selfheal_approval_secret }}"
    action: propose
    incident_id: "{{ incident_id }}"
    incident_type: service_hung
    targets: [web1]
    summary: restart demo on web1
    reasons: "{{ decision.reasons }}"
    evidence: {diagnosis: "{{ service_diagnosis }}"}
    timeout: 900
  delegate_to: localhost

- name: Approve it
  selfheal.core.approval:
    url: http://127.0.0.1:5001
    secret: "{{ selfheal_approval_secret }}"
    action: approve
    incident_id: service_hung-1a2b3c4d5e
    approver: ana
    reason: checked the dashboards, go
"""

RETURN = r"""
message:
  description: The message sent (or that would be sent in check mode).
  returned: always
  type: dict
status:
  description: HTTP status of the daemon's answer (202 accepted, 409 already waiting).
  returned: when sent
  type: int
  sample: 202
attempts:
  description: Requests made.
  returned: when sent
  type: int
  sample: 1
"""

import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.sender import PostError, as_json, post_json
from ansible_collections.selfheal.core.plugins.module_utils.signing import signed_headers


def _message(p: dict[str, Any]) -> dict[str, Any]:
    if p["action"] == "propose":
        if not p["targets"]:
            raise ModuleError("action=propose needs targets (what the remediation would touch)")
        message = {key: p[key] for key in ("incident_id", "incident_type", "targets", "summary", "reasons",
                                           "evidence", "context")}
        if p["timeout"] is not None:
            message["timeout"] = p["timeout"]
        return message
    if not p["approver"]:
        raise ModuleError(f"action={p['action']} needs approver (who decides)")
    return {"incident_id": p["incident_id"], "decision": p["action"], "approver": p["approver"],
            "reason": p["reason"]}


def _send(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    if len(p["secret"]) < 16:
        raise ModuleError("secret must be at least 16 characters (the source's hmac_secret)")
    message = _message(p)
    if check_mode:
        return {"changed": False, "message": message}
    path = p["proposal_path"] if p["action"] == "propose" else p["approval_path"]
    url = f"{p['url'].rstrip('/')}/{path.strip('/')}"
    body = as_json(message)
    headers = signed_headers(p["secret"], body, time.time())
    if p["token"]:
        headers["Authorization"] = f"Bearer {p['token']}"
    try:
        status, attempts = post_json(url, body, headers, p["http_timeout"], p["validate_certs"], p["retries"],
                                     [p["secret"], p["token"] or ""], "selfheal.core.approval")
    except PostError as exc:
        why = exc.error_field()
        if exc.status == 409 and p["action"] == "propose" and "already waiting" in why:
            return {"changed": False, "message": message, "status": 409, "attempts": exc.attempts}
        if exc.status is None:
            raise ModuleError(f"cannot reach the daemon's approvals source: {exc}; nothing was sent") from None
        raise ModuleError(f"the daemon refused the {p['action']} message for {p['incident_id']} "
                          f"(HTTP {exc.status}): {why or exc}") from None
    return {"changed": True, "message": message, "status": status, "attempts": attempts}


ARGUMENT_SPEC = {
    "url": {"type": "str", "required": True},
    "secret": {"type": "str", "required": True, "no_log": True},
    "token": {"type": "str", "no_log": True},
    "action": {"type": "str", "required": True, "choices": ["propose", "approve", "reject"]},
    "incident_id": {"type": "str", "required": True},
    "approver": {"type": "str"},
    "reason": {"type": "str", "default": ""},
    "incident_type": {"type": "str", "default": ""},
    "targets": {"type": "list", "elements": "str", "default": []},
    "summary": {"type": "str", "default": ""},
    "reasons": {"type": "list", "elements": "str", "default": []},
    "evidence": {"type": "dict", "default": {}},
    "context": {"type": "dict", "default": {}},
    "timeout": {"type": "float"},
    "proposal_path": {"type": "str", "default": "proposals"},
    "approval_path": {"type": "str", "default": "approvals"},
    "http_timeout": {"type": "float", "default": 10},
    "retries": {"type": "int", "default": 2},
    "validate_certs": {"type": "bool", "default": True},
}


def main() -> None:
    run_module(ARGUMENT_SPEC, _send)


if __name__ == "__main__":
    main()
