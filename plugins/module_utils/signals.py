# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Signal: one normalized alert or event, whatever source it came from.

This is the one implementation of the Signal schema. The event source
plugins, the modules and the tests all use it.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

STATUSES = ("firing", "resolved")
_MAX_LABELS = 256
_MAX_TEXT = 4096
_MAX_KEY = 256
# How a value cut to _MAX_TEXT characters ends: what was cut is visible, and its length kept.
TRUNCATED = " …[truncated by selfheal: {length} characters]"
TRUNCATED_KEY = "selfheal_truncated"
_FIRST = datetime(1, 1, 2, tzinfo=timezone.utc).timestamp()  # what utc_iso() can print
_LAST = datetime(9999, 12, 30, tzinfo=timezone.utc).timestamp()
_HOST_PORT = re.compile(r"^\[?(?P<host>[^\[\]]+?)\]?(?::\d+)?$")


class SignalError(ValueError):
    """An alert that cannot be turned into a Signal; the message says why."""


@dataclass(frozen=True)
class Target:
    """What is broken: a host, or a service on a host, a pod, a node..."""

    kind: str
    name: str
    host: str | None = None
    namespace: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class Signal:
    source: str
    fingerprint: str
    status: str
    name: str
    severity: str
    target: Target
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str | None = None
    received_at: str = ""

    @property
    def episode(self) -> str:
        """Stable id of one firing episode of this alert (fingerprint + start time).

        Re-sends of the same alert share it; the same alert firing again after
        it resolved gets a new one.
        """
        digest = hashlib.sha256(f"{self.fingerprint}|{self.starts_at or ''}".encode()).hexdigest()
        return digest[:16]

    def to_dict(self) -> dict[str, Any]:
        """The Signal as plain data, with its episode id, as events carry it."""
        data = asdict(self)
        data["episode"] = self.episode
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signal:
        """The Signal that to_dict() gave (as kept in a source's intake)."""
        fields = {k: v for k, v in data.items() if k != "episode"}
        return cls(**{**fields, "target": Target(**fields["target"])})


# The time helpers of the collection, in one place: what is sent and recorded is RFC 3339 UTC.

def utc_iso(ts: float) -> str:
    """Format a Unix time as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def utc_seconds(ts: float) -> str:
    """Format a Unix time as RFC 3339 UTC to the second (for reasons and messages people read)."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> float | None:
    """Parse an RFC 3339 time (Alertmanager's format) or a Unix time to a Unix time.

    Alertmanager's zero time (0001-01-01T00:00:00Z) and empty values give None.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SignalError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or not _FIRST <= value <= _LAST:
            raise SignalError(f"not a time: {value!r} (Unix seconds of the years 1 to 9999)")
        return float(value)
    if not isinstance(value, str) or len(value) > 64:
        raise SignalError(f"not a time: {str(value)[:64]!r}")
    text = value.strip()
    if text.startswith("0001-01-01"):
        return None
    text = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    # Go prints nanoseconds; Python takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SignalError(f"not an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        stamp = parsed.timestamp()
    except (OverflowError, ValueError) as exc:
        raise SignalError(f"not a time: {value!r}") from exc
    if not _FIRST <= stamp <= _LAST:
        raise SignalError(f"not a time: {value!r} (years 1 to 9999)")
    return stamp


def strip_port(host: str) -> str:
    """'10.0.0.1:9100' -> '10.0.0.1', '[::1]:80' -> '::1', 'web1' -> 'web1'."""
    if host.count(":") > 1 and not host.startswith("["):
        return host  # a bare IPv6 address
    match = _HOST_PORT.match(host)
    return match.group("host") if match else host


def get_path(data: Any, path: str, separator: str = ".") -> Any:
    """Look up 'a.b.c' in nested dicts (and list indexes); KeyError when absent."""
    node = data
    for part in path.split(separator):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(path)
    return node


def _text(value: str, limit: int = _MAX_TEXT) -> str:
    """Any text as valid Unicode, at most `limit` characters: longer text is cut with a marker
    that keeps its original length; unpaired surrogates (not text) become U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # a pair of surrogate halves (text that went through UTF-16) is joined again
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if len(value) <= limit:
        return value
    marker = TRUNCATED.format(length=len(value))
    return value[: limit - len(marker)] + marker


def _str_map(value: Any, what: str) -> dict[str, str]:
    """Labels or annotations as strings. Values that are too long are truncated with a marker, never
    refused; past _MAX_LABELS entries the rest is dropped and counted under TRUNCATED_KEY."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SignalError(f"{what} must be an object of strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, (str, int, float)) or isinstance(val, bool):
            raise SignalError(f"{what} must map strings to strings; {str(key)[:64]!r} does not")
        if len(out) == _MAX_LABELS:
            out[TRUNCATED_KEY] = f"{len(value) - _MAX_LABELS} more entries dropped (of {len(value)})"
            break
        out[_text(key, _MAX_KEY)] = _text(str(val))
    return out


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def from_alertmanager(alert: Any, received_at: float, host: str | None = None,
                      source: str = "alertmanager") -> Signal:
    """Normalize one alert of an Alertmanager webhook payload.

    `host` is the host found by the source's data_host_path, if any; the
    `host` label wins over it, then the `instance` label without its port.
    """
    if not isinstance(alert, dict):
        raise SignalError(f"an alert must be an object, got {type(alert).__name__}")
    labels = _str_map(alert.get("labels"), "labels")
    annotations = _str_map(alert.get("annotations"), "annotations")
    name = labels.get("alertname", "")  # stock EDA accepts alerts without one, and so do we
    status = alert.get("status", "firing")
    if status not in STATUSES:
        raise SignalError(f"status must be one of {', '.join(STATUSES)}, got {str(status)[:32]!r}")
    fingerprint = alert.get("fingerprint") or _fingerprint(labels)
    if not isinstance(fingerprint, str) or len(fingerprint) > 128:
        raise SignalError("fingerprint must be a string of at most 128 characters")
    starts = parse_time(alert.get("startsAt"))
    target_host = labels.get("host") or (strip_port(host) if host else None)
    if not target_host and labels.get("instance"):
        target_host = strip_port(labels["instance"])
    service = labels.get("service")
    namespace = labels.get("namespace")
    if labels.get("pod"):
        target = Target("pod", labels["pod"], target_host, namespace, service)
    elif service:
        target = Target("service", f"{service}@{target_host}" if target_host else service,
                        target_host, namespace, service)
    else:
        target = Target("host", target_host or "unknown", target_host, namespace, None)
    return Signal(
        source=source,
        fingerprint=fingerprint,
        status=status,
        name=name,
        severity=labels.get("severity", "none"),
        target=target,
        labels=labels,
        annotations=annotations,
        starts_at=utc_iso(starts) if starts is not None else None,
        received_at=utc_iso(received_at),
    )
