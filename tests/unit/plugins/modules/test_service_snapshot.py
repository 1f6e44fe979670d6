"""The service role's diagnosis in one module call, against real processes and files on this machine."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError
from ansible_collections.selfheal.core.plugins.modules import service_snapshot

# a process that writes a line on SIGUSR1, the way the demo service dumps its threads
DUMPER = """
import signal, sys, time
log = open(sys.argv[1], "a", buffering=1)
signal.signal(signal.SIGUSR1, lambda *_: log.write("Thread MainThread\\n  at sleep\\n"))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _params(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"status_command": [], "pid": None, "pidfile": "", "unit": "", "log": "", "lines": 30,
                            "config": "", "dump": ""}
    return {**base, **kw}


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    log = tmp_path / "demo.log"
    log.write_text("".join(f"line {n}\n" for n in range(50)))
    proc = subprocess.Popen([sys.executable, "-c", DUMPER, str(log)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc, log
    proc.kill()
    proc.wait()


def test_the_pid_the_status_command_reports_is_the_process_and_its_log_tail_is_kept(
        service: tuple[subprocess.Popen[str], Path]) -> None:
    proc, log = service
    status = [sys.executable, "-c", f"import json; print(json.dumps({{'pid': {proc.pid}, 'state': 'running'}}))"]
    result = service_snapshot.snapshot(_params(status_command=status, log=str(log), lines=5), False)
    assert result["status"]["rc"] == 0
    assert result["status"]["reported"] == {"pid": proc.pid, "state": "running"}
    assert result["process"]["pid"] == proc.pid
    assert result["process"]["stopped"] is False
    assert result["process"]["rss_bytes"] > 0
    assert result["log_tail"] == [f"line {n}" for n in range(45, 50)]
    assert result["thread_dump"] is None
    assert result["changed"] is False


def test_a_not_running_answer_is_an_answer_and_other_exit_codes_fail() -> None:
    stopped = service_snapshot.snapshot(_params(status_command=[sys.executable, "-c", "import sys; sys.exit(3)"]),
                                        False)
    assert stopped["status"]["rc"] == 3 and stopped["process"] is None
    with pytest.raises(ModuleError, match=r"failed \(rc=2\)"):
        service_snapshot.snapshot(_params(status_command=[sys.executable, "-c", "import sys; sys.exit(2)"]), False)
    with pytest.raises(ModuleError, match="did not answer"):
        service_snapshot.snapshot(_params(status_command=["/nonexistent/labsvc", "status"]), False)


def test_a_thread_dump_is_read_from_the_log_after_the_signal(
        service: tuple[subprocess.Popen[str], Path], tmp_path: Path) -> None:
    proc, log = service
    pidfile = tmp_path / "demo.pid"
    pidfile.write_text(f"{proc.pid}\n")
    result = service_snapshot.snapshot(_params(pidfile=str(pidfile), log=str(log), dump="SIGUSR1"), False)
    assert result["thread_dump"]["taken"] is True
    assert result["thread_dump"]["lines"] == ["Thread MainThread", "  at sleep"]


def test_a_stopped_process_is_not_sent_the_dump_signal(service: tuple[subprocess.Popen[str], Path]) -> None:
    proc, log = service
    before = log.read_text()
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while service_snapshot.snapshot(_params(pid=proc.pid), False)["process"]["state"] not in ("T", "t"):
            assert time.monotonic() < deadline, "the process did not stop"
            time.sleep(0.05)
        result = service_snapshot.snapshot(_params(pid=proc.pid, log=str(log), dump="SIGUSR1"), False)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert result["process"]["stopped"] is True
    assert result["thread_dump"] == {"taken": False, "why": "the process is stopped (SIGSTOP): it cannot answer"}
    assert log.read_text() == before


def test_the_configuration_is_read_exactly_and_a_gone_pid_is_no_process(tmp_path: Path) -> None:
    config = tmp_path / "demo.conf"
    data = b"port = 8080\nsecret = s3cr3t\n"
    config.write_bytes(data)
    config.chmod(0o640)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    result = service_snapshot.snapshot(_params(pid=gone.pid, config=str(config)), False)
    assert result["process"] is None and result["connections"] == []
    assert result["config"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert result["config"]["mode"] == "0640"
    assert base64.b64decode(result["config"]["content"]) == data
    missing = service_snapshot.snapshot(_params(config=str(tmp_path / "none.conf")), False)
    assert missing["config"] == {"path": str(tmp_path / "none.conf"), "error": "No such file or directory"}
    json.dumps(result)  # what Ansible returns must serialize
