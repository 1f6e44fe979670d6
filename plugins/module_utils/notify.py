# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Notification payloads: one escalation with its evidence, as a generic webhook, Slack or PagerDuty wants it.

Builders only: they take a Notification and return the JSON document to POST,
within each receiver's limits. Sending is the module's job
(plugins/modules/notify.py), so these stay pure and are tested without a network.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.sender import REDACTED
from ansible_collections.selfheal.core.plugins.module_utils.signals import utc_iso

FORMATS = ("generic", "slack", "pagerduty")
SEVERITIES = ("critical", "error", "warning", "info")
# trigger pages; acknowledge and resolve close a page; notice tells after the fact (never a page)
EVENT_ACTIONS = ("trigger", "acknowledge", "resolve", "notice")
# pages per receiver and hour, past which they are grouped under one key (see grouped())
PAGE_BUDGET = 20
SOURCE = "selfheal.core"

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
SLACK_MAX_BLOCKS = 50
SLACK_MAX_TEXT = 3000
SLACK_MAX_HEADER = 150
SLACK_MAX_FIELD = 2000
# PagerDuty Events API v2 limits.
PAGERDUTY_MAX_SUMMARY = 1024
PAGERDUTY_MAX_DEDUP_KEY = 255

# Our severities are PagerDuty's; Slack shows them with an emoji.
PAGERDUTY_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}
SLACK_EMOJI = {"critical": ":rotating_light:", "error": ":red_circle:", "warning": ":warning:",
               "info": ":information_source:"}
# Evidence keys shown first, in this order, under these titles; other keys follow sorted.
_EVIDENCE_ORDER = {
    "decision": "Decision",
    "reasons": "Reasons",
    "diagnosis": "Diagnosis",
    "actions": "Actions",
    "action": "Action",
    "prior_state": "Prior state",
    "verification": "Verification",
    "rollback": "Rollback",
}
_ELLIPSIS = "…"
_FENCE = "```"
_PARTIAL_ENTITY = re.compile(r"&[a-z]{0,3}$")


class NotifyError(ValueError):
    """A notification that cannot be built; the message says which argument to fix."""


