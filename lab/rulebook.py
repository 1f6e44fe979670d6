"""A real ansible-rulebook daemon on a rulebook of one's own, for benchmarks and tests.

    with Daemon(rulebook, workdir) as daemon:   # started, its source port answering
        ...
        daemon.stop(signal.SIGKILL)              # or SIGTERM (clean: the JVM leaves it to Python)

Its environment is the lab daemon's (labctl.daemon_env), so the collection, the JVM setting
and the virtualenv are the same ones.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import labctl

BIN = labctl._venv_bin()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    def __init__(self, rulebook: Path, workdir: Path, port: int, inventory: Path | None = None) -> None:
        self.rulebook, self.workdir, self.port = rulebook, workdir, port
        self.inventory = inventory or workdir / "inventory.yml"
        if inventory is None:
            self.inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
        self.log_path = workdir / "rulebook.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 90) -> Daemon:
        env = {**os.environ, **labctl.daemon_env(labctl.load_config())}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(BIN / "ansible-rulebook"), "--rulebook", str(self.rulebook),
                                          "-i", str(self.inventory)], stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ansible-rulebook exited:\n{self.log()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"ansible-rulebook did not answer on port {self.port} within {timeout:.0f}s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any] | None:
        """The source's status page (its counters), or None while it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as resp:
                data = json.loads(resp.read())
                return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mb(self) -> tuple[float, float]:
        """Peak RSS of the daemon process, and the current RSS of its whole process tree (MB)."""
        def rss(pid: int, field: str) -> float:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field):
                        return int(line.split()[1]) / 1024
            except OSError:
                pass
            return 0.0
        tree = [self.pid, *_descendants(self.pid)]
        return rss(self.pid, "VmHWM:"), sum(rss(p, "VmRSS:") for p in tree)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Signal the daemon's process group; seconds until it exited."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        t0 = time.monotonic()
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        return time.monotonic() - t0

    def wait_exit(self, timeout: float) -> float | None:
        """Seconds until the daemon exited by itself, or None if it still runs after `timeout`."""
        assert self.proc is not None
        t0 = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - t0

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop(signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out.append(int(child))
        out.extend(_descendants(int(child)))
    return out


if __name__ == "__main__":
    sys.exit("lab/rulebook.py is a library for bench/ and tests/")
