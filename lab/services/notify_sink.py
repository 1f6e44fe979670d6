"""The lab's notification receiver: stands in for a pager or chat webhook.

Every POST body is appended, with the time it arrived and its path, as one
JSON line to the file given by --out. GET /notifications returns them all.
Headers are not stored, so a token sent by a client never lands on disk.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

from _http import run

_MAX_BODY = 1024 * 1024


def _handler(out: str, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            return

        def _send(self, code: int, payload: object) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self._send(413, {"error": f"body over {_MAX_BODY} bytes"})
                return
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                self._send(400, {"error": "body is not JSON"})
                return
            record = {"received_at": time.time(), "path": self.path, "body": body}
            with lock, open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            self._send(200, {"stored": True})

        def do_GET(self) -> None:
            if self.path != "/notifications":
                self._send(404, {"error": "not found"})
                return
            try:
                with open(out, encoding="utf-8") as fh:
                    records = [json.loads(line) for line in fh if line.strip()]
            except FileNotFoundError:
                records = []
            self._send(200, records)

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="address:port")
    parser.add_argument("--out", required=True, help="JSON lines file")
    args = parser.parse_args(argv)
    return run(args.listen, _handler(args.out, threading.Lock()))


if __name__ == "__main__":
    sys.exit(main())
