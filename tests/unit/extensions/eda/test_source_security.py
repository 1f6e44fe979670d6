"""Security of the HTTP event sources: credentials, signatures, TLS, fuzzed input, no leaks."""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from source_harness import Client, ThreadedSource, drain, serve

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source import alertmanager, webhook
from ansible_collections.selfheal.core.plugins.module_utils.signing import sign

TOKEN = "tok-5ecret-0123456789abcdef"
SECRET = "hmac-5ecret-0123456789abcdef"
ALERTS = {"alerts": [{"status": "firing", "labels": {"alertname": "ServiceDown", "host": "h1", "service": "demo"},
                      "startsAt": "2026-11-23T10:00:00Z", "fingerprint": "f1"}]}


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if at is None else at
    return {"X-Selfheal-Timestamp": str(stamp), "X-Selfheal-Signature": sign(secret, body, stamp)}


def test_bearer_token_is_required_and_checked() -> None:
    async def body(post: Client, queue: Any) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            reply = await post(ALERTS, headers=headers)
            assert reply.status == 401 and reply.headers["WWW-Authenticate"] == "Bearer"
            assert TOKEN not in json.dumps(reply.body)
        assert queue.empty()
        assert (await post(ALERTS, headers={"Authorization": f"Bearer {TOKEN}"})).status == 202
        [event] = await drain(queue, 1)
        assert TOKEN not in json.dumps(event)

    serve(alertmanager.main, {"token": TOKEN, "skip_original_data": True}, body)


def test_hmac_signature_is_required_checked_and_fresh() -> None:
    raw = json.dumps(ALERTS).encode()

    async def body(post: Client, queue: Any) -> None:
        assert (await post(raw)).status == 401
        assert (await post(raw, headers=signed(raw, secret="another-secret-0123456789"))).status == 401
        assert (await post(raw + b" ", headers=signed(raw))).status == 401, "the body is covered"
        stale = signed(raw, at=int(time.time()) - 3600)
        reply = await post(raw, headers=stale)
        assert reply.status == 401 and "timestamp" in reply.body["error"]
        assert queue.empty()
        assert (await post(raw, headers=signed(raw))).status == 202
        assert len(await drain(queue, 1)) == 1

    serve(alertmanager.main, {"hmac_secret": SECRET, "skip_original_data": True}, body)


def test_approvals_must_be_signed_and_well_formed() -> None:
    incident = "service_down-0a1b2c3d4e"
    proposal = json.dumps({"incident_id": incident, "targets": ["h1"], "summary": "restart demo on h1"}).encode()
    good = json.dumps({"incident_id": incident, "decision": "approve", "approver": "ana"}).encode()

    async def body(post: Client, queue: Any) -> None:
        forged = signed(good, secret="forger-secret-0123456789")
        assert (await post(proposal, path="/proposals")).status == 401
        assert (await post(proposal, path="/proposals", headers=signed(proposal))).status == 202
        [pending] = await drain(queue, 1)
        assert pending["kind"] == "proposal_pending" and pending["proposal"]["targets"] == ["h1"]
        assert (await post(good, path="/approvals", headers=forged)).status == 401
        assert (await post(good, path="/approvals")).status == 401
        bad = json.dumps({"incident_id": "x y", "decision": "maybe", "approver": ""}).encode()
        assert (await post(bad, path="/approvals", headers=signed(bad))).status == 400
        assert queue.empty()
        assert (await post(good, path="/approvals", headers=signed(good))).status == 202
        [event] = await drain(queue, 1)
        assert event["kind"] == "approval_granted"
        assert event["proposal"]["summary"] == "restart demo on h1"
        assert {k: event["approval"][k] for k in ("incident_id", "decision", "approver", "reason")} == {
            "incident_id": incident, "decision": "approve", "approver": "ana", "reason": ""}
        again = await post(good, path="/approvals", headers=signed(good))
        assert again.status == 409 and "approved by ana" in again.body["error"]
        assert queue.empty()

    serve(webhook.main, {"hmac_secret": SECRET}, body, )


