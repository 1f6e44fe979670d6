"""The demo service's memory leak fault, run as the lab runs it (its own process, on loopback)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import REPO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def demo() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "lab" / "services" / "demo_service.py"), "--host-name", "t1",
                             "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the demo service did not start"
            time.sleep(0.1)
    yield url
    proc.kill()
    proc.wait()


def _memory(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("demo_memory_bytes ")))


def _post(url: str, query: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/fault?{query}", method="POST"), timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_leak_grows_resident_memory_while_the_service_stays_healthy(demo: str) -> None:
    before = _memory(demo)
    assert before > 1_000_000
    assert _post(demo, "leak=16") == (200, {"leak_mb_per_second": 16})
    time.sleep(2.5)
    assert _post(demo, "leak=0") == (200, {"leak_mb_per_second": 0})
    grown = _memory(demo)
    assert grown - before >= 32 * 2**20, (before, grown)
    time.sleep(1.5)
    assert abs(_memory(demo) - grown) < 4 * 2**20, "the growth did not stop"
    with urllib.request.urlopen(f"{demo}/healthz", timeout=2) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("query", ["leak=x", "leak=-1", "leak=65", "leak=1.5"])
def test_a_leak_rate_that_is_not_whole_mb_up_to_64_is_refused(demo: str, query: str) -> None:
    status, body = _post(demo, query)
    assert status == 400 and "leak must be whole MB per second" in str(body["error"])
