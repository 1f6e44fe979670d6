from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.signals import (
    Signal,
    SignalError,
    from_alertmanager,
    get_path,
    parse_time,
    strip_port,
    utc_iso,
)

ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "ServiceDown", "host": "h2", "service": "demo", "severity": "critical",
               "instance": "10.213.77.12:8080", "job": "demo"},
    "annotations": {"summary": "demo on h2 is down"},
    "startsAt": "2026-11-23T15:40:14.036123456Z",
    "endsAt": "0001-01-01T00:00:00Z",
    "fingerprint": "ed72291d0983648b",
}


def test_alertmanager_alert_becomes_a_signal() -> None:
    sig = from_alertmanager(ALERT, received_at=1795448415.04)
    assert sig.source == "alertmanager"
    assert sig.status == "firing"
    assert sig.name == "ServiceDown"
    assert sig.severity == "critical"
    assert sig.fingerprint == "ed72291d0983648b"
    assert sig.target.kind == "service"
    assert sig.target.host == "h2"
    assert sig.target.service == "demo"
    assert sig.target.name == "demo@h2"
    assert sig.starts_at == "2026-11-23T15:40:14.036Z"
    assert sig.received_at == utc_iso(1795448415.04)
    data = sig.to_dict()
    assert data["target"]["host"] == "h2"
    assert data["episode"] == sig.episode and len(sig.episode) == 16


def test_episode_is_shared_by_resends_and_new_after_refire() -> None:
    first = from_alertmanager(ALERT, received_at=1.0)
    resend = from_alertmanager(ALERT, received_at=50.0)
    refire = from_alertmanager({**ALERT, "startsAt": "2026-11-23T16:00:00Z"}, received_at=60.0)
    assert first.episode == resend.episode
    assert first.episode != refire.episode


def test_host_falls_back_to_instance_without_port() -> None:
    labels = {k: v for k, v in ALERT["labels"].items() if k not in ("host", "service")}
    sig = from_alertmanager({**ALERT, "labels": labels}, received_at=1.0)
    assert sig.target.kind == "host"
    assert sig.target.host == "10.213.77.12"


def test_missing_fingerprint_is_derived_from_labels() -> None:
    alert = {k: v for k, v in ALERT.items() if k != "fingerprint"}
    a = from_alertmanager(alert, received_at=1.0)
    b = from_alertmanager(dict(alert), received_at=2.0)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16


@pytest.mark.parametrize(
    ("alert", "reason"),
    [
        ([], "must be an object"),
        ({"labels": {"alertname": "X"}, "status": "exploded"}, "status must be one of"),
        ({"labels": {"alertname": "X", "n": {"nested": 1}}}, "must map strings to strings"),
        ({"labels": "alertname=X"}, "labels must be an object"),
        ({"labels": {"alertname": "X"}, "startsAt": "yesterday"}, "not an RFC 3339 time"),
        ({"labels": {"alertname": "X"}, "fingerprint": 7}, "fingerprint must be a string"),
    ],
)
def test_malformed_alerts_are_refused_with_a_reason(alert: object, reason: str) -> None:
    with pytest.raises(SignalError, match=reason):
        from_alertmanager(alert, received_at=1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T15:40:14Z", 1795448414.0),
        ("2026-11-23T15:40:14.5+00:00", 1795448414.5),
        ("2026-11-23T16:40:14+01:00", 1795448414.0),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        (1795448414, 1795448414.0),
    ],
)
def test_parse_time(text: object, expected: float | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("bad", [float("nan"), True, "x" * 100, {"a": 1}, 253402300800, -1e15,
                                 "9999-12-31T23:59:59-01:00"])
def test_parse_time_rejects_non_times(bad: object) -> None:
    with pytest.raises(SignalError):
        parse_time(bad)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("10.0.0.1:9100", "10.0.0.1"), ("web1", "web1"), ("[::1]:80", "::1"), ("fe80::1", "fe80::1"),
     ("web1.example.org:443", "web1.example.org")],
)
def test_strip_port(host: str, expected: str) -> None:
    assert strip_port(host) == expected


def test_get_path() -> None:
    data = {"a": {"b": [{"c": 1}]}}
    assert get_path(data, "a.b.0.c") == 1
    assert get_path(data, "a/b", "/") == [{"c": 1}]
    with pytest.raises(KeyError):
        get_path(data, "a.x")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(alert=_json)
def test_any_json_is_a_signal_or_a_signal_error(alert: object) -> None:
    try:
        sig = from_alertmanager(alert, received_at=1.0)
    except SignalError:
        return
    assert sig.status in ("firing", "resolved")
    assert isinstance(sig.name, str)
    assert all(len(v) <= 4096 for v in [*sig.labels.values(), *sig.annotations.values()])
    assert Signal.from_dict(sig.to_dict()) == sig


def test_odd_but_valid_alerts_are_kept_not_refused() -> None:
    long_value = "x" * 5000
    many = {f"l{i:03}": "v" for i in range(300)}
    sig = from_alertmanager({"labels": {"alertname": long_value, **many},
                             "annotations": {"runbook": "fire \U0001F525", "half": "a\ud83d"}}, received_at=1.0)
    assert len(sig.name) == 4096 and sig.name.endswith("[truncated by selfheal: 5000 characters]")
    assert sig.labels["selfheal_truncated"] == "45 more entries dropped (of 301)"
    assert len(sig.labels) == 257
    assert sig.annotations["runbook"] == "fire \U0001F525"  # any Unicode text is kept
    assert sig.annotations["half"] == "a\ufffd"  # an unpaired surrogate is not text
    paired = from_alertmanager({"labels": {"alertname": "fire \ud83d\udd25"}}, received_at=1.0)
    assert paired.name == "fire \U0001F525"  # halves that went through UTF-16 are joined again


def test_an_alert_without_alertname_is_accepted() -> None:
    sig = from_alertmanager({"labels": {"job": "batch", "host": "h1"}}, received_at=1.0)
    assert sig.name == "" and sig.target.host == "h1"
