"""Shared test set-up: import the collection as Ansible does, from ansible_collections/."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".build" / "collections"

if not (COLLECTIONS / "ansible_collections" / "selfheal" / "core").exists():
    raise RuntimeError(f"{COLLECTIONS}/ansible_collections/selfheal/core is missing: run `make collection` "
                       "(make test does it) so the tests import the collection as Ansible does")
sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(REPO / "lab"))

import labctl  # noqa: E402 (found through the path set just above)

# --------------------------------------------------------------------------- the lab

VENV_BIN = Path(sys.executable).parent


@dataclass
class Lab:
    """The running lab, as tests see it."""

    cfg: labctl.Config
    env: dict[str, str]
    scratch_store: Path = Path("/nonexistent")

    @property
    def inventory_path(self) -> Path:
        return self.cfg.path("inventory.yml")

    @property
    def inventory(self) -> dict[str, Any]:
        return json.loads(self.inventory_path.read_text())

    @property
    def vars(self) -> dict[str, Any]:
        return self.inventory["all"]["vars"]

    def host(self, name: str) -> dict[str, Any]:
        return self.inventory["all"]["hosts"][name]

    def labctl(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), *args], capture_output=True,
                              text=True, check=False, env={**self.env, **(env or {})}, timeout=300)

    def svc(self, host: str, action: str, service: str = "demo") -> subprocess.CompletedProcess[str]:
        """The host's service manager, run inside the host's namespace as its sshd would."""
        return subprocess.run(["ip", "netns", "exec", self.cfg.host(host).netns, sys.executable,
                               str(REPO / "lab" / "labctl.py"), "svc", action, service],
                              capture_output=True, text=True, check=False, timeout=60,
                              env={**self.env, "SELFHEAL_LAB_HOST": host, "SELFHEAL_LAB_DIR": self.cfg.lab_dir})

    def pid(self, host: str, service: str = "demo") -> int | None:
        proc = self.svc(host, "status", service)
        return json.loads(proc.stdout).get("pid") if proc.stdout else None

    def wait_until_free(self, host: str) -> None:
        """Wait out a cooldown or lease that an earlier run left on `host` in the lab's store
        (the guard would rightly hold back a test's run there)."""
        from ansible_collections.selfheal.core.plugins.module_utils.store import Store

        path = self.cfg.path("store.db")
        if not path.exists():
            return
        deadline = time.time() + 600
        while time.time() < deadline:  # looked at again after each wait: a live run sets its cooldown late
            with Store(str(path)) as store:
                busy_until = store.busy_until(host)
            if busy_until <= time.time():
                return
            time.sleep(busy_until - time.time() + 0.5)

    def disk(self, host: str) -> Path:
        """The host's own small filesystem (a tmpfs the lab mounts for it)."""
        return labctl.disk_path(self.cfg, self.cfg.host(host))

    def empty_disk(self, host: str) -> None:
        """Leave the host's own filesystem empty but for its directories, as the lab made it."""
        self.playbook("selfheal.core.chaos.disk_fill", "-e", f"selfheal_target={host}", "-e", "chaos_fill=stop")
        labctl.empty_disk(self.cfg, self.cfg.host(host))

    def pg_backends(self, host: str = "h4") -> dict[int, dict[str, Any]]:
        """The client backends of the host's PostgreSQL (pg_stat_activity, this query's own left out)."""
        import psycopg

        password = self.cfg.path("postgres_password").read_text().strip()
        with psycopg.connect(host=self.cfg.host(host).address, port=5432, user="postgres", dbname="postgres",
                             password=password, connect_timeout=5, application_name="selfheal-test") as conn:
            rows = conn.execute("SELECT pid, state, application_name FROM pg_stat_activity "
                                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchall()
        return {int(pid): {"state": state, "application": app} for pid, state, app in rows}

    def stages(self, since: float = 0, store: Path | None = None) -> list[dict[str, Any]]:
        """The recovery stages in `store`'s audit trail (default: the lab's, the daemon's) since `since`."""
        from ansible_collections.selfheal.core.plugins.module_utils import timeline
        from ansible_collections.selfheal.core.plugins.module_utils.store import Store

        with Store(str(store or self.cfg.path("store.db"))) as s:
            return timeline.load(s, since)

    def recoveries(self, since: float = 0, store: Path | None = None) -> list[Any]:
        """The recovery timelines (timeline.Recovery) in `store` since `since` (a fault injected by a hand run
        is recorded in the lab's store, the rest of a hand run in its scratch store: pass both as needed)."""
        from ansible_collections.selfheal.core.plugins.module_utils import timeline

        return timeline.recoveries(self.stages(since, store))

    def recovery_ended(self, target: str, since: float) -> Any:
        """The recovery of `target` from a fault injected since `since`, once it ended (healed, escalated,
        held back, waiting for a human); None while it is open."""
        for rec in self.recoveries(since):
            if rec.target == target and rec.at("fault_injected") is not None and rec.outcome != "open":
                return rec
        return None

    def notifications(self, since: float = 0, platform: bool = False) -> list[dict[str, Any]]:
        """What the lab's pager received since `since`, oldest first: the pages of the daemon and its
        playbooks, or with `platform` the platform's own alerts (Alertmanager sends them to /platform)."""
        path = self.cfg.path("notifications.jsonl")
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                note = json.loads(line)
            except ValueError:
                continue
            if float(note.get("received_at", 0)) >= since and (note.get("path") == "/platform") == platform:
                out.append(note)
        return out

    def audit_trail(self, incident_id: str) -> list[dict[str, Any]]:
        """The lab store's audit trail of one incident, oldest first."""
        from ansible_collections.selfheal.core.plugins.module_utils.store import Store

        with Store(str(self.cfg.path("store.db"))) as store:
            return store.audit_trail(incident_id)

    def play_facts(self, play: str, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        """Run a test's own play (its text; it writes what it wants to see as JSON to `out`), by hand with
        no store; fail with its output unless it succeeds; return the run and the JSON."""
        path = out.with_suffix(".play.yml")
        path.write_text(play)
        proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory_path), str(path), *args],
                              capture_output=True, text=True, check=False, env=self.env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:]
        return proc, json.loads(out.read_text())

    def playbook(self, name: str, *args: str, timeout: float = 300,
                 store: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a playbook by hand. Its guard uses `store` (default: a store of this test session only),
        so cooldowns and leases of hand runs never hold back the daemon's runs on the lab store."""
        scratch = store or self.scratch_store
        return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory_path), name,
                               "-e", f"selfheal_store={scratch}", *args],
                              capture_output=True, text=True, check=False, env=self.env, timeout=timeout)


