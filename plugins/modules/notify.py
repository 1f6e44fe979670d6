#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: notify
short_description: Send one escalation with its evidence to a webhook, Slack or PagerDuty
version_added: 0.1.0
description:
  - POSTs one notification (a summary, its severity, the target and the evidence
    bundle a human needs to take over) as JSON to O(url).
  - With O(format=generic) the document is
    C({summary, severity, source, incident_id, target, sent_at, evidence}),
    with C(source=selfheal.core) and C(sent_at) the ISO 8601 UTC time; C(links) is
    added when O(links) is set. This is what the C(selfheal.core.escalate) role has always posted.
  - With O(format=slack) it is a Slack incoming-webhook message, fallback C(text)
    and C(blocks) (header, summary, severity, target and incident, one section per
    evidence item, links), kept within Slack's limits (3000 characters a section,
    150 a header, 50 blocks; evidence sections past the last block are counted, not sent).
  - With O(format=pagerduty) it is a PagerDuty Events API v2 event, to be sent to
    V(https://events.pagerduty.com/v2/enqueue) or your region's endpoint.
    The summary is cut to 1024 characters and the evidence goes in C(payload.custom_details).
  - Connection errors, HTTP 5xx and HTTP 429 are retried O(retries) times with a
    short backoff. Any other answer outside 2xx fails at once; redirects are not followed.
  - Failure messages name the receiver's host and port, never the URL's path or
    query, which often carry a secret (Slack webhook URLs do). O(url),
    O(routing_key) and O(token) are never returned.
author:
  - selfheal.core developers (@selfheal-core)
extends_documentation_fragment:
  - selfheal.core.attributes
attributes:
  check_mode:
    support: full
    details: In check mode the payload is built and returned, and nothing is sent.
  diff_mode:
    support: none
options:
  url:
    description:
      - Receiver of the POST, C(http://) or C(https://).
      - Treated as a secret, because Slack webhook URLs and many bridges carry
        their credential in the path or query.
    type: str
    required: true
  format:
    description: Shape of the document sent.
    type: str
    choices: [generic, slack, pagerduty]
    default: generic
  summary:
    description:
      - One line for the human who gets the notification. Must not be empty.
    type: str
    required: true
  severity:
    description: Severity of the notification (PagerDuty's severities).
    type: str
    choices: [critical, error, warning, info]
    default: critical
  incident_id:
    description:
      - Id of the incident. With O(format=pagerduty) it is the C(dedup_key)
        unless O(dedup_key) is set.
    type: str
  dedup_key:
    description:
      - PagerDuty deduplication key (at most 255 characters); defaults to O(incident_id).
      - Needed with O(event_action=acknowledge) or O(event_action=resolve) when O(incident_id) is not set.
      - Only used with O(format=pagerduty).
    type: str
  target:
    description:
      - What the notification is about, a host name usually.
      - With O(format=pagerduty) it is C(payload.source), V(selfheal.core) when unset.
    type: str
  evidence:
    description:
      - Everything a human needs to take over, a free-form dictionary.
      - "Documented keys: C(decision) (the guard decision, whose C(reasons) Slack
        shows as a list), C(reasons), C(diagnosis), C(actions) or C(action),
        C(prior_state), C(verification), C(rollback), and C(links) (a list like O(links))."
      - "With O(format=pagerduty), C(component) (or C(service)), C(group) and
        C(incident_type) fill C(payload.component), C(payload.group) and C(payload.class)."
    type: dict
    default: {}
  links:
    description:
      - Links for the human (runbook, dashboard, incident timeline).
      - Slack and PagerDuty show them with those in the C(links) key of O(evidence).
    type: list
    elements: dict
    default: []
    suboptions:
      href:
        description: The address.
        type: str
        required: true
      text:
        description: What the link shows; the address when unset.
        type: str
  routing_key:
    description:
      - Integration key of the PagerDuty service. Required with O(format=pagerduty).
      - Returned as V(<secret>) in RV(payload).
    type: str
  event_action:
    description:
      - V(trigger) pages a human. V(acknowledge) and V(resolve) close a page (with O(format=pagerduty) they send
        only the routing key, the action and the dedup key, and the generic document says C(event_action)).
      - V(notice) tells after the fact and never pages (the catalog's C(escalation.notify_resolved)). With
        O(format=pagerduty) it is a Change Event, sent to C(.../v2/change/enqueue) when O(url) is the
        C(.../v2/enqueue) endpoint.
    type: str
    choices: [trigger, acknowledge, resolve, notice]
    default: trigger
  page_budget:
    description:
      - Pages (V(trigger)) per receiver and hour, counted on this controller across every run, past which
        each page is still sent but grouped (one dedup key per receiver and hour, and a summary that says
        so), so that a storm of pages is one alert, not a hundred. V(0) counts nothing.
    type: int
    default: 20
  token:
    description: Bearer token sent in the C(Authorization) header, for receivers that want one.
    type: str
  timeout:
    description: Seconds one request may take.
    type: int
    default: 10
  validate_certs:
    description: Verify the TLS certificate of an https receiver.
    type: bool
    default: true
  retries:
    description: Further attempts after a connection error, HTTP 5xx or HTTP 429.
    type: int
    default: 2
notes:
  - Run it on the controller (C(delegate_to=localhost)) when the managed hosts cannot reach the receiver.
seealso:
  - name: PagerDuty Events API v2
    description: The event document sent with O(format=pagerduty).
    link: https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
  - name: Slack incoming webhooks
    description: The message sent with O(format=slack).
    link: https://api.slack.com/messaging/webhooks
"""

EXAMPLES = r"""
- name: Escalate | page a human through the generic webhook
  selfheal.core.notify:
    url: "{{ selfheal_notify_url }}"
    summary: "demo on {{ inventory_hostname }} is still down after a restart"
    target: "{{ inventory_hostname }}"
    incident_id: "{{ incident_id }}"
    evidence:
      decision: "{{ guard.decision }}"
      diagnosis: "{{ service_diagnosis }}"
      verification: "{{ verification }}"
  delegate_to: localhost

- name: Escalate | post to a Slack channel
  selfheal.core.notify:
    url: "{{ slack_webhook_url }}"
    format: slack
    severity: warning
    summary: "demo on web1 was held back by a change freeze"
    target: web1
    evidence:
      decision:
        reasons: ["freeze 'release' until 2026-12-27T00:00:00Z"]
    links:
      - href: https://grafana.example.com/d/demo
        text: Dashboard
  delegate_to: localhost

- name: Escalate | trigger a PagerDuty incident
  selfheal.core.notify:
    url: https://events.pagerduty.com/v2/enqueue
    format: pagerduty
    routing_key: "{{ pagerduty_routing_key }}"
    summary: "demo on web1 is still down after automatic remediation"
    target: web1
    incident_id: "{{ incident_id }}"
    evidence:
      service: demo
      incident_type: service_down
      verification: "{{ verification }}"
  delegate_to: localhost

- name: Escalate | resolve it once healed
  selfheal.core.notify:
    url: https://events.pagerduty.com/v2/enqueue
    format: pagerduty
    routing_key: "{{ pagerduty_routing_key }}"
    event_action: resolve
    summary: "demo on web1 is healthy again"
    incident_id: "{{ incident_id }}"
  delegate_to: localhost
"""

RETURN = r"""
payload:
  description:
    - The JSON document sent, or that would be sent in check mode.
    - A PagerDuty C(routing_key) shows as V(<secret>).
  returned: always
  type: dict
  sample:
    summary: demo on web1 is still down after automatic remediation
    severity: critical
    source: selfheal.core
    incident_id: inc-42
    target: web1
    sent_at: "2026-03-01T10:15:00.123Z"
    evidence:
      action: restarted
sent:
  description: Whether the receiver accepted the notification (false in check mode).
  returned: always
  type: bool
  sample: true
status:
  description: HTTP status of the receiver's answer; null in check mode.
  returned: always
  type: int
  sample: 202
attempts:
  description: Requests made (0 in check mode).
  returned: always
  type: int
  sample: 1
"""

import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils import journal
from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.notify import (
    EVENT_ACTIONS,
    FORMATS,
    PAGE_BUDGET,
    SEVERITIES,
    Notification,
    NotifyError,
    build,
    change_url,
    grouped,
    redact,
)
from ansible_collections.selfheal.core.plugins.module_utils.sender import PostError, as_json, post_json


def _post(url: str, document: dict[str, Any], p: dict[str, Any]) -> tuple[int, int]:
    """POST the document until the receiver accepts it: (HTTP status, attempts)."""
    headers = {"Authorization": f"Bearer {p['token']}"} if p["token"] else {}
    secrets = [s for s in (p["token"], p["routing_key"]) if s]
    try:
        return post_json(url, as_json(document), headers, p["timeout"], p["validate_certs"], p["retries"], secrets,
                         "selfheal.core.notify")
    except PostError as exc:
        raise ModuleError(f"notification not sent: {exc}; check the receiver and its URL") from None


def _notify(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    url = p["url"]
    if not url.startswith(("http://", "https://")):
        raise ModuleError("url must start with http:// or https://")
    if p["timeout"] <= 0 or p["retries"] < 0:
        raise ModuleError("timeout must be > 0 and retries >= 0")
    links = [{k: v for k, v in link.items() if v is not None} for link in p["links"]]
    try:
        note = Notification(summary=p["summary"], severity=p["severity"], incident_id=p["incident_id"] or None,
                            target=p["target"] or None, evidence=p["evidence"], links=links, at=time.time())
        group = None
        if p["event_action"] == "trigger" and p["page_budget"] > 0 and not check_mode:
            note, group = grouped(note, url, journal.count_page(url, note.at), p["page_budget"])
        document = build(p["format"], note, p["routing_key"], p["event_action"], group or p["dedup_key"] or None)
    except NotifyError as exc:
        raise ModuleError(f"notification not built: {exc}") from exc
    result: dict[str, Any] = {"changed": False, "payload": redact(document), "sent": False, "status": None,
                              "attempts": 0}
    if check_mode:
        return result
    if p["event_action"] == "notice" and p["format"] == "pagerduty":
        url = change_url(url)
    status, attempts = _post(url, document, p)
    return {**result, "changed": True, "sent": True, "status": status, "attempts": attempts}


ARGUMENT_SPEC = {
    "url": {"type": "str", "required": True, "no_log": True},
    "format": {"type": "str", "choices": list(FORMATS), "default": "generic"},
    "summary": {"type": "str", "required": True},
    "severity": {"type": "str", "choices": list(SEVERITIES), "default": "critical"},
    "incident_id": {"type": "str"},
    "dedup_key": {"type": "str", "no_log": False},  # names an alert, not a credential
    "target": {"type": "str"},
    "evidence": {"type": "dict", "default": {}},
    "links": {"type": "list", "elements": "dict", "default": [],
              "options": {"href": {"type": "str", "required": True}, "text": {"type": "str"}}},
    "routing_key": {"type": "str", "no_log": True},
    "event_action": {"type": "str", "choices": list(EVENT_ACTIONS), "default": "trigger"},
    "token": {"type": "str", "no_log": True},
    "timeout": {"type": "int", "default": 10},
    "validate_certs": {"type": "bool", "default": True},
    "retries": {"type": "int", "default": 2},
    "page_budget": {"type": "int", "default": PAGE_BUDGET},
}


def main() -> None:
    run_module(ARGUMENT_SPEC, _notify)


if __name__ == "__main__":
    main()
