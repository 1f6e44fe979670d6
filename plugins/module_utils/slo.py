# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Error-budget burn rates from Prometheus, over a short and a long window at once.

An objective of 0.999 allows an error ratio of 0.001: the error budget. The
burn rate over a window is the error ratio seen in that window divided by
that budget: 1 spends the budget exactly over the SLO period, 14.4 spends 2%
of a 30-day budget in one hour. As in the Google SRE workbook ("multiwindow,
multi-burn-rate alerts"), a burn counts only when both its windows show it:
the long one (it is significant) and the short one (it is still going on).
So `Burn.fast` is the lower burn rate of the two fast windows and `Burn.slow`
the lower of the two slow windows; `policy.decide()` compares them with the
policy's thresholds.

Each window is one instant query (POST /api/v1/query, through Ansible's
open_url, so proxies and certificate checks behave as in any module), and
its worst series (the highest error ratio) stands for it. Every failure is
a SloError whose message says what to fix; what no data means is the
caller's decision.
"""
from __future__ import annotations

import http.client
import json
import logging
import math
import re
import urllib.error
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible.module_utils import urls

from ansible_collections.selfheal.core.plugins.module_utils.policy import Burn

logger = logging.getLogger(__name__)

PLACEHOLDER = "{window}"
DURATION = re.compile(r"^(?P<count>[0-9]+)(?P<unit>ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_MIN_COVERAGE = 0.5
_SNIPPET = 200


class SloError(Exception):
    """The burn rate cannot be known; the message says why and what to fix."""


def _check_objective(objective: Any) -> float:
    if isinstance(objective, bool) or not isinstance(objective, (int, float)) or not 0 < objective < 1:
        raise SloError(f"objective must be a number between 0 and 1 (exclusive), such as 0.999; got {objective!r}")
    return float(objective)


def _check_duration(window: Any) -> str:
    match = DURATION.fullmatch(window) if isinstance(window, str) else None
    if match is None or int(match["count"]) == 0:
        raise SloError(f"window {window!r} is not a Prometheus duration: write a positive whole number and one "
                       "unit of ms, s, m, h, d, w, y, such as '5m' or '1h'")
    return window


def _check_windows(name: str, windows: Any) -> tuple[str, str]:
    if isinstance(windows, str) or not isinstance(windows, Sequence) or len(windows) != 2:
        raise SloError(f"{name} must be two Prometheus durations, a short and a long window such as "
                       f"('5m', '1h'); got {windows!r}")
    return _check_duration(windows[0]), _check_duration(windows[1])


@dataclass(frozen=True)
class SloSpec:
    """An objective and the PromQL error ratio (errors / total, 0 to 1) over the range `{window}`.

    Only the literal token `{window}` is replaced, so PromQL's own braces (label
    matchers) are left alone. Window pairs may be given as lists; they are kept as tuples.
    """

    objective: float
    error_ratio_query: str
    fast_windows: tuple[str, str] = ("5m", "1h")
    slow_windows: tuple[str, str] = ("30m", "6h")

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", _check_objective(self.objective))
        if not isinstance(self.error_ratio_query, str) or PLACEHOLDER not in self.error_ratio_query:
            raise SloError(f"error_ratio_query must be PromQL with the placeholder {PLACEHOLDER} where the range "
                           "goes, such as 'sum(rate(errors_total[{window}])) / sum(rate(requests_total[{window}]))'; "
                           f"got {self.error_ratio_query!r}")
        object.__setattr__(self, "fast_windows", _check_windows("fast_windows", self.fast_windows))
        object.__setattr__(self, "slow_windows", _check_windows("slow_windows", self.slow_windows))

    @property
    def windows(self) -> tuple[str, ...]:
        """Every window once, fast ones first: one query each."""
        return tuple(dict.fromkeys((*self.fast_windows, *self.slow_windows)))

    def query(self, window: str) -> str:
        """The error ratio query over `window`."""
        return self.error_ratio_query.replace(PLACEHOLDER, _check_duration(window))


def burn_rate(error_ratio: float, objective: float) -> float:
    """How many times faster than sustainable the error budget burns: error_ratio / (1 - objective)."""
    return error_ratio / (1 - _check_objective(objective))


def burn_from_ratios(spec: SloSpec,
                     error_ratios: Mapping[str, float]) -> tuple[Burn, dict[str, dict[str, float]]]:
    """Burn from each window's error ratio: each of fast and slow is the lower of its two windows' burns.

    Returns the Burn and, as evidence, {window: {"error_ratio": x, "burn": y}} for every window.
    """
    missing = [window for window in spec.windows if window not in error_ratios]
    if missing:
        raise SloError(f"no error ratio for window(s) {', '.join(missing)}: give one for each of {spec.windows}")
    details = {window: {"error_ratio": float(error_ratios[window]),
                        "burn": burn_rate(error_ratios[window], spec.objective)}
               for window in spec.windows}
    burn = Burn(fast=min(details[window]["burn"] for window in spec.fast_windows),
                slow=min(details[window]["burn"] for window in spec.slow_windows))
    return burn, details


def seconds(window: str) -> float:
    """A Prometheus duration in seconds."""
    match = DURATION.fullmatch(_check_duration(window))
    if match is None:  # _check_duration has refused it already
        raise SloError(f"window {window!r} is not a Prometheus duration")
    return int(match["count"]) * _UNIT_SECONDS[match["unit"]]


def discount_short_history(spec: SloSpec, burn: Burn, history: float) -> Burn:
    """A window that Prometheus has filled for less than half its length measures a moment, not a
    trend (a Prometheus started minutes ago sees a short outage as most of its 6h window): a pair with
    such a window is not counted (burn 0), and Burn.unmeasured says why."""
    unmeasured: dict[str, str] = {}
    fast, slow = burn.fast, burn.slow
    for pair, windows in (("fast", spec.fast_windows), ("slow", spec.slow_windows)):
        short = [w for w in windows if history < _MIN_COVERAGE * seconds(w)]
        if short:
            unmeasured[pair] = (f"Prometheus holds {history / 60:.0f} min of history, less than half of "
                                f"{', '.join(short)}")
            fast, slow = (0.0, slow) if pair == "fast" else (fast, 0.0)
    return Burn(fast=fast, slow=slow, unmeasured=unmeasured)


def query_burn(prometheus_url: str, spec: SloSpec, timeout: float = 5.0,
               now: float | None = None) -> tuple[Burn, dict[str, dict[str, float]]]:
    """Query Prometheus at `prometheus_url` (its base URL) for each window of `spec`; see burn_from_ratios.

    `timeout` bounds each query (in seconds); `now` is the evaluation time (Unix seconds), default Prometheus's now.
    """
    endpoint, where = _endpoint(prometheus_url)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise SloError(f"timeout must be a positive number of seconds; got {timeout!r}")
    if now is not None and (isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now)):
        raise SloError(f"now must be a Unix time in seconds or None; got {now!r}")
    ratios = {}
    at = {} if now is None else {"time": f"{now:.3f}"}
    for window in spec.windows:
        query = spec.query(window)
        status, body = _post(endpoint, where, {"query": query, **at}, timeout)
        ratios[window] = _worst_ratio(status, body, where, window, query)
        logger.debug("window %s: error ratio %s from %s", window, ratios[window], where)
    burn, details = burn_from_ratios(spec, ratios)
    longest = max(spec.windows, key=seconds)
    return discount_short_history(spec, burn, history(prometheus_url, longest, timeout, now)), details


def history(prometheus_url: str, window: str, timeout: float = 5.0, now: float | None = None) -> float:
    """Seconds of the last `window` for which Prometheus holds data: how far back its oldest scrape
    within the window is (the whole window for a Prometheus that has run longer)."""
    endpoint, where = _endpoint(prometheus_url)
    step = max(1, int(seconds(window) / 360))  # a few hundred points, whatever the window
    query = f"time() - min(min_over_time(timestamp(up)[{_check_duration(window)}:{step}s]))"
    params = {"query": query} if now is None else {"query": query, "time": f"{now:.3f}"}
    status, body = _post(endpoint, where, params, timeout)
    samples = _samples(status, body, where, "the history", query)
    try:
        return float(samples[0][1][1]) if samples else 0.0
    except (TypeError, ValueError, IndexError):
        raise SloError(f"Prometheus at {where} answered the history query with {samples[0]!r}: {query}") from None


def _endpoint(url: Any) -> tuple[str, str]:
    """The instant query endpoint of the Prometheus at `url`, and its host:port for messages."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is not None and "@" in parts.netloc:
        raise SloError("prometheus_url must not carry a user or password: give http(s)://host:port of Prometheus")
    try:
        port = parts.port if parts is not None else None
    except ValueError:  # a port that is not a number from 0 to 65535
        port, parts = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SloError(f"prometheus_url must be the base URL of Prometheus, http(s)://host:port such as "
                       f"http://127.0.0.1:9090; got {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    where = f"{host}:{port or (443 if parts.scheme == 'https' else 80)}"
    path = parts.path.rstrip("/") + "/api/v1/query"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")), where


def _post(endpoint: str, where: str, params: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """POST the form to the endpoint: the HTTP status and body, whatever the status."""
    try:
        try:
            headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
            response = urls.open_url(endpoint, data=urllib.parse.urlencode(params).encode(), method="POST",
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
        raise SloError(f"cannot reach Prometheus at {where}: {str(reason) or type(exc).__name__}; check the URL and "
                       f"that Prometheus runs and answers there within {timeout:g}s") from exc


def _samples(status: int, body: bytes, where: str, what: str, query: str) -> list[tuple[Any, Any]]:
    """The (metric, value) samples of one instant query's answer; `what` names the query in messages."""
    try:
        answer = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        answer = None
    if not isinstance(answer, dict) or "status" not in answer:
        snippet = body[:_SNIPPET].decode("utf-8", "replace").strip()
        raise SloError(f"{where} answered HTTP {status} without Prometheus's JSON for {what} "
                       f"({snippet!r}); check that the URL is the base URL of Prometheus, without /api/v1")
    if answer["status"] != "success":
        raise SloError(f"Prometheus at {where} rejected the query for {what} (HTTP {status}, "
                       f"{answer.get('errorType', 'error')}): {answer.get('error', 'no error text')}; "
                       f"fix the query: {query}")
    if answer.get("warnings"):
        logger.info("Prometheus at %s warns about the query for %s: %s", where, what, answer["warnings"])
    data = answer.get("data")
    if not isinstance(data, dict):
        data = {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "matrix":
        raise SloError(f"the query for {what} returns a range vector; wrap the range selector in a "
                       f"function such as avg_over_time() or rate() so it returns one value per series: {query}")
    if kind == "scalar":
        return [({}, result)]
    if kind == "vector" and isinstance(result, list):
        return [(s.get("metric"), s.get("value")) if isinstance(s, dict) else ({}, s) for s in result]
    raise SloError(f"Prometheus at {where} answered {what} with a {kind!r} result, not a vector or "
                   f"scalar: {query}")


def instant_query(prometheus_url: str, query: str, timeout: float = 5.0) -> list[tuple[Any, Any]]:
    """Run one instant query now: its (metric labels, [time, value]) samples; SloError says why not."""
    endpoint, where = _endpoint(prometheus_url)
    status, body = _post(endpoint, where, {"query": query}, timeout)
    return _samples(status, body, where, "the query", query)


def _worst_ratio(status: int, body: bytes, where: str, window: str, query: str) -> float:
    """The highest error ratio over the series of one instant query's answer."""
    samples = _samples(status, body, where, f"window {window}", query)
    if not samples:
        raise SloError(f"no data for window {window}: the query returned no series; check its metric and label "
                       f"names and that Prometheus has scraped them over {window}: {query}")
    return max(_ratio(metric, value, window, query) for metric, value in samples)


def _ratio(metric: Any, value: Any, window: str, query: str) -> float:
    """One sample's error ratio: a finite number, at least 0."""
    labels = ", ".join(f'{k}="{v}"' for k, v in metric.items()) if isinstance(metric, dict) else ""
    series = f"series {{{labels}}}" if labels else "the result"
    raw = value[1] if isinstance(value, list) and len(value) == 2 else value
    try:
        ratio = float(raw) if isinstance(raw, str) else None
    except ValueError:
        ratio = None
    if ratio is None:
        raise SloError(f"window {window}: {series} has the value {raw!r}, not a number; the query must "
                       f"return error ratios: {query}")
    if not math.isfinite(ratio):
        raise SloError(f"window {window}: {series} is {raw} (a division by zero: no traffic in the window?); "
                       f"divide by (total > 0) to drop series without traffic, or use a longer window: {query}")
    if ratio < 0:
        raise SloError(f"window {window}: {series} has the error ratio {ratio:g}, below 0; the query must "
                       f"return errors / total, from 0 to 1: {query}")
    return ratio