def test_a_proposal_is_rejected_or_times_out_exactly_once() -> None:
    def sent(data: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        raw = json.dumps(data).encode()
        return raw, signed(raw)

    async def body(post: Client, queue: Any) -> None:
        for incident in ("i-reject", "i-timeout"):
            raw, headers = sent({"incident_id": incident, "targets": ["h2"], "timeout": 1})
            assert (await post(raw, path="/proposals", headers=headers)).status == 202
            raw, headers = sent({"incident_id": incident, "targets": ["h2"]})
            assert (await post(raw, path="/proposals", headers=headers)).status == 409, "one proposal at a time"
        raw, headers = sent({"incident_id": "i-reject", "decision": "reject", "approver": "bo", "reason": "not now"})
        assert (await post(raw, path="/approvals", headers=headers)).status == 202
        events = await drain(queue, 4)
        kinds = [(e["kind"], e["proposal"]["incident_id"]) for e in events]
        assert kinds.count(("proposal_pending", "i-reject")) == 1
        assert ("approval_rejected", "i-reject") in kinds and ("approval_timed_out", "i-timeout") in kinds
        raw, headers = sent({"incident_id": "i-timeout", "decision": "approve", "approver": "late"})
        late = await post(raw, path="/approvals", headers=headers)
        assert late.status == 409 and "timed out" in late.body["error"]
        await asyncio.sleep(1.5)
        assert queue.empty(), "each proposal is answered once"

    serve(webhook.main, {"hmac_secret": SECRET}, body)


def test_with_a_proposal_secret_the_proposer_cannot_approve() -> None:
    proposer = "proposer-secret-0123456789"
    proposal = json.dumps({"incident_id": "i-sep", "targets": ["h1"]}).encode()
    approval = json.dumps({"incident_id": "i-sep", "decision": "approve", "approver": "robot"}).encode()

    async def body(post: Client, queue: Any) -> None:
        assert (await post(proposal, path="/proposals", headers=signed(proposal))).status == 401, \
            "the approvers' secret does not sign proposals"
        assert (await post(proposal, path="/proposals", headers=signed(proposal, secret=proposer))).status == 202
        await drain(queue, 1)
        self_approved = await post(approval, path="/approvals", headers=signed(approval, secret=proposer))
        assert self_approved.status == 401, "the proposer's secret does not sign approvals"
        assert queue.empty()
        assert (await post(approval, path="/approvals", headers=signed(approval))).status == 202
        [event] = await drain(queue, 1)
        assert event["kind"] == "approval_granted"

    serve(webhook.main, {"hmac_secret": SECRET, "proposal_secret": proposer}, body)


def test_waiting_proposals_survive_a_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "store.db")
    raw = json.dumps({"incident_id": "i-kept", "targets": ["h3"], "timeout": 600}).encode()
    approval = json.dumps({"incident_id": "i-kept", "decision": "approve", "approver": "cy"}).encode()

    async def first(post: Client, queue: Any) -> None:
        assert (await post(raw, path="/proposals", headers=signed(raw))).status == 202
        await drain(queue, 1)

    async def second(post: Client, queue: Any) -> None:
        assert (await post(approval, path="/approvals", headers=signed(approval))).status == 202
        [event] = await drain(queue, 1)
        assert event["kind"] == "approval_granted" and event["proposal"]["targets"] == ["h3"]

    serve(webhook.main, {"hmac_secret": SECRET, "state_path": state}, first)
    serve(webhook.main, {"hmac_secret": SECRET, "state_path": state}, second)


def test_approvals_are_refused_without_a_signing_secret() -> None:
    async def body(post: Client, queue: Any) -> None:
        reply = await post({"incident_id": "a", "decision": "approve", "approver": "x"}, path="/approvals")
        assert reply.status == 403 and "hmac_secret" in reply.body["error"]
        reply = await post({"incident_id": "a", "targets": ["h1"]}, path="/proposals")
        assert reply.status == 403
        assert (await post({"any": "event"}, path="/hooks/ci")).status == 202
        [event] = await drain(queue, 1)
        assert event["payload"] == {"any": "event"} and event["meta"]["endpoint"] == "hooks/ci"

    serve(webhook.main, {}, body)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"token": "short"}, "token must be at least 16"),
        ({"hmac_secret": "short"}, "hmac_secret must be at least 16"),
        ({"certfile": "/x.pem"}, "certfile and keyfile go together"),
        ({"correlate": True}, "correlate needs argument catalog"),
        ({"correlate": True, "catalog": "/nonexistent/catalog.yml"}, "no such file"),
    ],
)
def test_bad_security_arguments_are_refused(args: dict[str, Any], message: str) -> None:
    import asyncio

    with pytest.raises(ValueError, match=message) as info:
        asyncio.run(alertmanager.main(asyncio.Queue(), {"port": 1, **args}))
    assert "short" not in str(info.value) or "token" in message or "hmac" in message
    assert TOKEN not in str(info.value)


# --------------------------------------------------------------------------- TLS

