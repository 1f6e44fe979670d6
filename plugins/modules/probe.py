#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe
short_description: Verify that an HTTP or TCP endpoint is healthy, waiting up to a timeout
version_added: 0.1.0
description:
  - Requests O(url) every O(interval) seconds until it answers with one of
    O(status_codes) (and, if set, a body containing O(body_contains))
    O(healthy_streak) times in a row, or until O(timeout) seconds have passed.
  - A C(tcp://host:port) URL is healthy when a TCP connection is accepted,
    for services that speak no HTTP (databases, brokers).
  - With O(query), O(url) is the base URL of Prometheus and an attempt is
    healthy when the PromQL instant query returns at least one series. Write
    it as a condition that holds when healthy, the way an alert condition
    holds when unhealthy, for example C(up{job="demo",host="web1"} == 1).
  - This is the verification step of every remediation. An action that is not
    verified healthy counts as failed.
  - The probe only reads, so it runs in check mode too.
author:
  - selfheal.core developers (@selfheal-core)
options:
  url:
    description:
      - The health endpoint, C(http://), C(https://) or C(tcp://host:port).
    type: str
    required: true
  query:
    description:
      - PromQL verification, see above. O(status_codes) and O(body_contains) do not apply.
      - Each C({name}) in it is filled from O(placeholders) first (a value is escaped for a PromQL string).
    type: str
  placeholders:
    description:
      - Values of the C({name}) placeholders of O(query), such as the target, the service and the alert's
        labels. A placeholder with no value fails the probe, saying which (nothing is queried).
    type: dict
    default: {}
  status_codes:
    description:
      - HTTP status codes that mean healthy.
    type: list
    elements: int
    default: [200]
  body_contains:
    description:
      - Text the response body must contain to count as healthy.
    type: str
  timeout:
    description:
      - Seconds to keep trying before the endpoint is declared unhealthy.
    type: float
    default: 30
  interval:
    description:
      - Seconds between attempts.
    type: float
    default: 0.5
  request_timeout:
    description:
      - Seconds one request may take.
    type: float
    default: 2
  healthy_streak:
    description:
      - Consecutive healthy answers needed, to avoid declaring a flapping service healthy.
    type: int
    default: 1
  hold:
    description:
      - Seconds the endpoint must stay healthy, probed every O(interval), right after it was verified (the
        catalog's hold window). O(healthy_streak) consecutive unhealthy answers within it mean the fix did not
        hold; O(timeout) does not apply.
      - The result then says RV(held); a fix that did not hold fails the task (with O(fail_unhealthy)).
    type: float
  fail_unhealthy:
    description:
      - Fail the task when the endpoint is not healthy within O(timeout).
      - Set to V(false) to only report, for example when diagnosing.
    type: bool
    default: true
  validate_certs:
    description:
      - Verify TLS certificates of https URLs.
    type: bool
    default: true
extends_documentation_fragment:
  - selfheal.core.attributes
attributes:
  check_mode:
    support: full
    details: The probe only reads; it runs the same in check mode.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Verify the service answers its health check within 30 seconds
  selfheal.core.probe:
    url: http://10.0.0.12:8080/healthz
    timeout: 30
    healthy_streak: 2
  delegate_to: localhost

- name: Verify with PromQL that Prometheus sees the service up again
  selfheal.core.probe:
    url: http://127.0.0.1:9090
    query: up{job="demo", host="web1"} == 1
    timeout: 30
  delegate_to: localhost

- name: Diagnose without failing
  selfheal.core.probe:
    url: http://10.0.0.12:8080/healthz
    timeout: 0
    fail_unhealthy: false
  register: health
"""

RETURN = r"""
healthy:
  description: Whether the endpoint was healthy within the timeout.
  returned: always
  type: bool
  sample: true
attempts:
  description: Requests made.
  returned: always
  type: int
  sample: 3
elapsed:
  description: Seconds from the first request to the verdict.
  returned: always
  type: float
  sample: 1.02
status:
  description: HTTP status of the last answer, or null when the last request got no answer.
  returned: always
  type: int
  sample: 200
last_error:
  description: Why the last unhealthy attempt was unhealthy; null when healthy.
  returned: always
  type: str
  sample: "connection refused"
held:
  description: With O(hold), whether the endpoint stayed healthy for the whole hold window.
  returned: with hold
  type: bool
  sample: false
failed_after:
  description: With O(hold), seconds into the hold window at which the endpoint was found unhealthy again.
  returned: when a hold broke
  type: float
  sample: 4.5
body:
  description: The first 1024 characters of the last response body.
  returned: always
  type: str
  sample: '{"status": "ok"}'
"""

import json
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.urls import open_url

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.prometheus import PrometheusError, instant_query

_BODY_KEEP = 1024


def _query_attempt(url: str, query: str, request_timeout: float) -> tuple[bool, int | None, str, str | None]:
    """One PromQL verification: healthy when the query returns a series."""
    try:
        samples = instant_query(url, query, request_timeout)
    except PrometheusError as exc:
        return False, None, "", str(exc)
    body = json.dumps([{"metric": metric, "value": value} for metric, value in samples[:10]])
    return (True, 200, body, None) if samples else (False, 200, body, f"the query returned no series: {query}")


def _attempt(url: str, codes: list[int], body_contains: str | None, request_timeout: float,
             validate_certs: bool) -> tuple[bool, int | None, str, str | None]:
    """One request: (healthy, status, body, why unhealthy)."""
    if url.startswith("tcp://"):
        parts = urlsplit(url)
        try:
            with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=request_timeout):
                return True, None, "", None
        except OSError as exc:
            return False, None, "", f"no answer: {exc}"
    status: int | None = None
    body = ""
    try:
        resp = open_url(url, method="GET", timeout=request_timeout, validate_certs=validate_certs,
                        follow_redirects="none")
        status = resp.getcode()
        body = resp.read(65536).decode("utf-8", errors="replace")
    except Exception as exc:  # noqa: BLE001 - every transport error means "not healthy yet"
        status = getattr(exc, "code", None)
        reader = getattr(exc, "read", None)
        if callable(reader):
            try:
                body = reader(65536).decode("utf-8", errors="replace")
            except Exception:  # noqa: BLE001 - the error body is only evidence
                body = ""
        reason = getattr(exc, "reason", None) or exc
        if status is None:
            return False, None, body, f"no answer: {reason}"
    if status not in codes:
        return False, status, body, f"status {status}, want one of {codes}"
    if body_contains is not None and body_contains not in body:
        return False, status, body, f"body does not contain {body_contains!r}"
    return True, status, body, None


def _once(p: dict[str, Any]) -> tuple[bool, int | None, str, str | None]:
    if p["query"] is not None:
        return _query_attempt(p["url"], p["query"], p["request_timeout"])
    return _attempt(p["url"], p["status_codes"], p["body_contains"], p["request_timeout"], p["validate_certs"])


def _poll(p: dict[str, Any], seeking: bool, seconds: float) -> dict[str, Any]:
    """Probe every `interval` until `healthy_streak` answers in a row are healthy (`seeking` True: the
    verification) or unhealthy (False: the hold window), or `seconds` pass; whether the streak came."""
    start = time.monotonic()
    attempts = streak = 0
    while True:
        attempts += 1
        ok, status, body, why = _once(p)
        streak = streak + 1 if ok == seeking else 0
        if streak >= p["healthy_streak"] or time.monotonic() + p["interval"] > start + seconds:
            break
        time.sleep(p["interval"])
    return {"came": streak >= p["healthy_streak"], "attempts": attempts, "elapsed": round(time.monotonic() - start, 3),
            "status": status, "why": why, "body": body[:_BODY_KEEP]}


def _what(p: dict[str, Any]) -> str:
    return f"PromQL verification ({p['query']})" if p["query"] is not None else p["url"]


def _hold(p: dict[str, Any]) -> dict[str, Any]:
    """The hold window: healthy all along, or `healthy_streak` unhealthy answers in a row break it."""
    if p["hold"] < 0:
        raise ModuleError(f"hold must be >= 0, got {p['hold']}")
    polled = _poll(p, False, p["hold"])
    held = not polled["came"]
    result = {"changed": False, "healthy": held, "held": held, "attempts": polled["attempts"],
              "elapsed": polled["elapsed"], "status": polled["status"],
              "last_error": None if held else polled["why"], "body": polled["body"]}
    if not held:
        result["failed_after"] = polled["elapsed"]
        if p["fail_unhealthy"]:
            raise ModuleError(f"the fix did not hold: {_what(p)} verified healthy, then failed again "
                              f"{polled['elapsed']}s into its {p['hold']:g}s hold window: {polled['why']}", **result)
    return result


PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(query: str, values: dict[str, Any]) -> str:
    """`query` with each {name} replaced by its value, escaped as a PromQL string's content."""
    missing = sorted({m.group(1) for m in PLACEHOLDER.finditer(query) if m.group(1) not in values})
    if missing:
        raise ModuleError(f"the verification query {query!r} names {', '.join('{' + m + '}' for m in missing)}, "
                          f"which nothing gives (placeholders: {', '.join(sorted(values)) or 'none'})")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]).replace("\\", "\\\\").replace('"', '\\"'), query)


