"""Draining an nginx upstream member and putting it back, against a real nginx on loopback."""
from __future__ import annotations

import hashlib
import http.server
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError
from ansible_collections.selfheal.core.plugins.modules import upstream

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _backend(name: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(name)))
            self.end_headers()
            self.wfile.write(name.encode())

        def log_message(self, *_args: object) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, int(httpd.server_address[1])


@dataclass
class Balancer:
    url: str
    conf: Path
    upstreams: Path
    members: dict[str, str]  # name -> address:port

    def params(self, member: str, state: str, **kw: Any) -> dict[str, Any]:
        base = {"path": str(self.upstreams), "member": self.members[member], "state": state,
                "check_command": [NGINX, "-t", "-q", "-c", str(self.conf)],
                "reload_command": [NGINX, "-s", "reload", "-c", str(self.conf)],
                "min_active": 1, "settle": 0.2, "lock_timeout": 2.0}
        return {**base, **kw}

    def served_by(self, count: int = 12) -> set[str]:
        seen = set()
        for _request in range(count):
            with urllib.request.urlopen(self.url, timeout=3) as resp:
                seen.add(resp.read().decode())
        return seen


@pytest.fixture
def balancer(tmp_path: Path) -> Iterator[Balancer]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: run make deps (apt-get install -y nginx)")
    backends = {name: _backend(name) for name in ("a", "b", "c")}
    members = {name: f"127.0.0.1:{port}" for name, (_httpd, port) in backends.items()}
    upstreams = tmp_path / "upstreams.conf"
    upstreams.write_text("".join(f"server {addr} max_fails=1 fail_timeout=2s;  # {name}\n"
                                 for name, addr in members.items()))
    upstreams.chmod(0o640)
    port = _port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;
  fastcgi_temp_path {tmp_path}/fastcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;
  upstream pool {{ include {upstreams}; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://pool; }} }}
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-g", "daemon off;"], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "nginx exited"
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
    yield Balancer(url, conf, upstreams, members)
    proc.terminate()
    proc.wait(10)
    for httpd, _backend_port in backends.values():
        httpd.shutdown()
        httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_drained_member_gets_no_requests_until_it_is_put_back_exactly(balancer: Balancer) -> None:
    original = balancer.upstreams.read_bytes()
    assert balancer.served_by() == {"a", "b", "c"}
    drained = upstream.apply(balancer.params("b", "drained"), False)
    assert drained["changed"] and drained["reloaded"] and drained["drained"]
    assert sorted(drained["active"]) == sorted([balancer.members["a"], balancer.members["c"]])
    time.sleep(0.3)  # the old worker leaves
    assert balancer.served_by() == {"a", "c"}
    again = upstream.apply(balancer.params("b", "drained"), False)
    assert not again["changed"] and not again["reloaded"], "a second drain changes nothing"
    back = upstream.apply(balancer.params("b", "active"), False)
    assert back["changed"] and back["reloaded"]
    assert balancer.upstreams.read_bytes() == original
    assert oct(balancer.upstreams.stat().st_mode & 0o777) == "0o640"
    time.sleep(0.3)
    assert balancer.served_by() == {"a", "b", "c"}


def test_a_check_that_fails_puts_the_file_back_and_nothing_is_reloaded(balancer: Balancer) -> None:
    before = _sha(balancer.upstreams)
    with pytest.raises(ModuleError, match="put back as it was and nothing was reloaded") as failed:
        upstream.apply(balancer.params("a", "drained", check_command=[NGINX, "-t", "-q", "-c", "/nonexistent"]),
                       False)
    assert failed.value.result["reloaded"] is False and failed.value.result["drained"] is False
    assert _sha(balancer.upstreams) == before
    assert balancer.served_by() == {"a", "b", "c"}


def test_the_last_members_of_the_pool_are_never_drained(balancer: Balancer) -> None:
    upstream.apply(balancer.params("a", "drained"), False)
    upstream.apply(balancer.params("b", "drained"), False)
    before = _sha(balancer.upstreams)
    with pytest.raises(ModuleError, match="would leave 0 server"):
        upstream.apply(balancer.params("c", "drained"), False)
    assert _sha(balancer.upstreams) == before
    time.sleep(0.3)
    assert balancer.served_by() == {"c"}
    upstream.apply(balancer.params("a", "active"), False)
    before = _sha(balancer.upstreams)
    with pytest.raises(ModuleError, match="would leave 1 server"):
        upstream.apply(balancer.params("c", "drained", min_active=2), False)
    assert _sha(balancer.upstreams) == before


def test_check_mode_and_unknown_members_change_nothing(balancer: Balancer) -> None:
    before = _sha(balancer.upstreams)
    planned = upstream.apply(balancer.params("a", "drained"), True)
    assert planned["changed"] and not planned["reloaded"]
    with pytest.raises(ModuleError, match="named by 0 server lines"):
        upstream.apply({**balancer.params("a", "drained"), "member": "127.0.0.1:1"}, False)
    assert _sha(balancer.upstreams) == before


def test_concurrent_drains_of_one_file_never_lose_an_edit(balancer: Balancer) -> None:
    errors: list[BaseException] = []

    def drain(name: str) -> None:
        try:
            upstream.apply(balancer.params(name, "drained", min_active=0, settle=0), False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=drain, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    downs = [line for line in balancer.upstreams.read_text().splitlines() if " down;" in line]
    assert len(downs) == 2, balancer.upstreams.read_text()