def _cert(name: str, issuer_key: Any, issuer_name: x509.Name | None, key: Any, ca: bool = False) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("selfheal test CA", ca_key, None, ca_key, ca=True)
    out = {}
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(name, ca_key, ca.subject, key)
        (d / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
        out[name], out[f"{name}_key"] = str(d / f"{name}.pem"), str(d / f"{name}.key")
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["ca"] = str(d / "ca.pem")
    return out


def test_tls_serves_https(pki: dict[str, str]) -> None:
    client = ssl.create_default_context(cafile=pki["ca"])

    async def body(post: Client, queue: Any) -> None:
        assert (await post(ALERTS)).status == 202
        assert len(await drain(queue, 1)) == 1

    serve(alertmanager.main, {"certfile": pki["server"], "keyfile": pki["server_key"], "skip_original_data": True},
          body, scheme="https", ssl_context=client)


def test_mutual_tls_refuses_clients_without_a_certificate(pki: dict[str, str]) -> None:
    args = {"certfile": pki["server"], "keyfile": pki["server_key"], "cafile": pki["ca"], "skip_original_data": True}
    src = ThreadedSource(alertmanager.main, args)
    url = f"https://127.0.0.1:{src.port}/api/v1/alerts"
    try:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(url, json=ALERTS, verify=pki["ca"], timeout=5)
        assert src.events() == []
        ok = requests.post(url, json=ALERTS, verify=pki["ca"], cert=(pki["client"], pki["client_key"]), timeout=5)
        assert ok.status_code == 202
        assert len(src.events()) == 1
    finally:
        src.close()


# --------------------------------------------------------------------------- fuzzing

@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[ThreadedSource]:
    src = ThreadedSource(alertmanager.main, {"token": TOKEN, "max_body_bytes": 64 * 1024})
    yield src
    src.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=30,
)
_alertish = st.fixed_dictionaries({"alerts": st.lists(st.fixed_dictionaries(
    {"labels": st.dictionaries(st.sampled_from(["alertname", "host", "service", "severity", "instance"]) | st.text(),
                               st.text(max_size=20) | _json, max_size=6)},
    optional={"status": st.sampled_from(["firing", "resolved"]) | _json, "startsAt": st.text(max_size=40) | _json,
              "fingerprint": st.text(max_size=20) | _json, "annotations": _json}), max_size=4)})


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(_json.map(lambda v: json.dumps(v).encode()), _alertish.map(lambda v: json.dumps(v).encode()),
                      st.binary(max_size=300)))
def test_fuzzed_payloads_get_4xx_or_202_and_never_stop_the_source(fuzz_target: ThreadedSource, body: bytes) -> None:
    resp = requests.post(f"{fuzz_target.url}/api/v1/alerts", data=body, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert resp.status_code == 202 or 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    assert fuzz_target.alive()
    events = fuzz_target.events(timeout=0.05)
    if resp.status_code != 202:  # nothing refused reaches the rulebook
        assert events == [], events
    else:
        accepted = resp.json()["accepted"]
        events += fuzz_target.events(timeout=0.5) if len(events) < accepted else []
        assert len(events) == accepted


# Valid Alertmanager notifications, as odd as real ones get: any Unicode (emoji too), long
# annotations (stack traces), no alertname, resolved tails, repeated fingerprints.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_valid_alert = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved"]),
     "labels": st.dictionaries(st.sampled_from(["alertname", "host", "service", "severity", "job"]) | _text,
                               _text, max_size=8),
     "annotations": st.dictionaries(_text, _text | st.text(min_size=4097, max_size=6000), max_size=3),
     "startsAt": st.sampled_from(["2026-11-23T15:40:14.036123456Z", "0001-01-01T00:00:00Z"]),
     "endsAt": st.just("0001-01-01T00:00:00Z"),
     "fingerprint": st.text("0123456789abcdef", min_size=16, max_size=16)})
