# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Prometheus HTTP client that the verification probe and the SLO burn rates share.

Each query is one POST to /api/v1/query, through Ansible's open_url, so proxies and certificate
checks behave as in any module. Every failure is a PrometheusError whose message says what to fix
(an unreachable Prometheus, a URL that is not its base URL, a query it rejected, a range vector).
"""
from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.parse
from typing import Any

from ansible.module_utils import urls

logger = logging.getLogger(__name__)

_SNIPPET = 200


class PrometheusError(Exception):
    """Prometheus could not answer a query, or not usefully; the message says why and what to fix."""


def endpoint(url: Any) -> tuple[str, str]:
    """The instant query endpoint of the Prometheus at `url`, and its host:port for messages."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is not None and "@" in parts.netloc:
        raise PrometheusError("prometheus_url must not carry a user or password: give http(s)://host:port of "
                              "Prometheus")
    try:
        port = parts.port if parts is not None else None
    except ValueError:  # a port that is not a number from 0 to 65535
        port, parts = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise PrometheusError(f"prometheus_url must be the base URL of Prometheus, http(s)://host:port such as "
                              f"http://127.0.0.1:9090; got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    where = f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"
    path = parts.path.rstrip("/") + "/api/v1/query"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), where


def post(url: str, where: str, params: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """POST the form to the endpoint: the HTTP status and body, whatever the status."""
    try:
        try:
            headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
            response = urls.open_url(url, data=urllib.parse.urlencode(params).encode(), method="POST",
                                     headers=headers, timeout=timeout)
            with response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, exc.read()
            finally:
                exc.close()
    # URLError and timeouts are OSErrors; urls.ConnectionError is open_url's own (proxy, TLS).
    except (OSError, http.client.HTTPException, urls.ConnectionError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise PrometheusError(f"cannot reach Prometheus at {where}: {str(reason) or type(exc).__name__}; check the "
                              f"URL and that Prometheus runs and answers there within {timeout:g}s") from exc


def samples(status: int, body: bytes, where: str, what: str, query: str) -> list[tuple[Any, Any]]:
    """The (metric, value) samples of one instant query's answer; `what` names the query in messages."""
    try:
        answer = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        answer = None
    if not isinstance(answer, dict) or "status" not in answer:
        snippet = body[:_SNIPPET].decode("utf-8", "replace").strip()
        raise PrometheusError(f"{where} answered HTTP {status} without Prometheus's JSON for {what} "
                              f"({snippet!r}); check that the URL is the base URL of Prometheus, without /api/v1")
    if answer["status"] != "success":
        raise PrometheusError(f"Prometheus at {where} rejected the query for {what} (HTTP {status}, "
                              f"{answer.get('errorType', 'error')}): {answer.get('error', 'no error text')}; "
                              f"fix the query: {query}")
    if answer.get("warnings"):
        logger.info("Prometheus at %s warns about the query for %s: %s", where, what, answer["warnings"])
    data = answer.get("data")
    if not isinstance(data, dict):
        data = {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "matrix":
        raise PrometheusError(f"the query for {what} returns a range vector; wrap the range selector in a "
                              "function such as avg_over_time() or rate() so it returns one value per series: "
                              f"{query}")
    if kind == "scalar":
        return [({}, result)]
    if kind == "vector" and isinstance(result, list):
        return [(s.get("metric"), s.get("value")) if isinstance(s, dict) else ({}, s) for s in result]
    raise PrometheusError(f"Prometheus at {where} answered {what} with a {kind!r} result, not a vector or "
                          f"scalar: {query}")


def instant_query(prometheus_url: str, query: str, timeout: float = 5.0) -> list[tuple[Any, Any]]:
    """Run one instant query now: its (metric labels, [time, value]) samples; PrometheusError says why not."""
    endpoint_url, where = endpoint(prometheus_url)
    status, body = post(endpoint_url, where, {"query": query}, timeout)
    return samples(status, body, where, "the query", query)
