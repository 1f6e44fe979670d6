from __future__ import annotations

import json
from typing import Any

import pytest

from ansible_collections.selfheal.core.plugins.module_utils import notify, sender
from ansible_collections.selfheal.core.plugins.module_utils.notify import Notification, NotifyError

AT = 1795400000.25  # 2026-11-23T02:13:20.250Z
DECISION = {"allowed": False, "mode": "propose", "reasons": ["circuit open: 3 failures in 600s", "h1: a<b & c>d"]}


def _note(**kw: Any) -> Notification:
    args: dict[str, Any] = {"summary": "demo on web1 is still down", "severity": "critical", "incident_id": "inc-7",
                            "target": "web1", "evidence": {"decision": DECISION, "action": "restarted"}, "at": AT}
    return Notification(**{**args, **kw})


def _texts(message: dict[str, Any]) -> list[str]:
    """Every text a Slack block carries (section text, fields, context, header)."""
    out: list[str] = []
    for block in message["blocks"]:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", [])]
    return out


def test_generic_is_the_shape_the_escalate_role_posts() -> None:
    evidence = {"diagnosis": {"running": False}, "verification": {"healthy": False}}
    doc = notify.generic(_note(evidence=evidence))
    assert doc == {"summary": "demo on web1 is still down", "severity": "critical", "source": "selfheal.core",
                   "incident_id": "inc-7", "target": "web1", "sent_at": "2026-11-23T02:13:20.250Z",
                   "evidence": evidence}
    assert notify.build("generic", _note(links=[{"href": "https://r.example/1"}]))["links"] == [
        {"href": "https://r.example/1"}]
    unset = notify.generic(_note(incident_id=None, target=None))
    assert unset["incident_id"] is None and unset["target"] is None and "links" not in unset


@pytest.mark.parametrize("bad", [{"summary": "  "}, {"summary": ""}, {"severity": "high"},
                                 {"links": [{"text": "no href"}]}])
def test_a_notification_names_the_argument_to_fix(bad: dict[str, Any]) -> None:
    with pytest.raises(NotifyError, match=next(iter(bad)) if "links" not in bad else r"links\[0\]"):
        _note(**bad)


@pytest.mark.parametrize("severity", notify.SEVERITIES)
def test_pagerduty_trigger_fields_and_severity(severity: str) -> None:
    links = [{"href": "https://runbook.example/demo", "text": "Runbook"}]
    evidence = {"service": "demo", "group": "web", "incident_type": "service_down", "action": "restarted",
                "links": [{"href": "https://grafana.example/d/1"}, {"text": "no href, left out"}]}
    event = notify.pagerduty(_note(severity=severity, evidence=evidence, links=links), "rk-1")
    assert event["routing_key"] == "rk-1" and event["event_action"] == "trigger" and event["dedup_key"] == "inc-7"
    assert event["payload"] == {"summary": "demo on web1 is still down", "source": "web1", "severity": severity,
                                "timestamp": "2026-11-23T02:13:20.250Z", "component": "demo", "group": "web",
                                "class": "service_down", "custom_details": evidence}
    assert event["links"] == [{"href": "https://runbook.example/demo", "text": "Runbook"},
                              {"href": "https://grafana.example/d/1", "text": "https://grafana.example/d/1"}]
    assert notify.PAGERDUTY_SEVERITY[severity] in ("critical", "error", "warning", "info")


def test_pagerduty_limits_defaults_and_other_actions() -> None:
    long = notify.pagerduty(_note(summary="x" * 5000, target=None, incident_id=None, evidence={}), "rk")
    assert len(long["payload"]["summary"]) == notify.PAGERDUTY_MAX_SUMMARY
    assert long["payload"]["summary"].endswith("…") and long["payload"]["source"] == "selfheal.core"
    assert "dedup_key" not in long and "links" not in long
    assert not {"component", "group", "class"} & set(long["payload"])
    resolve = notify.pagerduty(_note(), "rk", "resolve", dedup_key="own-key")
    assert resolve == {"routing_key": "rk", "event_action": "resolve", "dedup_key": "own-key"}
    with pytest.raises(NotifyError, match="routing_key"):
        notify.build("pagerduty", _note())
    with pytest.raises(NotifyError, match="event_action=acknowledge needs incident_id or dedup_key"):
        notify.pagerduty(_note(incident_id=None), "rk", "acknowledge")
    with pytest.raises(NotifyError, match="at most 255"):
        notify.pagerduty(_note(incident_id="k" * 256), "rk")
    assert notify.redact(notify.pagerduty(_note(), "rk-secret"))["routing_key"] == "<secret>"
    assert notify.redact({"summary": "s"}) == {"summary": "s"}


