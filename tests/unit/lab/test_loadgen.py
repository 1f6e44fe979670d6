"""The lab's load generator: a steady rate, and every request it sent counted once, answered or not."""
from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import loadgen  # lab/ is on the path (conftest)
import pytest


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path.startswith("/bad") else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_rate_is_kept_and_every_answer_is_counted_by_status(server: str, tmp_path: Path) -> None:
    out = tmp_path / "counts.json"
    ok = loadgen.run(f"{server}/", rate=40, duration=1.5, out=out)
    assert 54 <= ok["sent"] <= 62, ok
    assert ok["answered"] == {"200": ok["sent"]} and sum(ok["failed"].values()) == 0
    assert json.loads(out.read_text()) | {"updated_at": 0} == ok | {"updated_at": 0}, "the file says the same"
    bad = loadgen.run(f"{server}/bad", rate=20, duration=0.5, out=None)
    assert bad["answered"] == {"503": bad["sent"]} and bad["sent"] >= 9


def test_requests_that_get_no_answer_are_counted_as_failed_not_lost(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    counts = loadgen.run(f"http://127.0.0.1:{port}/", rate=20, duration=0.5, out=None)
    assert counts["sent"] >= 9 and counts["answered"] == {}
    assert counts["failed"]["refused"] == counts["sent"], counts
