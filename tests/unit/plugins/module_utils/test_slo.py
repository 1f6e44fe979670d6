"""Burn rates from error ratios: the spec, the math, the multi-window rule, and answers no real Prometheus gives.

What a real Prometheus answers (data, no series, a query it rejects, NaN, a range
vector, an unreachable port) is tested against the lab's Prometheus in
tests/integration/test_slo.py. The `canned` server here stands in only for what a
real Prometheus cannot be made to answer: a body that is not its JSON (a proxy's
error page), a sample value that is not a number, a result type other than vector
or scalar, a connection closed without an answer, an answer slower than the timeout.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.policy import Burn
from ansible_collections.selfheal.core.plugins.module_utils.prometheus import endpoint as query_endpoint
from ansible_collections.selfheal.core.plugins.module_utils.slo import (
    SloError,
    SloSpec,
    burn_from_ratios,
    burn_rate,
    query_burn,
)

QUERY = '1 - avg_over_time(up{job="demo"}[{window}])'

# --------------------------------------------------------------------------- the math


def test_burn_rate_is_the_error_ratio_over_the_budget() -> None:
    assert burn_rate(0.001, 0.999) == pytest.approx(1.0)
    assert burn_rate(0.0144, 0.999) == pytest.approx(14.4)
    assert burn_rate(0.06, 0.99) == pytest.approx(6.0)
    assert burn_rate(0.0, 0.9) == 0.0
    assert burn_rate(1.0, 0.5) == pytest.approx(2.0)


@pytest.mark.parametrize("objective", [0, 1, 1.5, -0.1, math.nan, True, "0.999", None])
def test_an_objective_outside_0_to_1_is_refused(objective: Any) -> None:
    with pytest.raises(SloError, match="objective must be a number between 0 and 1"):
        burn_rate(0.01, objective)
    with pytest.raises(SloError, match="objective must be a number between 0 and 1"):
        SloSpec(objective=objective, error_ratio_query=QUERY)


# --------------------------------------------------------------------------- the spec


def test_the_spec_has_the_workbook_windows_by_default() -> None:
    spec = SloSpec(objective=0.999, error_ratio_query=QUERY)
    assert (spec.fast_windows, spec.slow_windows) == (("5m", "1h"), ("30m", "6h"))
    assert spec.windows == ("5m", "1h", "30m", "6h")


def test_window_lists_become_tuples_and_shared_windows_are_queried_once() -> None:
    spec = SloSpec(0.99, QUERY, fast_windows=["5m", "1h"], slow_windows=["1h", "6h"])  # type: ignore[arg-type]
    assert spec.fast_windows == ("5m", "1h") and spec.slow_windows == ("1h", "6h")
    assert spec.windows == ("5m", "1h", "6h")


def test_only_the_window_placeholder_is_replaced() -> None:
    spec = SloSpec(0.999, 'sum(rate(errs{job="a",code=~"5.."}[{window}])) / sum(rate(reqs{job="a"}[{window}]))')
    assert spec.query("5m") == 'sum(rate(errs{job="a",code=~"5.."}[5m])) / sum(rate(reqs{job="a"}[5m]))'
    # Braces that str.format would take for fields are PromQL's, and stay.
    odd = SloSpec(0.999, 'x{a="{0}",b="{}"}[{window}] or y{c="{ window }"}[{window}]')
    assert odd.query("30s") == 'x{a="{0}",b="{}"}[30s] or y{c="{ window }"}[30s]'


def test_the_query_window_is_checked_too() -> None:
    spec = SloSpec(0.999, QUERY)
    with pytest.raises(SloError, match="not a Prometheus duration"):
        spec.query("5m]) or vector(1")


@pytest.mark.parametrize("query", ['1 - avg_over_time(up{job="demo"}[5m])', "x[{ window }]", "x[{WINDOW}]", "", None])
def test_a_query_without_the_placeholder_is_refused(query: Any) -> None:
    with pytest.raises(SloError, match=r"error_ratio_query must be PromQL with the placeholder \{window\}"):
        SloSpec(0.999, query)


@pytest.mark.parametrize("window", ["500ms", "30s", "5m", "1h", "7d", "2w", "1y", "90m"])
def test_prometheus_durations_are_accepted(window: str) -> None:
    spec = SloSpec(0.999, QUERY, fast_windows=(window, "1h"), slow_windows=("30m", window))
    assert spec.query(window) == f'1 - avg_over_time(up{{job="demo"}}[{window}])'


@pytest.mark.parametrize("window", ["", "5", "m", "5min", "1.5h", "0m", "-1m", " 5m", "5m ", "5m\n", "1h30m",
                                    "5M", 5, None])
def test_anything_else_is_not_a_duration(window: Any) -> None:
    with pytest.raises(SloError, match=r"window .* is not a Prometheus duration: .* such as '5m'"):
        SloSpec(0.999, QUERY, fast_windows=(window, "1h"))
    with pytest.raises(SloError, match="is not a Prometheus duration"):
        SloSpec(0.999, QUERY, slow_windows=("30m", window))


@pytest.mark.parametrize("windows", ["5m", ("5m",), ("5m", "1h", "6h"), (), None, 5])
def test_a_window_pair_is_exactly_two(windows: Any) -> None:
    with pytest.raises(SloError, match="fast_windows must be two Prometheus durations"):
        SloSpec(0.999, QUERY, fast_windows=windows)
    with pytest.raises(SloError, match="slow_windows must be two Prometheus durations"):
        SloSpec(0.999, QUERY, slow_windows=windows)


# --------------------------------------------------------------------------- the multi-window rule

WINDOW_POOL = ["1m", "5m", "30m", "1h", "6h", "1d"]
window_pairs = st.lists(st.sampled_from(WINDOW_POOL), min_size=2, max_size=2).map(tuple)


@given(objective=st.floats(min_value=0.5, max_value=0.99999), fast=window_pairs, slow=window_pairs,
       ratios=st.fixed_dictionaries({w: st.floats(min_value=0, max_value=1) for w in WINDOW_POOL}),
       threshold=st.floats(min_value=0, max_value=1000))
def test_a_burn_counts_only_when_both_its_windows_show_it(objective: float, fast: tuple[str, str],
                                                          slow: tuple[str, str], ratios: dict[str, float],
                                                          threshold: float) -> None:
    spec = SloSpec(objective, QUERY, fast_windows=fast, slow_windows=slow)
    burn, details = burn_from_ratios(spec, ratios)
    assert set(details) == set(fast) | set(slow)
    for window, row in details.items():
        assert row == {"error_ratio": ratios[window], "burn": burn_rate(ratios[window], objective)}
    for value, pair in ((burn.fast, fast), (burn.slow, slow)):
        burns = [details[window]["burn"] for window in pair]
        assert all(value <= b for b in burns) and value in burns
        # What the policy relies on: over a threshold exactly when both windows are.
        assert (value >= threshold) == all(b >= threshold for b in burns)


def test_both_windows_must_burn() -> None:
    spec = SloSpec(0.999, QUERY, fast_windows=("5m", "1h"), slow_windows=("30m", "6h"))
    # A spike that is over (long window high, short window back to normal) is no fast burn.
    burn, details = burn_from_ratios(spec, {"5m": 0.0, "1h": 0.02, "30m": 0.007, "6h": 0.006})
    assert (burn.fast, burn.slow) == (0.0, pytest.approx(6.0))
    assert details["1h"] == {"error_ratio": 0.02, "burn": pytest.approx(20.0)}


def test_a_missing_window_is_named() -> None:
    with pytest.raises(SloError, match=r"no error ratio for window\(s\) 30m, 6h"):
        burn_from_ratios(SloSpec(0.999, QUERY), {"5m": 0.1, "1h": 0.1})


# --------------------------------------------------------------------------- arguments of query_burn


@pytest.mark.parametrize("url, endpoint, where", [
    ("http://127.0.0.1:9090", "http://127.0.0.1:9090/api/v1/query", "127.0.0.1:9090"),
    ("http://prom.example/prometheus/", "http://prom.example/prometheus/api/v1/query", "prom.example:80"),
    ("https://prom.example?x=1#y", "https://prom.example/api/v1/query", "prom.example:443"),
    ("http://[::1]:9090/", "http://[::1]:9090/api/v1/query", "[::1]:9090"),
])
def test_the_query_endpoint_is_under_the_base_url(url: str, endpoint: str, where: str) -> None:
    assert query_endpoint(url) == (endpoint, where)


@pytest.mark.parametrize("url", ["prometheus:9090", "127.0.0.1:9090", "ftp://prom:21", "http://", "http://h:99999",
                                 "http://h:port", "", None])
def test_a_url_that_is_not_http_host_port_is_refused(url: Any) -> None:
    with pytest.raises(SloError, match=r"prometheus_url must be the base URL of Prometheus, http\(s\)://host:port"):
        query_burn(url, SloSpec(0.999, QUERY))


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(SloError, match="must not carry a user or password") as caught:
        query_burn("http://admin:s3cret@prom:9090", SloSpec(0.999, QUERY))
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, True, "5"])
def test_timeout_must_be_positive(timeout: Any) -> None:
    with pytest.raises(SloError, match="timeout must be a positive number of seconds"):
        query_burn("http://127.0.0.1:9", SloSpec(0.999, QUERY), timeout=timeout)


@pytest.mark.parametrize("now", [math.nan, math.inf, "now", True])
def test_now_must_be_a_unix_time(now: Any) -> None:
    with pytest.raises(SloError, match="now must be a Unix time in seconds or None"):
        query_burn("http://127.0.0.1:9", SloSpec(0.999, QUERY), now=now)


# --------------------------------------------------------------------------- answers no real Prometheus gives


@dataclass
class Reply:
    """What the canned server answers to every query."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0
    hang_up: bool = False
    history: float = 86400.0  # the answer to query_burn's history query: a day of data


