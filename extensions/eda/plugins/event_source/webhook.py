# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receive generic JSON events, and pair signed proposals with approvals over HTTP(S)."""
from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

try:
    import ansible_collections.selfheal.core.plugins.module_utils  # noqa: F401 pylint: disable=unused-import
except ImportError:
    # ansible-rulebook runs this file by path and does not put the collection
    # root on sys.path: add the directory that holds ansible_collections/.
    sys.path.append(str(Path(__file__).absolute().parents[7]))

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source._ingest import (
    Inbound,
    Pipeline,
    Refused,
    parse_args,
    run_by_hand,
    serve,
)
from ansible_collections.selfheal.core.plugins.module_utils.approvals import (
    ApprovalError,
    Approvals,
    parse_approval,
    parse_proposal,
)

DOCUMENTATION = r"""
---
short_description: Receive generic JSON events; pair signed proposals with approvals and timeouts.
description:
  - An ansible-rulebook event source with the security of
    C(selfheal.core.alertmanager) (loopback by default, bearer token, HMAC
    signatures with a timestamp against replays, TLS and mutual TLS, body
    size limit, a durable intake answered 202 only once kept, 503 and Retry-After
    for a sustained overload, 400 with the reason for malformed input or
    non-standard JSON, 415 for a body sent as something else than JSON, 401
    for bad credentials, no credentials in events or logs).
  - A JSON object posted to any path becomes one event with C(payload), C(meta.endpoint) and
    C(meta.headers) (the harmless headers only). A body without a content type is taken when it is JSON,
    for generic senders. O(hmac_scheme=eda) takes the signatures of C(ansible.eda.webhook).
  - A proposal posted to O(proposal_path) waits for a human. It must be
    HMAC-signed and have C(incident_id) and C(targets); optionally
    C(incident_type), C(summary), C(reasons), C(evidence), C(context) (what the
    remediation needs when it runs) and C(timeout) (seconds, default
    O(approval_timeout)). It becomes a C(proposal_pending) event. A second
    proposal for an incident that is already waiting gets 409.
  - A message posted to O(approval_path) approves or rejects a waiting
    proposal. It must be HMAC-signed and have C(incident_id), C(decision)
    (V(approve) or V(reject)) and C(approver), optionally C(reason). An
    approval for an incident with no waiting proposal (never proposed, already
    decided, timed out) gets 409 with what happened to it.
  - Each proposal is answered exactly once, by an event with C(kind)
    V(approval_granted) or V(approval_rejected) (with C(proposal) and
    C(approval)), or V(approval_timed_out) (with C(proposal)) when its
    deadline passes without a decision.
  - With O(state_path), waiting proposals are kept in a SQLite store and survive a restart of the daemon;
    deadlines that passed while it was down time out at start.
options:
  host:
    description: Address to listen on. The default listens on loopback only.
    type: str
    default: 127.0.0.1
  port:
    description: TCP port to listen on.
    type: int
    default: 5000
  token:
    description:
      - Bearer token the sender must present in its C(Authorization) header,
        at least 16 characters; compared in constant time.
      - With no O(token), O(hmac_secret) or O(cafile), the source listens on loopback only, and refuses
        to start on any other O(host).
    type: str
  hmac_secret:
    description:
      - Secret of HMAC-SHA256 body signatures, at least 16 characters. When set, every request needs
        O(hmac_timestamp_header) (Unix time) and O(hmac_header) (C(sha256=) and the hex HMAC of the
        timestamp, a dot and the body). Required for approvals.
    type: str
  hmac_scheme:
    description:
      - V(selfheal) - the signature covers a timestamp, a dot and the body, so a captured request
        cannot be replayed (O(hmac_timestamp_header), O(hmac_max_age)).
      - V(eda) - the convention of C(ansible.eda.webhook) (GitHub style) - an HMAC of the body alone in
        O(hmac_header), hex or base64 (O(hmac_format)), optionally prefixed with C(sha256=). No replay
        protection.
    type: str
    default: selfheal
  hmac_header:
    description:
      - Header that carries the signature. Defaults to C(X-Selfheal-Signature) for the V(selfheal) scheme
        and C(X-Hub-Signature-256) for V(eda).
    type: str
  hmac_timestamp_header:
    description: Header that carries the signed Unix time (V(selfheal) scheme).
    type: str
    default: X-Selfheal-Timestamp
  hmac_max_age:
    description: Seconds a signed request stays valid, against replays (V(selfheal) scheme).
    type: int
    default: 300
  hmac_algo:
    description: Hash of the V(eda) scheme's HMAC.
    type: str
    default: sha256
  hmac_format:
    description: Encoding of the V(eda) scheme's signature, V(hex) or V(base64).
    type: str
    default: hex
  certfile:
    description: PEM certificate (chain) of the server; enables HTTPS.
    type: str
  keyfile:
    description: PEM private key of O(certfile).
    type: str
  cafile:
    description: PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS).
    type: str
  max_body_bytes:
    description: Largest request body accepted; larger ones get 413.
    type: int
    default: 1048576
  buffer_size:
    description:
      - Events accepted and not yet processed, past which a request gets 503 with Retry-After.
    type: int
    default: 100000
  intake_path:
    description:
      - SQLite file of the intake, where accepted requests are kept until they are processed and
        checkpointed. Defaults to a file beside O(state_path) (C(<state_path without extension>.webhook-intake.db)).
      - Without either, the intake is in memory and a restart loses what was not yet handed on.
    type: str
  approval_path:
    description: Path (without the leading slash) that receives approvals and rejections.
    type: str
    default: approvals
  proposal_path:
    description: Path (without the leading slash) that receives proposals.
    type: str
    default: proposals
  approval_timeout:
    description: Seconds a proposal waits for a decision when it does not say.
    type: float
    default: 900
  max_pending:
    description: Most proposals waiting at once; more get 409.
    type: int
    default: 1000
  state_path:
    description: SQLite file that keeps waiting proposals across restarts (may be the correlation store).
    type: str
  proposal_secret:
    description:
      - HMAC secret that signs proposals, at least 16 characters. When set, proposals must be signed with
        it and approvals with O(hmac_secret), so the automation that proposes cannot approve its own
        proposals. Keep O(hmac_secret) with the approvers only. An empty value means not set.
    type: str
"""

