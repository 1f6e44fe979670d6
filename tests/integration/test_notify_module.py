"""selfheal.core.notify and the escalate role run by Ansible against a real HTTP receiver started here."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent
ROUTING_KEY = "R0UTING-KEY-9f3c1e"
TOKEN = "bearer-t0ken-77aa"
HOOK_PATH = "/services/T000/B000/h00k-s3cret-path"


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request and answers with the scripted statuses."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[int] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                              "body": json.loads(raw)})
                    status = receiver.script.pop(0) if receiver.script else 200
                data = json.dumps({"ok": status < 300}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = HOOK_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


def _ansible(*args: str, callback: str = "ansible.builtin.json") -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": callback,
                               "ANSIBLE_NOCOLOR": "1"})


def notify(params: dict[str, Any], *extra: str) -> dict[str, Any]:
    proc = _ansible("ansible", "localhost", "-m", "selfheal.core.notify", "-a", json.dumps(params), "-v", *extra)
    # -v puts "Using <ansible.cfg> as config file" before the JSON document.
    document, _end = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    result: dict[str, Any] = document["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


EVIDENCE = {"decision": {"allowed": False, "reasons": ["circuit open: 3 failed runs in 600s"]},
            "diagnosis": {"running": False}, "action": "started", "verification": {"healthy": False, "attempts": 3},
            "service": "demo", "incident_type": "service_down"}


def test_generic_body_as_received(receiver: Receiver) -> None:
    before = time.time()
    result = notify({"url": receiver.url("/escalations"), "summary": "demo on web1 is still down",
                     "target": "web1", "incident_id": "inc-1", "evidence": EVIDENCE})
    assert result["changed"] is True and result["sent"] is True and result["status"] == 200
    assert result["attempts"] == 1
    [req] = receiver.requests
    assert req["path"] == "/escalations" and req["headers"]["Content-Type"] == "application/json"
    assert "Authorization" not in req["headers"]
    body = req["body"]
    assert set(body) == {"summary", "severity", "source", "incident_id", "target", "sent_at", "evidence"}
    assert (body["summary"], body["severity"], body["source"], body["incident_id"], body["target"]) == (
        "demo on web1 is still down", "critical", "selfheal.core", "inc-1", "web1")
    assert body["evidence"] == EVIDENCE
    sent_at = datetime.fromisoformat(body["sent_at"].replace("Z", "+00:00"))
    assert body["sent_at"].endswith("Z") and before - 1 <= sent_at.timestamp() <= time.time() + 1
    assert result["payload"] == body


def test_slack_body_as_received(receiver: Receiver) -> None:
    evidence = {**EVIDENCE, "console": "x" * 10000, **{f"extra_{i:02}": i for i in range(60)}}
    result = notify({"url": receiver.url(), "format": "slack", "severity": "warning", "summary": "demo held back",
                     "target": "web1", "evidence": evidence,
                     "links": [{"href": "https://runbook.example/demo", "text": "Runbook"}]})
    assert result["sent"] is True
    [req] = receiver.requests
    body = req["body"]
    assert body["text"] == "[WARNING] demo held back (web1)"
    blocks = body["blocks"]
    assert len(blocks) == 50 and blocks[0] == {
        "type": "header", "text": {"type": "plain_text", "emoji": True, "text": ":warning: WARNING: demo held back"}}
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert "*Decision*\n• circuit open: 3 failed runs in 600s\n```{\"allowed\":false}```" in texts
    assert all(len(t) <= 3000 for t in texts)
    assert any(t.startswith("*Console*\nxxx") and t.endswith("…") for t in texts)
    assert "more evidence sections left out" in texts[-1]
    assert {"type": "mrkdwn", "text": "*Target*\nweb1"} in blocks[1]["fields"]
    assert result["payload"] == body


def test_pagerduty_body_as_received_and_no_secret_is_ever_shown(receiver: Receiver) -> None:
    params = {"url": receiver.url(), "format": "pagerduty", "routing_key": ROUTING_KEY, "token": TOKEN,
              "summary": "demo on web1 is still down", "target": "web1", "incident_id": "inc-9",
              "evidence": EVIDENCE, "links": [{"href": "https://runbook.example/demo"}]}
    result = notify(params)
    [req] = receiver.requests
    assert req["path"] == HOOK_PATH and req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    body = req["body"]
    assert body["routing_key"] == ROUTING_KEY and body["event_action"] == "trigger" and body["dedup_key"] == "inc-9"
    assert body["payload"]["summary"] == "demo on web1 is still down" and body["payload"]["severity"] == "critical"
    assert (body["payload"]["source"], body["payload"]["component"], body["payload"]["class"]) == (
        "web1", "demo", "service_down")
    assert body["payload"]["custom_details"] == EVIDENCE
    assert body["links"] == [{"href": "https://runbook.example/demo", "text": "https://runbook.example/demo"}]
    assert result["payload"] == {**body, "routing_key": "<secret>"}
    # The whole run, as a human sees it at -vvv, carries none of the three secrets.
    for callback in ("ansible.builtin.default", "ansible.builtin.json"):
        proc = _ansible("ansible", "localhost", "-m", "selfheal.core.notify", "-a", json.dumps(params), "-vvv",
                        callback=callback)
        assert proc.returncode == 0, proc.stdout[-2000:]
        shown = proc.stdout + proc.stderr
        assert "<secret>" in shown
        for secret in (ROUTING_KEY, TOKEN, HOOK_PATH, "h00k-s3cret-path"):
            assert secret not in shown, f"{secret} shown with {callback}"
    assert len(receiver.requests) == 3


def test_check_mode_builds_the_payload_and_sends_nothing(receiver: Receiver) -> None:
    result = notify({"url": receiver.url(), "format": "pagerduty", "routing_key": ROUTING_KEY,
                     "summary": "would page", "incident_id": "inc-2"}, "--check")
    assert result["changed"] is False and result["sent"] is False and result["status"] is None
    assert result["payload"]["routing_key"] == "<secret>" and result["payload"]["payload"]["summary"] == "would page"
    assert receiver.requests == []


def test_a_500_then_200_receiver_is_retried_and_a_400_is_not(receiver: Receiver) -> None:
    receiver.script = [500, 200]
    result = notify({"url": receiver.url(), "summary": "retried"})
    assert result["sent"] is True and result["status"] == 200 and result["attempts"] == 2
    assert [r["body"]["summary"] for r in receiver.requests] == ["retried", "retried"]
    receiver.requests.clear()
    receiver.script = [400, 200]
    refused = notify({"url": receiver.url(), "summary": "refused"})
    assert refused["failed"] and len(receiver.requests) == 1
    assert f"receiver 127.0.0.1:{receiver.port} answered HTTP 400" in refused["msg"]
    receiver.requests.clear()
    receiver.script = [503, 503, 429, 200]
    exhausted = notify({"url": receiver.url(), "summary": "gave up", "retries": 1})
    assert exhausted["failed"] and len(receiver.requests) == 2
    assert "answered HTTP 503" in exhausted["msg"] and "after 2 attempts" in exhausted["msg"]
    assert "h00k-s3cret-path" not in json.dumps(exhausted)


def test_an_unreachable_receiver_fails_naming_the_host_not_the_url() -> None:
    port = _free_port()
    result = notify({"url": f"http://127.0.0.1:{port}/hooks/h00k-s3cret-path?key=q7", "summary": "lost",
                     "retries": 1, "timeout": 2})
    assert result["failed"] and result.get("sent") is None
    assert result["msg"].startswith(f"notification not sent: receiver 127.0.0.1:{port} is unreachable")
    assert "after 2 attempts" in result["msg"]
    assert "h00k-s3cret-path" not in json.dumps(result) and "q7" not in result["msg"]


def test_pagerduty_without_routing_key_fails_and_sends_nothing(receiver: Receiver) -> None:
    result = notify({"url": receiver.url(), "format": "pagerduty", "summary": "no key"})
    assert result["failed"]
    assert "format=pagerduty needs routing_key" in result["msg"]
    assert receiver.requests == []


def _escalate(tmp_path: Path, role_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "escalate.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Escalate through the role", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Escalate", "ansible.builtin.include_role": {"name": "selfheal.core.escalate"},
                   "vars": role_vars}],
    }]))
    return _ansible("ansible-playbook", str(playbook), "-vvv", callback="ansible.builtin.default")


def test_the_escalate_role_posts_the_generic_shape_and_pagerduty(receiver: Receiver, tmp_path: Path) -> None:
    evidence = {"incident_id": "inc-5", "failed_task": "Verify", "diagnosis": {"running": False}}
    proc = _escalate(tmp_path, {"escalate_url": receiver.url("/escalations"), "escalate_summary": "demo down",
                                "escalate_evidence": evidence})
    assert proc.returncode == 0, proc.stdout[-3000:]
    [req] = receiver.requests
    body = req["body"]
    assert set(body) == {"summary", "severity", "source", "incident_id", "target", "sent_at", "evidence"}
    assert (body["summary"], body["severity"], body["source"], body["target"], body["incident_id"]) == (
        "demo down", "critical", "selfheal.core", "localhost", "inc-5")
    assert body["evidence"] == evidence
    paged = _escalate(tmp_path, {"escalate_url": receiver.url(), "escalate_format": "pagerduty",
                                 "escalate_routing_key": ROUTING_KEY, "escalate_token": TOKEN,
                                 "escalate_summary": "demo down", "escalate_severity": "error",
                                 "escalate_incident_id": "inc-6", "escalate_evidence": evidence,
                                 "escalate_links": [{"href": "https://runbook.example/demo", "text": "Runbook"}]})
    assert paged.returncode == 0, paged.stdout[-3000:]
    event = receiver.requests[1]["body"]
    assert event["routing_key"] == ROUTING_KEY and event["dedup_key"] == "inc-6"
    assert event["payload"]["severity"] == "error" and event["links"][0]["text"] == "Runbook"
    for secret in (ROUTING_KEY, TOKEN, "h00k-s3cret-path"):
        assert secret not in paged.stdout + paged.stderr, secret


def test_the_escalate_role_refuses_without_a_route(receiver: Receiver, tmp_path: Path) -> None:
    proc = _escalate(tmp_path, {"escalate_summary": "nowhere to go"})
    assert proc.returncode != 0
    assert "escalation not sent: escalate_url is empty" in proc.stdout
    assert receiver.requests == []


def test_past_the_page_budget_pages_are_grouped_and_still_sent(receiver: Receiver, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFHEAL_JOURNAL_DIR", str(tmp_path / "state"))
    for n in range(3):
        result = notify({"url": receiver.url(), "format": "pagerduty", "routing_key": ROUTING_KEY,
                         "summary": f"page {n}", "incident_id": f"inc-{n}", "page_budget": 2})
        assert result["sent"] is True
    keys = [r["body"]["dedup_key"] for r in receiver.requests]
    assert keys[:2] == ["inc-0", "inc-1"] and keys[2].startswith("selfheal-grouped-"), keys
    assert "over its budget of 2: grouped] page 2" in receiver.requests[2]["body"]["payload"]["summary"]


def test_a_notice_is_a_pagerduty_change_event_not_a_page(receiver: Receiver) -> None:
    result = notify({"url": receiver.url("/v2/enqueue"), "format": "pagerduty", "routing_key": ROUTING_KEY,
                     "summary": "demo on web1 healed itself", "incident_id": "inc-9", "event_action": "notice",
                     "severity": "info"})
    assert result["sent"] is True
    [req] = receiver.requests
    assert req["path"] == "/v2/change/enqueue" and "event_action" not in req["body"]
    assert req["body"]["payload"]["summary"] == "demo on web1 healed itself"