@pytest.fixture
def canned() -> Iterator[tuple[str, Reply]]:
    """A real HTTP server on a free port that answers every POST with `Reply`."""
    reply = Reply()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            form = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            if "timestamp%28up%29" in form:  # how much history Prometheus holds
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [0, str(reply.history)]}]}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            time.sleep(reply.delay)
            if reply.hang_up:
                self.close_connection = True
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", reply
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _vector(*values: str) -> bytes:
    result = [{"metric": {"host": f"h{i}"}, "value": [1700000000.0, v]} for i, v in enumerate(values)]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def test_the_canned_server_answers_like_prometheus(canned: tuple[str, Reply]) -> None:
    """The stand-in itself: a well-formed answer gives the worst series per window."""
    url, reply = canned
    reply.body = _vector("0.001", "0.02", "0.005")
    burn, details = query_burn(url, SloSpec(0.999, QUERY))
    assert isinstance(burn, Burn) and (burn.fast, burn.slow) == (pytest.approx(20.0), pytest.approx(20.0))
    assert set(details) == {"5m", "1h", "30m", "6h"}
    assert all(row["error_ratio"] == 0.02 for row in details.values())


@pytest.mark.parametrize("status, body, content_type, message", [
    (200, b"<html><body>Welcome to nginx!</body></html>", "text/html",
     r"answered HTTP 200 without Prometheus's JSON for window 5m \('<html><body>Welcome to nginx!"),
    (502, b"Bad Gateway", "text/plain", r"answered HTTP 502 without Prometheus's JSON for window 5m \('Bad Gateway'\)"),
    (200, b"\xff\xfe not utf-8", "application/json", "answered HTTP 200 without Prometheus's JSON"),
    (200, b'["success"]', "application/json", "answered HTTP 200 without Prometheus's JSON"),
])
def test_an_answer_that_is_not_prometheus_json_says_to_check_the_url(
        canned: tuple[str, Reply], status: int, body: bytes, content_type: str, message: str) -> None:
    url, reply = canned
    reply.status, reply.body, reply.content_type = status, body, content_type
    with pytest.raises(SloError, match=message) as caught:
        query_burn(url, SloSpec(0.999, QUERY))
    assert "check that the URL is the base URL of Prometheus" in str(caught.value)
    assert url.removeprefix("http://") in str(caught.value)


