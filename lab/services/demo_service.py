"""Small demo web service that runs on every lab host.

Endpoints:
  /          a greeting naming the host
  /healthz   200 {"status": "ok"} while healthy, 503 while a fault is injected or
             while its dependency (--dependency host:port, the database) does not answer
  /metrics   Prometheus text format: demo_up, demo_healthy, demo_requests_total
  /fault     POST ?healthy=0|1 flips the health state (chaos for later scenarios)

With --relapse-file, a file that holds a number N makes every start of the
service crash N seconds later (a fix that verifies and does not hold).

Standard library only: it runs under the lab hosts' system python3.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from _http import run

logger = logging.getLogger("demo_service")


class _State:
    def __init__(self, host: str, dependency: str | None) -> None:
        self.host = host
        self.healthy = True
        self.requests = 0
        self.started = time.time()
        self.lock = threading.Lock()
        self.dependency = dependency
        self._dep_checked = 0.0
        self._dep_up = True

    def dependency_up(self) -> bool:
        """Whether the dependency accepts TCP connections (checked at most twice a second)."""
        if self.dependency is None:
            return True
        now = time.monotonic()
        if now - self._dep_checked >= 0.5:
            address, port = self.dependency.rsplit(":", 1)
            try:
                with socket.create_connection((address, int(port)), timeout=0.3):
                    self._dep_up = True
            except OSError:
                self._dep_up = False
            self._dep_checked = now
        return self._dep_up

    def status(self) -> tuple[bool, str]:
        if not self.healthy:
            return False, "fault injected"
        if not self.dependency_up():
            return False, f"dependency {self.dependency} does not answer"
        return True, "ok"


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "selfheal-demo/1"

        def log_message(self, fmt: str, *args: object) -> None:  # quiet access log
            logger.debug(fmt, *args)

        def _send(self, code: int, body: str, ctype: str = "application/json") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with state.lock:
                state.requests += 1
            path = urlparse(self.path).path
            if path == "/healthz":
                ok, why = state.status()
                if ok:
                    self._send(200, json.dumps({"status": "ok", "host": state.host}))
                else:
                    self._send(503, json.dumps({"status": "unhealthy", "reason": why, "host": state.host}))
            elif path == "/metrics":
                lines = [
                    "# HELP demo_up 1 while the demo service process runs.",
                    "# TYPE demo_up gauge",
                    "demo_up 1",
                    "# HELP demo_healthy 1 while /healthz answers 200.",
                    "# TYPE demo_healthy gauge",
                    f"demo_healthy {1 if state.status()[0] else 0}",
                    "# HELP demo_dependency_up 1 while the dependency answers (1 when there is none).",
                    "# TYPE demo_dependency_up gauge",
                    f"demo_dependency_up {1 if state.dependency_up() else 0}",
                    "# HELP demo_requests_total Requests served.",
                    "# TYPE demo_requests_total counter",
                    f"demo_requests_total {state.requests}",
                    "# HELP demo_start_time_seconds Unix time the process started.",
                    "# TYPE demo_start_time_seconds gauge",
                    f"demo_start_time_seconds {state.started}",
                ]
                self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
            elif path == "/":
                self._send(200, json.dumps({"service": "demo", "host": state.host}))
            else:
                self._send(404, json.dumps({"error": "not found"}))

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path != "/fault":
                self._send(404, json.dumps({"error": "not found"}))
                return
            value = parse_qs(url.query).get("healthy", [""])[0]
            if value not in ("0", "1"):
                self._send(400, json.dumps({"error": "healthy must be 0 or 1"}))
                return
            state.healthy = value == "1"
            self._send(200, json.dumps({"healthy": state.healthy}))

    return Handler


def _relapse(path: str | None) -> None:
    """Crash (exit 1, no clean-up) N seconds after start while `path` holds N."""
    try:
        with open(path or "", encoding="utf-8") as fh:
            after = float(fh.read().strip())
    except (OSError, ValueError):
        return

    def crash() -> None:
        time.sleep(after)
        logger.error("relapse: crashing %.1fs after start, as %s says", after, path)
        os._exit(1)

    threading.Thread(target=crash, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host-name", required=True, help="lab host name, e.g. h1")
    parser.add_argument("--listen", required=True, help="address:port to bind")
    parser.add_argument("--dependency", help="address:port of a TCP service this one needs")
    parser.add_argument("--relapse-file", help="a file holding N: crash N seconds after each start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logger.info("demo service on %s for %s (pid %d)", args.listen, args.host_name, os.getpid())
    _relapse(args.relapse_file)
    return run(args.listen, _handler(_State(args.host_name, args.dependency)))


if __name__ == "__main__":
    sys.exit(main())
