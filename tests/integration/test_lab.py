"""The lab scripts: clear errors for taken ports and missing packages, exact teardown."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import REPO, Lab, wait_for

LABCTL = str(REPO / "lab" / "labctl.py")


def _labctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, LABCTL, *args], capture_output=True, text=True, check=False, env=env,
                          timeout=120)


def test_taken_port_is_named_and_nothing_is_started(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        # The kernel picks a free port for the squatter (a fixed one may be held by a client connection).
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        base = squatter.getsockname()[1] - 90
        env = {**os.environ, "SELFHEAL_LAB_DIR": str(tmp_path / "lab"), "SELFHEAL_LAB_PORT_BASE": str(base)}
        proc = _labctl("up", env=env)
    assert proc.returncode == 1
    assert f"port {base + 90} (needed by prometheus) is already in use" in proc.stderr
    assert "SELFHEAL_LAB_PORT_BASE" in proc.stderr
    assert not (tmp_path / "lab" / "lab.json").exists(), "preflight fails before anything is created"


def test_missing_packages_are_named_with_the_install_command(tmp_path: Path) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "SELFHEAL_LAB_DIR": str(tmp_path / "lab"), "PATH": str(empty_bin),
           "SELFHEAL_LAB_PG_BIN": str(tmp_path / "no-postgres")}
    proc = _labctl("up", env=env)
    assert proc.returncode == 1
    assert "missing packages:" in proc.stderr
    for package in ("prometheus", "prometheus-alertmanager", "openssh-client", "postgresql"):
        assert package in proc.stderr
    assert "make deps" in proc.stderr and "apt-get install -y" in proc.stderr


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    env = {**os.environ, "SELFHEAL_LAB_DIR": str(tmp_path / "lab"), "SELFHEAL_LAB_SUBNET": "10.300.1"}
    proc = _labctl("up", env=env)
    assert proc.returncode == 1 and "SELFHEAL_LAB_SUBNET" in proc.stderr
    fleet = _labctl("up", env={**env, "SELFHEAL_LAB_SUBNET": "10.213.77", "SELFHEAL_LAB_FLEET": "100"})
    assert fleet.returncode == 1 and "SELFHEAL_LAB_FLEET must be between 0 and 99" in fleet.stderr
    assert not (tmp_path / "lab" / "lab.json").exists(), "refused before anything is created"


def test_status_reports_every_part(lab: Lab) -> None:
    proc = lab.labctl("status")
    assert proc.returncode == 0, proc.stdout
    for host in lab.cfg.hosts:
        for part in ("sshd", *host.services):
            assert f"{host.name} {part}" in proc.stdout
    for part in ("prometheus", "alertmanager", "notify sink"):
        assert part in proc.stdout
    assert "DOWN" not in proc.stdout


def test_status_reports_sshd_from_its_process_not_from_whatever_answers(lab: Lab) -> None:
    """A port that answers is not the host's sshd (with the network gone, a gateway may answer)."""
    h1 = lab.cfg.hosts[0]
    sshd = int(lab.cfg.path("run", f"{h1.name}-sshd.pid").read_text().split()[0])
    # SO_REUSEADDR, as sshd itself: the SSH sessions earlier tests left open (ControlPersist) hold h1:22
    listen = (f"import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              f"s.bind(({h1.address!r}, 22)); s.listen(); "
              "print('listening', flush=True); time.sleep(300)")
    impostor = None
    try:
        os.kill(sshd, signal.SIGTERM)
        wait_for("h1's sshd to end", lambda: not Path(f"/proc/{sshd}").exists()
                 or Path(f"/proc/{sshd}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 15)
        impostor = subprocess.Popen(["ip", "netns", "exec", h1.netns, sys.executable, "-c", listen],
                                    stdout=subprocess.PIPE, text=True)
        assert impostor.stdout is not None and impostor.stdout.readline() == "listening\n"
        socket.create_connection((h1.address, 22), timeout=5).close()  # something answers on h1:22
        proc = lab.labctl("status")
        assert proc.returncode == 1, proc.stdout
        assert next(line for line in proc.stdout.splitlines() if line.startswith(f"{h1.name} sshd")).endswith("DOWN")
        assert next(line for line in proc.stdout.splitlines() if line.startswith(f"{h1.name} demo")).endswith("up")
    finally:
        if impostor is not None:
            impostor.kill()
            impostor.wait()
        up = lab.labctl("up")
        assert up.returncode == 0, up.stdout + up.stderr
    assert lab.labctl("status").returncode == 0


def test_hosts_are_reached_over_ssh_each_in_its_own_namespace(lab: Lab) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(lab.inventory_path), "demo:fleet",
                           "-m", "ansible.builtin.command", "-a", "ip -4 -o addr show eth0"],
                          capture_output=True, text=True, check=False, env=lab.env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.cfg.hosts:
        assert f"{host.name} | CHANGED" in proc.stdout
        assert f"inet {host.address}/24" in proc.stdout


def test_remediation_runs_match_every_play_and_a_real_mismatch_still_warns(lab: Lab) -> None:
    """The lab inventory declares the playbook's run-time groups: a run in auto mode, which leaves the
    proposal group empty, logs no host pattern warning; a chaos run without a target still gets one."""
    run = lab.playbook("selfheal.core.remediate_service_down", "-e", "selfheal_target=h3")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PLAY [Propose" in run.stdout and "skipping: no hosts matched" in run.stdout, "the proposal play is skipped"
    assert "Could not match supplied host pattern" not in run.stdout + run.stderr
    chaos = lab.playbook("selfheal.core.chaos.service_crash")
    assert "Could not match supplied host pattern, ignoring: selfheal_no_target_given" in chaos.stdout + chaos.stderr


def test_chaos_refuses_a_host_outside_the_lab_inventory_and_changes_nothing(lab: Lab) -> None:
    """An inventory without the lab's mark (here: the mark overridden) gets no fault, whatever its
    service manager: the lab's h2 runs a real one and is still a chaos target."""
    before = lab.pid("h1")
    refused = lab.playbook("selfheal.core.chaos.service_crash", "-e", "selfheal_target=h1", "-e", "selfheal_lab=false")
    assert refused.returncode != 0 and "of the lab's inventory" in refused.stdout, refused.stdout[-2000:]
    assert before is not None and lab.pid("h1") == before, "the demo on h1 was not touched"


def _page(lab: Lab, summary: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{lab.cfg.ports['notify']}/escalations", method="POST",
                                     data=json.dumps({"summary": summary}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


def test_a_fresh_notify_sink_and_a_fresh_daemon_start_new_files_and_keep_the_last(lab: Lab) -> None:
    """Pages and daemon log lines of an earlier run move to <name>.1: the live files hold only new ones."""
    pages, kept = lab.cfg.path("notifications.jsonl"), lab.cfg.path("notifications.jsonl.1")
    _page(lab, "page of an earlier run")
    # A sink that keeps running keeps its file: tests that count pages before and after still see theirs.
    assert lab.labctl("up").returncode == 0
    assert "page of an earlier run" in pages.read_text()
    sink = int(lab.cfg.path("run", "notify.pid").read_text().split()[0])
    os.kill(sink, signal.SIGTERM)
    wait_for("the notify sink to end", lambda: not Path(f"/proc/{sink}").exists()
             or Path(f"/proc/{sink}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 15)
    up = lab.labctl("up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert "page of an earlier run" in kept.read_text()
    assert not pages.exists() or "page of an earlier run" not in pages.read_text()
    _page(lab, "page of this run")
    assert [json.loads(line)["body"]["summary"] for line in pages.read_text().splitlines()] == ["page of this run"]

    log, old_log = lab.cfg.path("log", "rulebook.log"), lab.cfg.path("log", "rulebook.log.1")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write("line of an earlier daemon\n")
    started = lab.labctl("daemon", "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "line of an earlier daemon" in old_log.read_text()
        assert "line of an earlier daemon" not in log.read_text()
        assert log.stat().st_size > 0, "the new daemon writes to the live log"
    finally:
        lab.labctl("daemon", "stop")  # the integration tests run with no daemon


def test_postgres_and_nginx_answer_in_their_hosts(lab: Lab) -> None:
    db = next(h for h in lab.cfg.hosts if "db" in h.groups)
    web = next(h for h in lab.cfg.hosts if "web" in h.groups)
    password = lab.cfg.path("postgres_password").read_text().strip()
    psql = subprocess.run(["psql", "-h", db.address, "-U", "postgres", "-tAc", "select 40 + 2"], capture_output=True,
                          text=True, check=False, env={**lab.env, "PGPASSWORD": password}, timeout=30)
    assert psql.stdout.strip() == "42", psql.stderr
    # the load balancer of the fleet (its own demo service without one)
    fleet = {h.name for h in lab.cfg.hosts if "fleet" in h.groups} or {web.name}
    served = set()
    for _request in range(2 * len(fleet)):
        with urllib.request.urlopen(f"http://{web.address}/", timeout=5) as resp:
            served.add(json.loads(resp.read())["host"])
    assert served == fleet


def test_down_ends_exactly_what_up_started_and_up_is_idempotent(lab: Lab) -> None:
    pids = {}
    for pidfile in lab.cfg.path("run").glob("*.pid"):
        pid = int(pidfile.read_text().split()[0])
        if Path(f"/proc/{pid}").exists():
            pids[pidfile.stem] = pid
    assert {"prometheus", "alertmanager", "notify", "h1-sshd", "h1-demo"} <= set(pids)
    # A process that is not the lab's, even with a lab-like command line, survives.
    marker = f"127.0.0.1:{lab.cfg.ports['prometheus']}"  # what the lab checks prometheus's command line for
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
    daemon_was_up = False
    try:
        daemon_was_up = lab.labctl("daemon", "status").returncode == 0
        down = lab.labctl("down")
        assert down.returncode == 0, down.stderr
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", name
        assert decoy.poll() is None, "down killed a process the lab did not start"
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert not any(h.netns in netns for h in lab.cfg.hosts)
        assert lab.labctl("status").returncode == 1
        assert lab.labctl("down").returncode == 0, "down twice is fine"
    finally:
        decoy.kill()
        decoy.wait()
        up = lab.labctl("up")
        assert up.returncode == 0, up.stdout + up.stderr
        again = lab.labctl("up")
        assert again.returncode == 0, "up twice is fine"
        if daemon_was_up:
            assert lab.labctl("daemon", "start").returncode == 0
    assert lab.labctl("status").returncode == 0


def _lab_processes(lab: Lab, namespaces: dict[tuple[int, int], str]) -> dict[int, str]:
    """Every live process that is the lab's by its command line, its network namespace, or an ssh
    connection to a host's sshd (read here independently of labctl's own bookkeeping)."""
    mine = {os.getpid(), os.getppid()}
    sshds = {f"{int.from_bytes(socket.inet_aton(h.address), sys.byteorder):08X}:0016" for h in lab.cfg.hosts}
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in mine:
            continue
        proc = Path("/proc", entry)
        try:
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited; only its parent's wait() is missing
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ns = os.stat(proc / "ns" / "net")
            sockets = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
            tcp = (proc / "net" / "tcp").read_text().splitlines()[1:]
        except OSError:
            continue  # gone meanwhile
        if (ns.st_dev, ns.st_ino) in namespaces:
            found[int(entry)] = f"in {namespaces[(ns.st_dev, ns.st_ino)]}'s namespace: {cmdline}"
        elif lab.cfg.lab_dir in cmdline:
            found[int(entry)] = f"lab command line: {cmdline}"
        elif any(cols[2] in sshds and f"socket:[{cols[9]}]" in sockets for cols in map(str.split, tcp)):
            found[int(entry)] = f"ssh connection to a host: {cmdline}"
    return found


def test_down_ends_the_ssh_connections_to_the_hosts_on_both_ends(lab: Lab) -> None:
    """Ansible's persistent connections (ControlPersist) outlive their playbook: `down` ends the
    sshd process serving each one inside the host, the ssh master on this machine, and whatever a
    session left running, so no process of the lab survives it."""
    h1, h2 = lab.cfg.hosts[0], lab.cfg.hosts[1]
    ping = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(lab.inventory_path),
                           f"{h1.name},{h2.name}", "-m", "ansible.builtin.ping"],
                          capture_output=True, text=True, check=False, env=lab.env, timeout=120)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    key, common = lab.vars["ansible_ssh_private_key_file"], lab.vars["ansible_ssh_common_args"].split()
    session = subprocess.Popen(["ssh", "-i", key, *common, "-o", "ControlMaster=no", "-o", "BatchMode=yes",
                                f"root@{h2.address}", "sleep 600"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    namespaces = {}
    for host in lab.cfg.hosts:
        st = os.stat(f"/run/netns/{host.netns}")
        namespaces[(st.st_dev, st.st_ino)] = host.name

    def session_started() -> dict[int, str] | None:
        found = _lab_processes(lab, namespaces)
        return found if any(w.startswith("in h2's namespace") and "sleep 600" in w for w in found.values()) else None

    daemon_was_up = lab.labctl("daemon", "status").returncode == 0
    try:
        before = wait_for("the ssh session's sleep in h2", session_started, 30)
        assert any("[mux]" in what and "ssh connection to a host" in what for what in before.values()), before
        per_connection = [what for what in before.values() if "h1's namespace" in what and "sshd: root@" in what]
        assert per_connection, f"no sshd process serves the persistent connection to h1: {before}"
        down = lab.labctl("down")
        assert down.returncode == 0, down.stderr
        left = _lab_processes(lab, namespaces)
        assert left == {}, f"lab down left processes behind: {left}"
        session.wait(timeout=10)  # its connection is gone: the client has ended
    finally:
        session.kill()
        session.wait()
        up = lab.labctl("up")
        assert up.returncode == 0, up.stdout + up.stderr
        if daemon_was_up:
            assert lab.labctl("daemon", "start").returncode == 0
    assert lab.labctl("status").returncode == 0
