"""Burn rates from the lab's real Prometheus: real PromQL, real answers, real failures.

Every query only reads; no service of the lab is touched.
"""
from __future__ import annotations

import json
import math
import socket
import time
import urllib.parse
import urllib.request

import pytest
from conftest import Lab, wait_for

from ansible_collections.selfheal.core.plugins.module_utils.slo import SloError, SloSpec, history, query_burn

UP_RATIO = '1 - avg_over_time(up{job="demo"}[{window}])'


def _spec(query: str, objective: float = 0.999) -> SloSpec:
    """Windows short enough for a lab that has run a few minutes."""
    return SloSpec(objective, query, fast_windows=("30s", "2m"), slow_windows=("1m", "3m"))


def _prometheus(lab: Lab) -> str:
    return str(lab.vars["selfheal_prometheus_url"])


@pytest.fixture(autouse=True)
def _filled_windows(lab: Lab) -> None:
    """A window counts only once Prometheus holds half of it: wait until it holds half of the longest (3m)."""
    wait_for("Prometheus to hold 100 s of history", lambda: history(_prometheus(lab), "3m") >= 100, 240, 2)


def test_a_young_prometheus_holds_the_history_it_has_run(lab: Lab) -> None:
    held = history(_prometheus(lab), "3m")
    assert 100 <= held <= 181, held
    assert history(_prometheus(lab), "3m", now=time.time() - 24 * 3600) == 0.0, "nothing a day before it started"


def _instant(lab: Lab, promql: str, at: float) -> list[float]:
    """The values of an instant query, asked independently of slo.py."""
    url = f"{_prometheus(lab)}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return [float(sample["value"][1]) for sample in answer["data"]["result"]]


def _seconds_of_data(lab: Lab) -> float:
    """How many seconds of samples Prometheus has of one demo target (counted at 1 s scrapes)."""
    counts = _instant(lab, 'count_over_time(up{job="demo",host="h1"}[5m])', time.time())
    return counts[0] if counts else 0.0


def test_the_lab_demo_slo_has_a_burn_for_every_window(lab: Lab) -> None:
    spec = _spec(UP_RATIO)
    burn, details = query_burn(_prometheus(lab), spec)
    assert set(details) == {"30s", "2m", "1m", "3m"}
    for row in details.values():
        assert math.isfinite(row["error_ratio"]) and 0 <= row["error_ratio"] <= 1
        assert math.isfinite(row["burn"]) and row["burn"] >= 0
        assert row["burn"] == pytest.approx(row["error_ratio"] / 0.001)
    assert burn.fast == min(details["30s"]["burn"], details["2m"]["burn"])
    assert burn.slow == min(details["1m"]["burn"], details["3m"]["burn"])


def test_the_worst_series_stands_for_each_window(lab: Lab) -> None:
    # Scrape durations differ from target to target: a real spread of values over several series.
    query = 'avg_over_time(scrape_duration_seconds{job="demo"}[{window}])'
    now = time.time() - 5  # samples of the past are settled: both queries see the same ones
    burn, details = query_burn(_prometheus(lab), _spec(query, 0.99), now=now)
    for window, row in details.items():
        values = _instant(lab, query.replace("{window}", window), now)
        assert len(values) == len(lab.cfg.hosts)
        assert row["error_ratio"] == pytest.approx(max(values), rel=1e-12)
        assert row["burn"] == pytest.approx(max(values) / 0.01)
    assert burn.fast == min(details["30s"]["burn"], details["2m"]["burn"])


def test_the_short_window_holds_back_a_burn_the_long_window_shows(lab: Lab) -> None:
    # A ratio that grows with the window (samples counted): the long window burns more, the short one rules.
    wait_for("25 s of samples in prometheus", lambda: _seconds_of_data(lab) >= 25, timeout=60)
    query = 'count_over_time(up{job="demo",host="h1"}[{window}]) / 1000'
    spec = SloSpec(0.999, query, fast_windows=("5s", "20s"), slow_windows=("10s", "20s"))
    burn, details = query_burn(_prometheus(lab), spec, now=time.time() - 2)
    assert set(details) == {"5s", "20s", "10s"}
    assert details["5s"]["burn"] < details["10s"]["burn"] < details["20s"]["burn"]
    assert (burn.fast, burn.slow) == (details["5s"]["burn"], details["10s"]["burn"])
    assert 2 <= burn.fast <= 7  # about 5 samples at 1 s scrapes, over 0.001 of budget


def test_a_known_ratio_gives_its_burn(lab: Lab) -> None:
    # The windows reach Prometheus as real ranges (a bad substitution is a parse error), the math is exact.
    query = '0.02 + 0 * (1 - avg_over_time(up{job="demo"}[{window}]))'
    burn, details = query_burn(_prometheus(lab), _spec(query))
    assert (burn.fast, burn.slow) == (pytest.approx(20.0), pytest.approx(20.0))
    assert all(row == {"error_ratio": 0.02, "burn": pytest.approx(20.0)} for row in details.values())


def test_a_metric_that_does_not_exist_is_no_data_for_the_window(lab: Lab) -> None:
    spec = _spec('1 - avg_over_time(selfheal_no_such_metric{job="demo"}[{window}])')
    with pytest.raises(SloError, match="no data for window 30s: the query returned no series") as caught:
        query_burn(_prometheus(lab), spec)
    assert "selfheal_no_such_metric" in str(caught.value)


def test_the_evaluation_time_is_sent(lab: Lab) -> None:
    # The lab's Prometheus starts with an empty TSDB: two days ago it has nothing.
    spec = _spec(UP_RATIO)
    with pytest.raises(SloError, match="no data for window 30s"):
        query_burn(_prometheus(lab), spec, now=time.time() - 2 * 86400)


def test_a_query_prometheus_rejects_gives_its_error(lab: Lab) -> None:
    spec = _spec('1 - avg_over_time(up{job="demo"}[{window}]')
    where = _prometheus(lab).removeprefix("http://")
    with pytest.raises(SloError, match=f"Prometheus at {where} rejected the query for window 30s "
                                       r"\(HTTP 400, bad_data\): .*parse error.*fix the query"):
        query_burn(_prometheus(lab), spec)


def test_a_division_by_zero_is_nan_and_names_the_series(lab: Lab) -> None:
    spec = _spec('(0 * avg_over_time(up{job="demo"}[{window}])) / 0')
    with pytest.raises(SloError, match=r'window 30s: series \{.*host="h\d".*\} is NaN \(a division by zero'):
        query_burn(_prometheus(lab), spec)


def test_a_range_vector_says_to_wrap_it(lab: Lab) -> None:
    spec = _spec('up{job="demo"}[{window}]')
    with pytest.raises(SloError, match="window 30s returns a range vector; wrap the range selector"):
        query_burn(_prometheus(lab), spec)


def test_a_url_that_is_not_prometheus_says_so(lab: Lab) -> None:
    alertmanager = f"127.0.0.1:{lab.cfg.ports['alertmanager']}"
    with pytest.raises(SloError, match=f"{alertmanager} answered HTTP 404 without Prometheus's JSON for window 30s"):
        query_burn(f"http://{alertmanager}", _spec(UP_RATIO))


def test_an_unreachable_prometheus_fails_fast_naming_host_and_port() -> None:
    with socket.socket() as probe:  # a port the kernel just handed out, now closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(SloError, match=f"cannot reach Prometheus at 127.0.0.1:{port}: .*refused"):
        query_burn(f"http://127.0.0.1:{port}", _spec(UP_RATIO), timeout=2)
    assert time.monotonic() - started < 2
