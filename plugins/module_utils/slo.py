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

Each window is one instant query (module_utils/prometheus.py), and its
worst series (the highest error ratio) stands for it. Every failure is a
SloError whose message says what to fix; what no data means is the
caller's decision.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.policy import Burn
from ansible_collections.selfheal.core.plugins.module_utils.prometheus import (
    PrometheusError,
    endpoint,
    post,
    samples,
)

logger = logging.getLogger(__name__)

PLACEHOLDER = "{window}"
DURATION = re.compile(r"^(?P<count>[0-9]+)(?P<unit>ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_MIN_COVERAGE = 0.5


# The burn rate cannot be known; the message says why and what to fix. One error for a bad SLO and for
# a Prometheus that cannot answer (what callers do is the same: decide without the burn, or fail).
SloError = PrometheusError


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
    endpoint_url, where = endpoint(prometheus_url)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise SloError(f"timeout must be a positive number of seconds; got {timeout!r}")
    if now is not None and (isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now)):
        raise SloError(f"now must be a Unix time in seconds or None; got {now!r}")
    ratios = {}
    at = {} if now is None else {"time": f"{now:.3f}"}
    for window in spec.windows:
        query = spec.query(window)
        status, body = post(endpoint_url, where, {"query": query, **at}, timeout)
        ratios[window] = _worst_ratio(status, body, where, window, query)
        logger.debug("window %s: error ratio %s from %s", window, ratios[window], where)
    burn, details = burn_from_ratios(spec, ratios)
    longest = max(spec.windows, key=seconds)
    return discount_short_history(spec, burn, history(prometheus_url, longest, timeout, now)), details


def history(prometheus_url: str, window: str, timeout: float = 5.0, now: float | None = None) -> float:
    """Seconds of the last `window` for which Prometheus holds data: how far back its oldest scrape
    within the window is (the whole window for a Prometheus that has run longer)."""
    endpoint_url, where = endpoint(prometheus_url)
    step = max(1, int(seconds(window) / 360))  # a few hundred points, whatever the window
    query = f"time() - min(min_over_time(timestamp(up)[{_check_duration(window)}:{step}s]))"
    params = {"query": query} if now is None else {"query": query, "time": f"{now:.3f}"}
    status, body = post(endpoint_url, where, params, timeout)
    found = samples(status, body, where, "the history", query)
    try:
        return float(found[0][1][1]) if found else 0.0
    except (TypeError, ValueError, IndexError):
        raise SloError(f"Prometheus at {where} answered the history query with {found[0]!r}: {query}") from None


def _worst_ratio(status: int, body: bytes, where: str, window: str, query: str) -> float:
    """The highest error ratio over the series of one instant query's answer."""
    found = samples(status, body, where, f"window {window}", query)
    if not found:
        raise SloError(f"no data for window {window}: the query returned no series; check its metric and label "
                       f"names and that Prometheus has scraped them over {window}: {query}")
    return max(_ratio(metric, value, window, query) for metric, value in found)


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
