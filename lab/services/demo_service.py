"""Small demo web service that runs on every lab host.

Endpoints:
  /          a greeting naming the host
  /healthz   200 {"status": "ok"} while healthy, 503 while a fault is injected or
             while its dependency (--dependency host:port, the database) does not answer
  /metrics   Prometheus text format: demo_up, demo_healthy, demo_requests_total, demo_memory_bytes
  /fault     POST ?healthy=0|1 flips the health state; ?delay=S makes every answer S seconds late
             (a hung service: alive, too slow for its objective); ?leak=MB makes it keep MB more memory
             every second (a leak: it stays healthy, and only a restart gives the memory back), up to
             LEAK_CAP in all; ?leak=0 stops the growth

With --config, a JSON file of settings ({"greeting": ..., "workers": N}) read at start: a file that
is not valid JSON, or a setting of the wrong type, stops the service at once (exit 2), as a bad
configuration stops a real one. With --relapse-file, a file that holds a number N makes every start
of the service crash N seconds later (a fix that verifies and does not hold). SIGUSR1 writes a dump
of every thread's stack to the log (stderr), as a JVM does on SIGQUIT.

Standard library only: it runs under the lab hosts' system python3.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from _http import run

logger = logging.getLogger("demo_service")


LEAK_CAP = 512 * 1024 * 1024


def resident_bytes() -> int:
    """This process's resident memory, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ConfigError(Exception):
    """The configuration file cannot be used; the message says which file and why."""


SETTINGS = {"greeting": str, "workers": int}


def load_config(path: str | None) -> dict[str, object]:
    settings: dict[str, object] = {"greeting": "hello", "workers": 4}
    if not path:
        return settings
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return settings
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid configuration: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object of settings")
    for key, value in data.items():
        kind = SETTINGS.get(key)
        if kind is None:
            raise ConfigError(f"{path}: unknown setting {key!r}; settings are {', '.join(SETTINGS)}")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError(f"{path}: setting {key!r} must be a {kind.__name__}, got {value!r}")
    return {**settings, **data}


class _State:
    def __init__(self, host: str, dependency: str | None, settings: dict[str, object] | None = None) -> None:
        self.host = host
        self.settings = settings or {}
        self.delay = 0.0
        self.healthy = True
        self.requests = 0
        self.started = time.time()
        self.lock = threading.Lock()
        self.dependency = dependency
        self._dep_checked = 0.0
        self._dep_up = True
        self.leak_mb = 0
        self.leaked: list[bytearray] = []
        self._leaking = False

    def leak(self, mb_per_second: int) -> None:
        """Keep mb_per_second more memory every second (touched, so it is resident), up to LEAK_CAP."""
        self.leak_mb = mb_per_second
        if self._leaking or not mb_per_second:
            return
        self._leaking = True

        def grow() -> None:
            while self.leak_mb:
                if sum(len(chunk) for chunk in self.leaked) + self.leak_mb * 2**20 <= LEAK_CAP:
                    self.leaked.append(bytearray(b"x" * (self.leak_mb * 2**20)))
                time.sleep(1.0)
            self._leaking = False

        threading.Thread(target=grow, daemon=True).start()

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
            if state.delay:
                time.sleep(state.delay)
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
                    "# HELP demo_memory_bytes Resident memory of the process.",
                    "# TYPE demo_memory_bytes gauge",
                    f"demo_memory_bytes {resident_bytes()}",
                ]
                self._send(200, "\n".join(lines) + "\n", "text/plain; version=0.0.4")
            elif path == "/":
                self._send(200, json.dumps({"service": "demo", "host": state.host,
                                            "greeting": state.settings.get("greeting")}))
            else:
                self._send(404, json.dumps({"error": "not found"}))

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path != "/fault":
                self._send(404, json.dumps({"error": "not found"}))
                return
            query = parse_qs(url.query)
            if "delay" in query:
                try:
                    delay = float(query["delay"][0])
                except ValueError:
                    delay = -1.0
                if not 0 <= delay <= 60:
                    self._send(400, json.dumps({"error": "delay must be seconds, 0 to 60"}))
                    return
                state.delay = delay
                self._send(200, json.dumps({"delay": state.delay}))
                return
            if "leak" in query:
                raw = query["leak"][0]
                if not raw.isdigit() or int(raw) > 64:
                    self._send(400, json.dumps({"error": "leak must be whole MB per second, 0 to 64"}))
                    return
                state.leak(int(raw))
                self._send(200, json.dumps({"leak_mb_per_second": state.leak_mb}))
                return
            value = query.get("healthy", [""])[0]
            if value not in ("0", "1"):
                self._send(400, json.dumps({"error": "healthy must be 0 or 1 (or delay=S, or leak=MB)"}))
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
    parser.add_argument("--config", help="a JSON file of settings, read at start")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logger.info("demo service on %s for %s (pid %d)", args.listen, args.host_name, os.getpid())
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        logger.error("configuration error, not starting: %s", exc)
        return 2
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    _relapse(args.relapse_file)
    return run(args.listen, _handler(_State(args.host_name, args.dependency, settings)))


if __name__ == "__main__":
    sys.exit(main())