def _probe(p: dict[str, Any], _check_mode: bool) -> dict[str, Any]:
    """The probe only reads: it runs the same in check mode."""
    if p["query"] is not None:
        p = {**p, "query": fill(p["query"], p["placeholders"])}
    if not p["url"].startswith(("http://", "https://", "tcp://")):
        raise ModuleError(f"url must start with http://, https:// or tcp://, got {p['url']!r}")
    if p["query"] is not None and not p["url"].startswith(("http://", "https://")):
        raise ModuleError(f"with query, url must be the http(s) base URL of Prometheus, got {p['url']!r}")
    if p["url"].startswith("tcp://") and (urlsplit(p["url"]).port is None or not urlsplit(p["url"]).hostname):
        raise ModuleError(f"a tcp:// url needs a host and a port, got {p['url']!r}")
    if p["timeout"] < 0 or p["interval"] <= 0 or p["request_timeout"] <= 0 or p["healthy_streak"] < 1:
        raise ModuleError("timeout must be >= 0, interval and request_timeout > 0, healthy_streak >= 1")
    if p["hold"] is not None:
        return _hold(p)
    polled = _poll(p, True, p["timeout"])
    healthy = polled["came"]
    result = {"changed": False, "healthy": healthy, "attempts": polled["attempts"], "elapsed": polled["elapsed"],
              "status": polled["status"], "last_error": None if healthy else polled["why"], "body": polled["body"]}
    if not healthy and p["fail_unhealthy"]:
        raise ModuleError(f"{_what(p)} is not healthy after {result['elapsed']}s "
                          f"and {result['attempts']} attempts: {polled['why']}", **result)
    return result


ARGUMENT_SPEC = {
    "url": {"type": "str", "required": True},
    "query": {"type": "str"},
    "placeholders": {"type": "dict", "default": {}},
    "status_codes": {"type": "list", "elements": "int", "default": [200]},
    "body_contains": {"type": "str"},
    "timeout": {"type": "float", "default": 30},
    "interval": {"type": "float", "default": 0.5},
    "request_timeout": {"type": "float", "default": 2},
    "healthy_streak": {"type": "int", "default": 1},
    "hold": {"type": "float"},
    "fail_unhealthy": {"type": "bool", "default": True},
    "validate_certs": {"type": "bool", "default": True},
}


def main() -> None:
    run_module(ARGUMENT_SPEC, _probe)


if __name__ == "__main__":
    main()