_notification = st.fixed_dictionaries({"version": st.just("4"), "status": st.sampled_from(["firing", "resolved"]),
                                       "receiver": _text, "groupKey": _text,
                                       "alerts": st.lists(_valid_alert, min_size=1, max_size=6)})


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(notification=_notification)
def test_no_valid_alertmanager_notification_is_refused(fuzz_target: ThreadedSource,
                                                       notification: dict[str, Any]) -> None:
    fuzz_target.events(timeout=0.01)  # start empty
    resp = requests.post(f"{fuzz_target.url}/api/v1/alerts", json=notification, timeout=10,
                         headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 202, resp.text
    wanted = 1 + len(notification["alerts"])  # the original payload, then each alert
    events: list[Any] = []
    for _attempt in range(20):
        events += fuzz_target.events(timeout=0.1)
        if len(events) >= wanted:
            break
    assert len(events) == wanted
    for alert, event in zip(notification["alerts"], events[1:], strict=True):
        assert event["signal"]["fingerprint"] == alert["fingerprint"]
        assert event["signal"]["status"] == alert["status"]


_HEADER_NAMES = st.sampled_from(["Authorization", "X-Selfheal-Signature", "X-Selfheal-Timestamp", "Content-Type"])
_HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(headers=st.dictionaries(_HEADER_NAMES, _HEADER_VALUES))
def test_fuzzed_credentials_never_pass(fuzz_target: ThreadedSource, headers: dict[str, str]) -> None:
    if headers.get("Authorization", "").strip() == f"Bearer {TOKEN}":
        return
    resp = requests.post(f"{fuzz_target.url}/api/v1/alerts", json=ALERTS, timeout=10, headers=headers)
    assert resp.status_code == 401


def test_no_secret_reaches_events_or_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    raw = json.dumps(ALERTS).encode()
    with caplog.at_level(logging.DEBUG):
        src = ThreadedSource(alertmanager.main, {"token": TOKEN, "hmac_secret": SECRET})
        try:
            for headers in ({"Authorization": f"Bearer {TOKEN}", **signed(raw)},
                            {"Authorization": "Bearer guessed-token-000000000"},
                            {"Authorization": f"Bearer {TOKEN}", **signed(raw, secret="x" * 20)}):
                requests.post(f"{src.url}/api/v1/alerts", data=raw, timeout=5,
                              headers={**headers, "Content-Type": "application/json"})
            events = src.events()
        finally:
            src.close()
    assert len(events) == 2  # the original payload and its one alert, from the one good request
    text = json.dumps(events) + caplog.text
    for secret in (TOKEN, SECRET, "guessed-token"):
        assert secret not in text
    assert "refused an unauthenticated request" in caplog.text


def test_the_webhook_takes_ansible_edas_hmac_scheme_when_told_and_never_shares_its_header() -> None:
    import base64
    import hashlib
    import hmac as hmac_lib

    secret = "an-eda-style-shared-secret"
    raw = json.dumps({"hello": "world"}).encode()
    hexsig = hmac_lib.new(secret.encode(), raw, hashlib.sha256).hexdigest()

    async def body(post: Client, queue: Any) -> None:
        assert (await post(raw, path="/events", headers={"X-Hub-Signature-256": f"sha256={hexsig}"})).status == 202
        assert (await post(raw, path="/events", headers={"X-Hub-Signature-256": hexsig})).status == 202
        assert (await post(raw + b" ", path="/events", headers={"X-Hub-Signature-256": hexsig})).status == 401
        ours = signed(raw, secret=secret)  # our timestamped scheme is not taken in eda mode
        assert (await post(raw, path="/events", headers=ours)).status == 401
        events = await drain(queue, 2)
        assert all(e["payload"] == {"hello": "world"} for e in events)
        assert all("X-Hub-Signature-256" not in e["meta"]["headers"] for e in events), "no signature in events"

    serve(webhook.main, {"hmac_secret": secret, "hmac_scheme": "eda"}, body)

    b64sig = base64.b64encode(hmac_lib.new(secret.encode(), raw, hashlib.sha512).digest()).decode()

    async def base64_body(post: Client, queue: Any) -> None:
        assert (await post(raw, path="/events", headers={"X-Hub-Signature-512": b64sig})).status == 202
        assert (await post(raw, path="/events", headers={"X-Hub-Signature-256": hexsig})).status == 401

    serve(webhook.main, {"hmac_secret": secret, "hmac_scheme": "eda", "hmac_algo": "sha512", "hmac_format": "base64",
                         "hmac_header": "X-Hub-Signature-512"}, base64_body)


def test_a_body_without_content_type_is_taken_by_the_webhook_when_it_is_json() -> None:
    async def body(post: Client, queue: Any) -> None:
        assert (await post(b'{"a": 1}', path="/events", headers={"Content-Type": ""})).status == 202
        assert (await post(b'{"a": 1}', path="/events", headers={"Content-Type": "text/plain"})).status == 415
        assert (await post(b"not json", path="/events", headers={"Content-Type": ""})).status == 400
        [event] = await drain(queue, 1)
        assert event["payload"] == {"a": 1}

    serve(webhook.main, {}, body)
