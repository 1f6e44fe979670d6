"""What the lab's small HTTP services share."""
from __future__ import annotations

import signal
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LabHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer without the reverse DNS lookup in server_bind.

    http.server calls socket.getfqdn() on the bound address; inside a lab
    namespace there is no resolver, so that lookup stalls start-up for seconds.
    """

    daemon_threads = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


def run(listen: str, handler: type[BaseHTTPRequestHandler]) -> int:
    """Serve `handler` on "address:port" until SIGTERM or SIGINT."""
    address, port = listen.rsplit(":", 1)
    server = LabHTTPServer((address, int(port)), handler)
    signal.signal(signal.SIGTERM, lambda *_args: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