@dataclass(frozen=True)
class Notification:
    """One escalation: what a human must know, and the evidence to act on it."""

    summary: str
    severity: str = "critical"
    incident_id: str | None = None
    target: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    links: list[dict[str, str]] = field(default_factory=list)
    at: float = 0.0

    def __post_init__(self) -> None:
        if not self.summary or not self.summary.strip():
            raise NotifyError("summary is empty: say in one line what the human who gets this must know")
        if self.severity not in SEVERITIES:
            raise NotifyError(f"severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        for i, link in enumerate(self.links):
            if not _is_link(link):
                raise NotifyError(f"links[{i}]: each link needs an href (and optionally a text)")

    @property
    def all_links(self) -> list[dict[str, str]]:
        """Links given as an argument, then those in evidence['links'] that have an href."""
        extra = self.evidence.get("links")
        return [*self.links, *(link for link in (extra if isinstance(extra, list) else []) if _is_link(link))]


def generic(n: Notification, event_action: str = "trigger") -> dict[str, Any]:
    """The generic webhook document: the shape the escalate role has always posted (with `event_action`
    when it is not a page: resolve, acknowledge or notice)."""
    payload: dict[str, Any] = {
        "summary": n.summary,
        "severity": n.severity,
        "source": SOURCE,
        "incident_id": n.incident_id,
        "target": n.target,
        "sent_at": utc_iso(n.at),
        "evidence": n.evidence,
    }
    if n.links:
        payload["links"] = n.links
    if event_action != "trigger":
        payload["event_action"] = event_action
    return payload


def pagerduty(n: Notification, routing_key: str, event_action: str = "trigger",
              dedup_key: str | None = None) -> dict[str, Any]:
    """A PagerDuty Events API v2 event; acknowledge and resolve carry only what PagerDuty reads."""
    if not routing_key:
        raise NotifyError("format=pagerduty needs routing_key (the integration key of the PagerDuty service)")
    if event_action not in EVENT_ACTIONS:
        raise NotifyError(f"event_action must be one of {', '.join(EVENT_ACTIONS)}, got {event_action!r}")
    key = dedup_key or n.incident_id
    if key and len(key) > PAGERDUTY_MAX_DEDUP_KEY:
        raise NotifyError(f"dedup_key is {len(key)} characters; PagerDuty takes at most {PAGERDUTY_MAX_DEDUP_KEY}")
    if event_action == "notice":
        return _change_event(n, routing_key)
    if event_action != "trigger" and not key:
        raise NotifyError(f"event_action={event_action} needs incident_id or dedup_key to name the alert")
    event: dict[str, Any] = {"routing_key": routing_key, "event_action": event_action}
    if key:
        event["dedup_key"] = key
    if event_action != "trigger":
        return event
    body: dict[str, Any] = {
        "summary": _clip(n.summary, PAGERDUTY_MAX_SUMMARY, False),
        "source": n.target or SOURCE,
        "severity": PAGERDUTY_SEVERITY[n.severity],
        "timestamp": utc_iso(n.at),
    }
    for name, keys in (("component", ("component", "service")), ("group", ("group",)),
                       ("class", ("incident_type", "class"))):
        value = next((n.evidence[k] for k in keys if isinstance(n.evidence.get(k), str) and n.evidence[k]), None)
        if value:
            body[name] = value
    body["custom_details"] = n.evidence
    event["payload"] = body
    links = [{"href": link["href"], "text": link.get("text") or link["href"]} for link in n.all_links]
    if links:
        event["links"] = links
    return event


def _change_event(n: Notification, routing_key: str) -> dict[str, Any]:
    """A PagerDuty Change Event (sent to the change-events endpoint, see change_url): on the service's
    timeline, and never an alert that pages anyone."""
    event: dict[str, Any] = {"routing_key": routing_key, "payload": {
        "summary": _clip(n.summary, PAGERDUTY_MAX_SUMMARY, False), "source": n.target or SOURCE,
        "timestamp": utc_iso(n.at), "custom_details": n.evidence}}
    links = [{"href": link["href"], "text": link.get("text") or link["href"]} for link in n.all_links]
    if links:
        event["links"] = links
    return event


def change_url(url: str) -> str:
    """The Events API v2 change-events endpoint beside an alert-events one (.../v2/enqueue)."""
    return url[: -len("/v2/enqueue")] + "/v2/change/enqueue" if url.rstrip("/").endswith("/v2/enqueue") else url


_SLACK_LABEL = {"resolve": (":white_check_mark:", "RESOLVED"), "acknowledge": (":eyes:", "ACKNOWLEDGED"),
                "notice": (":white_check_mark:", "HEALED")}


def grouped(n: Notification, route: str, count: int, budget: int = PAGE_BUDGET) -> tuple[Notification, str | None]:
    """The page as sent when `count` pages (this one included) went to `route` within the hour.

    Within the budget it is sent as it is (dedup key: its incident). Past it, pages are grouped: each is
    still sent, marked with how many this hour, under one dedup key per route and hour, so that PagerDuty
    folds them into one alert and a chat bridge can thread them; a storm of pages never silences one.
    """
    if budget <= 0 or count <= budget:
        return n, None
    hour = time.strftime("%Y%m%d%H", time.gmtime(n.at))
    key = f"selfheal-grouped-{hashlib.sha256(route.encode()).hexdigest()[:12]}-{hour}"
    note = replace(n, summary=f"[page {count} this hour on this route, over its budget of {budget}: grouped] "
                              f"{n.summary}",
                   evidence={**n.evidence, "grouped": {"key": key, "count": count, "budget": budget}})
    return note, key


def slack(n: Notification, event_action: str = "trigger") -> dict[str, Any]:
    """A Slack incoming-webhook message: fallback text and blocks, within Slack's limits."""
    emoji, label = _SLACK_LABEL.get(event_action) or (SLACK_EMOJI[n.severity], n.severity.upper())
    header = f"{emoji} {label}: {n.summary}"
    head: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "emoji": True, "text": _clip(header, SLACK_MAX_HEADER, False)}},
    ]
    if len(header) > SLACK_MAX_HEADER:
        # The header shows the start of a long summary; a section shows the rest of it.
        head.append({"type": "section", "text": _mrkdwn(_clip(_escape(n.summary), SLACK_MAX_TEXT))})
    head.append({"type": "section", "fields": [
        _mrkdwn(_clip(f"*{title}*\n{_escape(value)}", SLACK_MAX_FIELD))
        for title, value in (("Severity", n.severity), ("Target", n.target), ("Incident", n.incident_id)) if value]})
    keys = [k for k in _EVIDENCE_ORDER if k in n.evidence]
    keys += sorted(k for k in n.evidence if k not in _EVIDENCE_ORDER and k != "links")
    body = [{"type": "section", "text": _mrkdwn(_section(_EVIDENCE_ORDER.get(k) or _title(k), n.evidence[k]))}
            for k in keys]
    if n.all_links:
        lines = "\n".join(f"<{_escape(link['href'])}|{_escape(link.get('text') or link['href'])}>"
                          for link in n.all_links)
        body.append({"type": "section", "text": _mrkdwn(_clip(f"*Links*\n{lines}", SLACK_MAX_TEXT))})
    tail: list[dict[str, Any]] = [
        {"type": "context", "elements": [_mrkdwn(f"{SOURCE} · sent {utc_iso(n.at)}")]},
    ]
    room = SLACK_MAX_BLOCKS - len(head) - len(tail)
    if len(body) > room:
        left_out = len(body) - room + 1
        body = body[:room - 1]
        body.append({"type": "section", "text": _mrkdwn(
            f"_{left_out} more evidence sections left out (Slack shows at most {SLACK_MAX_BLOCKS} blocks)_")})
    fallback = f"[{label}] {n.summary}" + (f" ({n.target})" if n.target else "")
    return {"text": _clip(_escape(fallback), SLACK_MAX_TEXT), "blocks": [*head, *body, *tail]}