EXAMPLES = r"""
- name: Proposed remediations wait for a human
  hosts: all
  sources:
    - selfheal.core.webhook:
        port: 5001
        hmac_secret: "{{ approval_hmac_secret }}"
        approval_timeout: 600
        state_path: /var/lib/selfheal/store.db
  rules:
    - name: A human approved, remediate
      condition: event.kind == "approval_granted"
      action:
        run_playbook:
          name: selfheal.core.remediate_service_down
    - name: Rejected or timed out, record and escalate
      condition: event.kind in ["approval_rejected", "approval_timed_out"]
      action:
        run_playbook:
          name: selfheal.core.proposal_closed
"""

PLUGIN = "selfheal.core.webhook"
logger = logging.getLogger(__name__)

_ARGS: dict[str, tuple[type, Any, bool]] = {
    "approval_path": (str, "approvals", False),
    "proposal_path": (str, "proposals", False),
    "approval_timeout": (float, 900.0, False),
    "max_pending": (int, 1000, False),
    "proposal_secret": (str, None, True),
}
_STATE_NAME = "selfheal.core.webhook/approvals"


class _Pairing(Pipeline):
    """Proposals and approvals: validated at the door (so the sender hears why), paired in order."""

    state_name = _STATE_NAME
    json_content_type_required = False  # generic senders: a JSON body without a content type is taken

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.paths = {settings[name].strip("/"): name for name in ("approval_path", "proposal_path")}
        if "" in self.paths or len(self.paths) != 2:
            raise ValueError(f"{PLUGIN}: arguments approval_path and proposal_path must be set and differ")
        if settings["approval_timeout"] <= 0 or settings["max_pending"] < 1:
            raise ValueError(f"{PLUGIN}: arguments approval_timeout and max_pending must be positive")
        self.approvals = Approvals(settings["max_pending"])

    def load_state(self, state: dict[str, Any]) -> None:
        self.approvals.load_state(state)
        logger.info("%s: %d proposals still wait for a decision", PLUGIN, len(self.approvals.pending))

    def to_state(self) -> dict[str, Any]:
        return self.approvals.to_state()

    def secret_for(self, endpoint: str) -> str:
        """Which secret must have signed a request to `endpoint`: proposals may have their own."""
        if self.paths.get(endpoint.strip("/")) == "proposal_path" and self.settings["proposal_secret"]:
            return "proposal_secret"
        return "hmac_secret"

    def parse(self, payload: Any, request: Inbound) -> list[Any]:
        meta = {"endpoint": request.endpoint, "received_at": request.received_at, "headers": request.headers}
        which = self.paths.get(request.endpoint.strip("/"))
        if which is None:
            if not isinstance(payload, dict):
                raise Refused(400, f"payload must be a JSON object, got {type(payload).__name__}")
            return [{"payload": payload, "meta": meta}]
        if self.settings[self.secret_for(request.endpoint)] is None:
            raise Refused(403, "proposals and approvals need a signed request: set hmac_secret on this source")
        try:
            if which == "proposal_path":
                proposal = parse_proposal(payload, self.settings["approval_timeout"])
                self.approvals.check_proposal(proposal)
                return [{"proposal": proposal, "meta": meta}]
            approval = parse_approval(payload)
            self.approvals.check_approval(approval, request.received_at)
            return [{"approval": approval, "meta": meta}]
        except ApprovalError as exc:
            raise Refused(exc.status, exc.reason) from None

    def process(self, item: dict[str, Any], now: float) -> list[dict[str, Any]]:
        try:
            if "proposal" in item:
                events = self.approvals.propose(item["proposal"], now)
            elif "approval" in item:
                events = self.approvals.decide(item["approval"], now)
            else:
                return [item]
        except ApprovalError as exc:  # a second answer that was accepted while the first one was buffered
            logger.warning("%s: %s", PLUGIN, exc.reason)
            return []
        return [{**event, "meta": item["meta"]} for event in events]

    def tick(self, now: float, looked: Any = None) -> list[dict[str, Any]]:
        events = self.approvals.tick(now)
        return [{**event, "meta": {"endpoint": "", "received_at": now, "headers": {}}} for event in events]


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Serve until cancelled; then return, as the stock source does."""
    settings = parse_args(PLUGIN, args, _ARGS)
    await serve(PLUGIN, queue, settings, _Pairing(settings))


if __name__ == "__main__":
    run_by_hand(main)
