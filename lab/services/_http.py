"""What the lab's small HTTP services share."""
from __future__ import annotations

import socketserver
from http.server import ThreadingHTTPServer


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