def _lab_env() -> dict[str, str]:
    env = {**os.environ, **labctl.daemon_env(labctl.load_config())}
    env["SELFHEAL_VENV"] = str(VENV_BIN.parent)
    return env


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab, brought up if it is not (the lab needs root: `make test` runs as root)."""
    env = _lab_env()
    was_up = subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), "status"], capture_output=True,
                            check=False, env=env, timeout=60).returncode == 0
    # A known state: no daemon reacting to what the integration tests break on purpose.
    # The end-to-end tests start it (fixture `daemon`); `make test` runs them last.
    subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), "daemon", "stop"], capture_output=True,
                   check=False, env=env, timeout=60)
    up = subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), "up"], capture_output=True, text=True,
                        check=False, env=env, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"the lab did not come up (run `make lab-up` to see why):\n{up.stdout}\n{up.stderr}")
    the_lab = Lab(labctl.load_config(), env, tmp_path_factory.mktemp("hand-runs") / "store.db")
    for host in the_lab.cfg.hosts:  # every host's demo service running, whatever an earlier test did
        the_lab.svc(host.name, "start")
    yield the_lab
    if not was_up:  # leave the machine as the tests found it
        the_lab.labctl("down")


@pytest.fixture(scope="session")
def daemon(lab: Lab) -> Iterator[Lab]:
    """The lab with the rulebook daemon running (stopped again at the end of the session)."""
    started = lab.labctl("daemon", "start")
    if started.returncode != 0:
        pytest.fail(f"the rulebook daemon did not start:\n{started.stdout}\n{started.stderr}")
    yield lab
    lab.labctl("daemon", "stop")


def tree_state(root: Path) -> dict[str, tuple[str, str, int]]:
    """Every file under `root`: (sha256, mode, size) by path relative to it. Read without touching its
    access time (a temp file read is a temp file in use, to a cleaner)."""
    def sha256(path: Path) -> str:
        fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
        with os.fdopen(fd, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    return {p.relative_to(root).as_posix(): (sha256(p), f"{p.stat().st_mode & 0o7777:04o}", p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    """Poll check() until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout:.0f}s")