@pytest.mark.parametrize("value", ["abc", "", "0x1p-3 "])
def test_a_value_that_is_not_a_number_names_its_series(canned: tuple[str, Reply], value: str) -> None:
    url, reply = canned
    reply.body = _vector("0.1", value)
    with pytest.raises(SloError, match=r'window 5m: series \{host="h1"\} has the value .*, not a number'):
        query_burn(url, SloSpec(0.999, QUERY))


def test_a_sample_of_another_shape_is_not_a_number(canned: tuple[str, Reply]) -> None:
    url, reply = canned
    reply.body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"host": "h0"}, "value": 0.5}]}}).encode()
    with pytest.raises(SloError, match=r'series \{host="h0"\} has the value 0.5, not a number'):
        query_burn(url, SloSpec(0.999, QUERY))


def test_a_result_that_is_neither_vector_nor_scalar_is_refused(canned: tuple[str, Reply]) -> None:
    url, reply = canned
    reply.body = json.dumps({"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}).encode()
    with pytest.raises(SloError, match="answered window 5m with a 'string' result, not a vector or scalar"):
        query_burn(url, SloSpec(0.999, QUERY))


def test_a_negative_error_ratio_says_what_the_query_must_return(canned: tuple[str, Reply]) -> None:
    url, reply = canned
    reply.body = _vector("-0.5")
    with pytest.raises(SloError, match=r"error ratio -0.5, below 0; the query must return errors / total"):
        query_burn(url, SloSpec(0.999, QUERY))


def test_a_connection_closed_without_an_answer_is_unreachable(canned: tuple[str, Reply]) -> None:
    url, reply = canned
    reply.hang_up = True
    with pytest.raises(SloError, match=f"cannot reach Prometheus at {url.removeprefix('http://')}: "):
        query_burn(url, SloSpec(0.999, QUERY))


def test_a_slow_answer_fails_within_the_timeout(canned: tuple[str, Reply]) -> None:
    url, reply = canned
    reply.delay, reply.body = 3.0, _vector("0")
    started = time.monotonic()
    with pytest.raises(SloError, match=f"cannot reach Prometheus at {url.removeprefix('http://')}: .*timed out.*"
                                       r"within 0.3s"):
        query_burn(url, SloSpec(0.999, QUERY), timeout=0.3)
    assert time.monotonic() - started < 2.0


def test_windows_prometheus_has_not_filled_are_not_counted(canned: tuple[str, Reply]) -> None:
    url, reply = canned
    reply.body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [0, "0.5"]}]}}).encode()
    reply.history = 40 * 60.0  # a Prometheus started 40 minutes ago: a short outage fills its 6h window
    spec = SloSpec(objective=0.95, error_ratio_query="x[{window}]")
    burn, _details = query_burn(url, spec)
    assert burn.fast == pytest.approx(10.0), "40 minutes fill more than half of 5m and of 1h"
    assert burn.slow == 0.0 and burn.unmeasured == {"slow": "Prometheus holds 40 min of history, less than half of 6h"}
