# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receive generic JSON events and signed approval messages over HTTP(S)."""
from __future__ import annotations

import asyncio
import logging
import re
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
    Refused,
    parse_args,
    serve,
)

DOCUMENTATION = r"""
---
short_description: Receive generic JSON events and signed approval messages.
description:
  - An ansible-rulebook event source with the security of
    C(selfheal.core.alertmanager) (loopback by default, bearer token, HMAC
    signatures with a timestamp against replays, TLS and mutual TLS, body
    size limit, bounded buffer with 503 and Retry-After, 400 with the reason
    for malformed input, 401 for bad credentials, no headers or secrets in
    events or logs).
  - A JSON object posted to any path becomes one event with C(payload) and C(meta.endpoint).
  - A message posted to O(approval_path) is an approval or a rejection of a
    proposed remediation. It must be HMAC-signed (O(hmac_secret) is required
    for it) and have C(incident_id), C(decision) (V(approve) or V(reject)) and
    C(approver), optionally C(reason). It becomes an event with C(approval)
    (those four fields) and C(meta.endpoint).
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
    type: str
  hmac_secret:
    description:
      - Secret of HMAC-SHA256 body signatures, at least 16 characters. When set, every request needs
        O(hmac_timestamp_header) (Unix time) and O(hmac_header) (C(sha256=) and the hex HMAC of the
        timestamp, a dot and the body). Required for approvals.
    type: str
  hmac_header:
    description: Header that carries the signature.
    type: str
    default: X-Selfheal-Signature
  hmac_timestamp_header:
    description: Header that carries the signed Unix time.
    type: str
    default: X-Selfheal-Timestamp
  hmac_max_age:
    description: Seconds a signed request stays valid, against replays.
    type: int
    default: 300
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
    description: Events held between the HTTP server and the rulebook; when full, 503 with Retry-After.
    type: int
    default: 10000
  approval_path:
    description: Path (without the leading slash) that receives approval messages.
    type: str
    default: approvals
"""

EXAMPLES = r"""
- name: Approvals for proposed remediations
  hosts: all
  sources:
    - selfheal.core.webhook:
        port: 5001
        hmac_secret: "{{ approval_hmac_secret }}"
  rules:
    - name: A human approved
      condition: event.approval.decision == "approve"
      action:
        debug:
          msg: "{{ event.approval.approver }} approved {{ event.approval.incident_id }}"
"""

PLUGIN = "selfheal.core.webhook"
logger = logging.getLogger(__name__)

_ARGS: dict[str, tuple[type, Any, bool]] = {
    "approval_path": (str, "approvals", False),
}
_DECISIONS = ("approve", "reject")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _approval(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise Refused(400, "an approval must be a JSON object")
    extra = sorted(set(payload) - {"incident_id", "decision", "approver", "reason"})
    if extra:
        raise Refused(400, f"unknown approval field(s): {', '.join(extra)[:200]}")
    incident_id, decision, approver = payload.get("incident_id"), payload.get("decision"), payload.get("approver")
    if not isinstance(incident_id, str) or not _ID.match(incident_id):
        raise Refused(400, "incident_id must be an incident id (letters, digits, _ . : -; at most 128)")
    if decision not in _DECISIONS:
        raise Refused(400, f"decision must be one of {', '.join(_DECISIONS)}")
    if not isinstance(approver, str) or not 0 < len(approver) <= 128:
        raise Refused(400, "approver must name who decided (at most 128 characters)")
    reason = payload.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 2000:
        raise Refused(400, "reason must be a string of at most 2000 characters")
    return {"incident_id": incident_id, "decision": decision, "approver": approver, "reason": reason}


async def main(queue: asyncio.Queue[Any], args: dict[str, Any]) -> None:
    """Serve until cancelled."""
    settings = parse_args(PLUGIN, args, _ARGS)
    approval_path = settings["approval_path"].strip("/")
    if not approval_path:
        raise ValueError(f"{PLUGIN}: argument approval_path must not be empty")

    def parse(payload: Any, endpoint: str, received_at: float) -> list[Any]:
        if endpoint.strip("/") == approval_path:
            if settings["hmac_secret"] is None:
                raise Refused(403, "approvals need a signed request: set hmac_secret on this source")
            return [{"approval": _approval(payload), "meta": {"endpoint": endpoint, "received_at": received_at}}]
        if not isinstance(payload, dict):
            raise Refused(400, f"payload must be a JSON object, got {type(payload).__name__}")
        return [{"payload": payload, "meta": {"endpoint": endpoint, "received_at": received_at}}]

    def process(item: dict[str, Any], now: float) -> list[dict[str, Any]]:
        return [item]

    await serve(PLUGIN, queue, settings, parse, process)


if __name__ == "__main__":
    import json

    class _PrintQueue(asyncio.Queue[Any]):
        async def put(self, item: Any) -> None:
            print(json.dumps(item))

    asyncio.run(main(_PrintQueue(), {}))
