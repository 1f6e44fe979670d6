"""A steady stream of requests through the lab's load balancer, every answer counted by status.

    python lab/loadgen.py --url http://10.213.77.13/ --rate 50 [--duration 60] [--out counts.json]

Sends --rate requests a second (each with its own connection, as a browser behind a proxy might, so a
drained or restarted upstream shows up), for --duration seconds or until SIGTERM/SIGINT, and keeps in
--out, rewritten atomically every second, what came back:

    {"sent": 3000, "answered": {"200": 2998, "502": 2}, "failed": {"timeout": 0, "refused": 0, "other": 0},
     "started_at": ..., "updated_at": ..., "rate": 50, "url": ...}

A request that got no answer at all is counted under "failed" by why; every request sent is counted once,
answered or failed. A test reads the file to say how many requests failed while the platform worked.
Standard library only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class Counts:
    """Thread-safe tally of what came back."""

    def __init__(self, url: str, rate: float) -> None:
        self._lock = threading.Lock()
        self.data: dict[str, Any] = {"sent": 0, "answered": {}, "failed": {"timeout": 0, "refused": 0, "other": 0},
                                     "started_at": time.time(), "updated_at": time.time(), "rate": rate, "url": url}

    def sent(self) -> None:
        with self._lock:
            self.data["sent"] += 1

    def answered(self, status: int) -> None:
        with self._lock:
            key = str(status)
            self.data["answered"][key] = self.data["answered"].get(key, 0) + 1

    def failed(self, why: str) -> None:
        with self._lock:
            self.data["failed"][why] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps({**self.data, "updated_at": time.time()}))


def one(url: str, timeout: float, counts: Counts) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - main() allows http(s) only
            resp.read()
            counts.answered(resp.status)
    except urllib.error.HTTPError as exc:
        counts.answered(exc.code)
    except TimeoutError:
        counts.failed("timeout")
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            counts.failed("timeout")
        elif isinstance(reason, ConnectionRefusedError):
            counts.failed("refused")
        else:
            counts.failed("other")
    except OSError:
        counts.failed("other")


def save(path: Path | None, counts: Counts) -> dict[str, Any]:
    snap = counts.snapshot()
    if path is not None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(snap, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return snap


def run(url: str, rate: float, duration: float | None, out: Path | None, timeout: float = 2.0,
        stop: threading.Event | None = None, progress: bool = False) -> dict[str, Any]:
    """Send `rate` requests a second until `duration` passes or `stop` is set; return the final counts
    (every request sent has been answered or has failed by then)."""
    stop = stop or threading.Event()
    counts = Counts(url, rate)
    interval = 1.0 / rate
    start = time.monotonic()
    next_save = start + 1.0
    sent = 0
    with ThreadPoolExecutor(max_workers=max(4, int(rate * timeout) + 1)) as pool:
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            due = start + sent * interval
            if due > now:
                stop.wait(min(due - now, 0.05))
                continue
            counts.sent()
            pool.submit(one, url, timeout, counts)
            sent += 1
            if now >= next_save:
                snap = save(out, counts)
                next_save = now + 1.0
                if progress:
                    failed = sum(snap["failed"].values())
                    print(f"\r[loadgen] {snap['sent']} sent, {snap['answered']} answered, {failed} failed",
                          end="", file=sys.stderr, flush=True)
    final = save(out, counts)  # the pool has drained: every request sent is counted
    if progress:
        print(file=sys.stderr)
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second")
    parser.add_argument("--duration", type=float, help="seconds; default: until SIGTERM or SIGINT")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds one request may take")
    parser.add_argument("--out", type=Path, help="the counts, rewritten every second")
    args = parser.parse_args()
    if args.rate <= 0 or args.rate > 2000 or args.timeout <= 0:
        parser.error("--rate must be in (0, 2000] and --timeout > 0")
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must be http(s)://, got {args.url!r}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_args: stop.set())
    final = run(args.url, args.rate, args.duration, args.out, args.timeout, stop, progress=sys.stderr.isatty())
    print(json.dumps(final, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