def test_slack_shows_summary_severity_target_reasons_actions_links() -> None:
    evidence = {"zeta": {"k": 1}, "verification": {"healthy": False, "attempts": 3}, "decision": DECISION,
                "action": "restarted", "rollback": ["stop", "start"], "diagnosis": "port taken",
                "links": [{"href": "https://grafana.example/d/1", "text": "Graphs"}]}
    msg = notify.slack(_note(evidence=evidence, links=[{"href": "https://runbook.example/?a=1&b=2"}]))
    assert msg["text"] == "[CRITICAL] demo on web1 is still down (web1)"
    header = msg["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":rotating_light: CRITICAL: demo on web1 is still down"
    texts = _texts(msg)
    assert "*Severity*\ncritical" in texts and "*Target*\nweb1" in texts and "*Incident*\ninc-7" in texts
    decision = next(t for t in texts if t.startswith("*Decision*"))
    assert "• circuit open: 3 failures in 600s\n• h1: a&lt;b &amp; c&gt;d\n" in decision
    assert '```{"allowed":false,"mode":"propose"}```' in decision
    titles = [b["text"]["text"].split("\n", 1)[0] for b in msg["blocks"] if b["type"] == "section" and "text" in b]
    assert titles == ["*Decision*", "*Diagnosis*", "*Action*", "*Verification*", "*Rollback*", "*Zeta*", "*Links*"]
    assert "*Rollback*\n• stop\n• start" in texts
    assert "*Links*\n<https://runbook.example/?a=1&amp;b=2|https://runbook.example/?a=1&amp;b=2>\n" \
           "<https://grafana.example/d/1|Graphs>" in texts
    assert msg["blocks"][-1]["type"] == "context" and "2026-11-23T02:13:20.250Z" in texts[-1]


def test_slack_cuts_every_text_to_its_limit_and_keeps_fences_closed() -> None:
    big = {f"k{i}": "v" * 100 for i in range(400)}
    summary = "S&" * 200
    evidence = {"decision": {"reasons": ["r" * 4000], "mode": "x"}, "diagnosis": big, "log": "<" * 5000}
    msg = notify.slack(_note(summary=summary, evidence=evidence))
    assert len(msg["blocks"][0]["text"]["text"]) == notify.SLACK_MAX_HEADER
    assert msg["blocks"][1]["text"]["text"].startswith("S&amp;S&amp;")  # the whole summary, as a section
    for text in _texts(msg):
        assert len(text) <= notify.SLACK_MAX_TEXT, text[:80]
    diagnosis = next(t for t in _texts(msg) if t.startswith("*Diagnosis*"))
    assert len(diagnosis) == notify.SLACK_MAX_TEXT and diagnosis.endswith("…```")
    log = next(t for t in _texts(msg) if t.startswith("*Log*"))
    assert log.endswith("&lt;…"), "a cut never leaves half an entity"
    decision = next(t for t in _texts(msg) if t.startswith("*Decision*"))
    assert decision.endswith("…") and "```" not in decision, "no room left: the rest is dropped, not half-fenced"
    assert len(json.dumps(msg)) < 60000


def test_slack_keeps_at_most_fifty_blocks_and_says_what_it_left_out() -> None:
    evidence = {f"item_{i:03}": i for i in range(120)}
    msg = notify.slack(_note(evidence=evidence))
    blocks = msg["blocks"]
    assert len(blocks) == notify.SLACK_MAX_BLOCKS
    assert blocks[0]["type"] == "header" and blocks[-1]["type"] == "context"
    # header + fields + 46 evidence sections + the note + context = 50; 120 - 46 = 74 left out.
    assert "74 more evidence sections left out" in blocks[-2]["text"]["text"]
    assert blocks[-3]["text"]["text"] == "*Item 045*\n45"
    fitting = notify.slack(_note(evidence={f"item_{i:03}": i for i in range(47)}))
    assert len(fitting["blocks"]) == notify.SLACK_MAX_BLOCKS
    assert "left out" not in json.dumps(fitting)


def test_build_and_receiver() -> None:
    assert notify.build("slack", _note())["blocks"][0]["type"] == "header"
    with pytest.raises(NotifyError, match="format must be one of generic, slack, pagerduty"):
        notify.build("teams", _note())
    assert sender.receiver("https://hooks.slack.com/services/T0/B0/SECRET?x=1") == "hooks.slack.com"
    assert sender.receiver("http://user:pw@127.0.0.1:8080/escalations") == "127.0.0.1:8080"
    assert sender.receiver("http://[::1]:9000/x") == "[::1]:9000"


def test_within_the_budget_a_page_is_sent_as_it_is_past_it_grouped_never_dropped() -> None:
    note = _note()
    assert notify.grouped(note, "http://pager/x", 20, budget=20) == (note, None)
    sent, key = notify.grouped(note, "http://pager/x", 21, budget=20)
    assert key is not None and key.startswith("selfheal-grouped-") and key.endswith("-2026112302")
    assert sent.summary.endswith(note.summary) and "page 21 this hour" in sent.summary
    assert sent.evidence["grouped"] == {"key": key, "count": 21, "budget": 20}
    assert notify.grouped(note, "http://pager/y", 99, budget=20)[1] != key, "one key per route"
    assert notify.grouped(note, "http://pager/x", 99, budget=0) == (note, None), "0 counts nothing"
    event = notify.build("pagerduty", sent, "rk", "trigger", key)
    assert event["dedup_key"] == key, "PagerDuty folds the grouped pages into one alert"


def test_a_resolve_or_a_notice_says_so_and_a_notice_is_never_a_pagerduty_alert() -> None:
    assert notify.build("generic", _note(), event_action="resolve")["event_action"] == "resolve"
    assert "event_action" not in notify.build("generic", _note()), "a page keeps the shape it always had"
    healed = notify.build("slack", _note(summary="demo on web1 healed itself"), event_action="notice")
    assert healed["text"].startswith("[HEALED] ") and ":white_check_mark: HEALED" in _texts(healed)[0]
    change = notify.build("pagerduty", _note(), "rk", "notice")
    assert "event_action" not in change and change["payload"]["summary"] == _note().summary, "a Change Event"
    assert notify.change_url("https://events.example/v2/enqueue") == "https://events.example/v2/change/enqueue"
    assert notify.change_url("http://127.0.0.1:1/hook") == "http://127.0.0.1:1/hook"
    with pytest.raises(NotifyError, match="event_action must be one of"):
        notify.build("generic", _note(), event_action="page")