def build(fmt: str, n: Notification, routing_key: str | None = None, event_action: str = "trigger",
          dedup_key: str | None = None) -> dict[str, Any]:
    """The document to POST for one format."""
    if event_action not in EVENT_ACTIONS:
        raise NotifyError(f"event_action must be one of {', '.join(EVENT_ACTIONS)}, got {event_action!r}")
    if fmt == "generic":
        return generic(n, event_action)
    if fmt == "slack":
        return slack(n, event_action)
    if fmt == "pagerduty":
        return pagerduty(n, routing_key or "", event_action, dedup_key)
    raise NotifyError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def redact(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as it may be shown: the PagerDuty routing key replaced."""
    if "routing_key" not in payload:
        return payload
    return {**payload, "routing_key": REDACTED}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _title(key: str) -> str:
    return key.replace("_", " ").capitalize()


def _escape(text: Any) -> str:
    """Slack mrkdwn control characters (&, <, >) as entities."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int, escaped: bool = True) -> str:
    """At most `limit` characters; a cut ends with an ellipsis and, in escaped text, never inside an entity."""
    if len(text) <= limit:
        return text
    cut = text[:limit - len(_ELLIPSIS)]
    return (_PARTIAL_ENTITY.sub("", cut) if escaped else cut) + _ELLIPSIS


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str, ensure_ascii=False)


def _section(title: str, value: Any) -> str:
    """One evidence item as section text: strings as text, flat lists as bullets, the rest as compact JSON."""
    head = f"*{_escape(title)}*\n"
    room = SLACK_MAX_TEXT - len(head)
    if isinstance(value, dict) and isinstance(value.get("reasons"), list):
        # A guard decision: its reasons are what a human reads first.
        rest = {k: v for k, v in value.items() if k != "reasons"}
        text = _clip("\n".join(f"• {_escape(r)}" for r in value["reasons"]) or "-", room)
        room -= len(text) + 1 + 2 * len(_FENCE)
        if rest and room > len(_ELLIPSIS):
            text += f"\n{_FENCE}{_clip(_escape(_compact(rest)), room)}{_FENCE}"
        return head + text
    if isinstance(value, str):
        return head + _clip(_escape(value) or "-", room)
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return head + _clip("\n".join(f"• {_escape(v)}" for v in value) or "-", room)
    if not isinstance(value, (dict, list)):
        return head + _clip(_escape(_compact(value)), room)
    return f"{head}{_FENCE}{_clip(_escape(_compact(value)), room - 2 * len(_FENCE))}{_FENCE}"


def _is_link(link: Any) -> bool:
    return isinstance(link, dict) and isinstance(link.get("href"), str) and bool(link["href"])
