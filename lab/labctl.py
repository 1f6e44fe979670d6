"""The selfheal.core lab: a small real environment on one machine.

    labctl.py up        bring the lab up (idempotent: running parts are kept)
    labctl.py status    show every part and whether it answers; exit 1 if any is down
    labctl.py down      end exactly the processes that `up` started, remove the network
    labctl.py daemon start|stop|status
                     the ansible-rulebook daemon running rulebooks/self_healing.yml
    labctl.py svc start|stop|restart|status|kill SERVICE
                     the lab hosts' service manager (run on a host over SSH;
                     the host is named by SELFHEAL_LAB_HOST, set by its sshd)
    labctl.py clean     down, then delete the lab directory

Parts: N hosts (network namespaces shlab-h1.. with their own address and sshd,
each running the demo web service; nginx on the `web` host, PostgreSQL on the
`db` host), Prometheus and Alertmanager on loopback, and a notification sink
that stands in for a pager. Settings come from the environment:

    SELFHEAL_LAB_DIR        state directory (default: <repo>/.lab)
    SELFHEAL_LAB_PORT_BASE  loopback ports are BASE+80 (rulebook), +81
                            (rulebook approvals), +90 (Prometheus), +93
                            (Alertmanager), +95 (notify sink);
                            default 29000: below the kernel's ephemeral
                            range (32768-60999), where an outgoing
                            connection could hold one of them
    SELFHEAL_LAB_SUBNET     the hosts' /24, default 10.213.77 (hosts .11 ...)
    SELFHEAL_LAB_HOSTS      number of hosts, default 4
    SELFHEAL_LAB_FLEET      number of fleet hosts w01.. (group `fleet`, the demo service
                            only, .101 up) behind the `web` host's nginx as its load
                            balancer; default 10 (0: nginx proxies to its own demo service)
    SELFHEAL_LAB_DISK_MB    size of each host's own filesystem (a tmpfs), default 64

Standard library only: it runs before the project's virtualenv exists.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / "lab" / "services"
DEMO_PORT = 8080
NGINX_PORT = 80
PG_PORT = 5432
PG_EXPORTER_PORT = 9187
NODE_EXPORTER_PORT = 9100
# start order: dependencies first
# The lab's PostgreSQL: few connections (conn_pool_exhausted's chaos fills them), and a connection idle
# for this many seconds counts as leaked (production: the catalog's 300).
NETNS_PREFIX = "shlab-"
PG_MAX_CONNECTIONS = 30
# Hosts whose demo service the service role manages as a real one: ansible.builtin.service and
# service_facts through Debian's `service` and an LSB init script, /etc/init.d/demo (written by `up`,
# removed by `down`), instead of the lab's command-based manager.
SYSV_HOSTS = ("h2",)
INIT_SCRIPT = Path("/etc/init.d/demo")
INIT_MARKER = "# selfheal-lab: written by lab/labctl.py up, removed by down"
PG_LAB_IDLE_AGE = 3
SERVICE_ORDER = ("node_exporter", "postgres", "pg_exporter", "demo", "nginx")
PORTS = {"demo": DEMO_PORT, "nginx": NGINX_PORT, "postgres": PG_PORT, "pg_exporter": PG_EXPORTER_PORT,
         "node_exporter": NODE_EXPORTER_PORT}
# Each host's own small filesystem (a tmpfs at <lab>/hosts/<host>/disk, MiB): disk_full fills it, never
# the machine's disk. The directories the lab's inventory points the disk role at, and one it protects.
DISK_DIRS = ("log", "tmp", "data")
SSH_PORT = 22


class LabError(Exception):
    """A problem the person running the lab has to fix; the message says how."""


@dataclass
class Host:
    name: str
    address: str
    groups: list[str]
    services: list[str]

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.name}"

    @property
    def veth(self) -> str:
        return f"shlv-{self.name}"


@dataclass
class Config:
    lab_dir: str
    port_base: int
    subnet: str
    hosts: list[Host] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return "shlab0"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    @property
    def ports(self) -> dict[str, int]:
        return {
            "rulebook": self.port_base + 80,
            "approvals": self.port_base + 81,
            "prometheus": self.port_base + 90,
            "alertmanager": self.port_base + 93,
            "notify": self.port_base + 95,
        }

    def path(self, *parts: str) -> Path:
        return Path(self.lab_dir, *parts)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"no lab host named {name!r}; hosts are {[h.name for h in self.hosts]}")


def load_config(fresh: bool = False) -> Config:
    """The saved settings of the lab (so every command agrees), or new ones from the environment."""
    lab_dir = os.environ.get("SELFHEAL_LAB_DIR") or str(REPO / ".lab")
    saved = Path(lab_dir, "lab.json")
    if saved.exists() and not fresh:
        data = json.loads(saved.read_text())
        data["hosts"] = [Host(**h) for h in data["hosts"]]
        return Config(**data)
    try:
        port_base = int(os.environ.get("SELFHEAL_LAB_PORT_BASE", "29000"))
        count = int(os.environ.get("SELFHEAL_LAB_HOSTS", "4"))
        fleet = int(os.environ.get("SELFHEAL_LAB_FLEET", "10"))
    except ValueError as exc:
        raise LabError(f"SELFHEAL_LAB_PORT_BASE, SELFHEAL_LAB_HOSTS and SELFHEAL_LAB_FLEET must be integers: {exc}"
                       ) from exc
    if not 1024 <= port_base <= 65000:
        raise LabError("SELFHEAL_LAB_PORT_BASE must be between 1024 and 65000")
    if not 2 <= count <= 50:
        raise LabError("SELFHEAL_LAB_HOSTS must be between 2 and 50")
    if not 0 <= fleet <= 99:
        raise LabError("SELFHEAL_LAB_FLEET must be between 0 and 99")
    subnet = os.environ.get("SELFHEAL_LAB_SUBNET", "10.213.77")
    octets = subnet.split(".")
    if len(octets) != 3 or not all(o.isdigit() and 0 <= int(o) <= 255 for o in octets):
        raise LabError(f"SELFHEAL_LAB_SUBNET must be the first three octets of a /24, got {subnet!r}")
    hosts = []
    for i in range(1, count + 1):
        groups, services = ["demo"], ["node_exporter", "demo"]
        if i == count - 1:
            groups.append("web")
            services.append("nginx")
        if i == count:
            groups.append("db")
            services.extend(["postgres", "pg_exporter"])
        hosts.append(Host(f"h{i}", f"{subnet}.{10 + i}", groups, services))
    hosts.extend(Host(f"w{i:02d}", f"{subnet}.{100 + i}", ["fleet"], ["demo"]) for i in range(1, fleet + 1))
    return Config(lab_dir, port_base, subnet, hosts)


def _say(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = _which(cmd[0])
    if binary is None:
        raise LabError(f"{cmd[0]} is not installed (Debian package {_REQUIRED.get(cmd[0], cmd[0])}): run make deps")
    proc = subprocess.run([binary, *cmd[1:]], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()}")
    return proc


# --------------------------------------------------------------------------- preflight

_REQUIRED = {
    # binary: Debian package that provides it
    "ip": "iproute2",
    "setpriv": "util-linux",
    "ssh-keygen": "openssh-client",
    "ssh-keyscan": "openssh-client",
    "sshd": "openssh-server",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-postgres-exporter": "prometheus-postgres-exporter",
    "prometheus-node-exporter": "prometheus-node-exporter",
    "mount": "mount",
    "nginx": "nginx-light",
    "python3": "python3",
}


def _which(binary: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


def _pg_bin() -> Path | None:
    override = os.environ.get("SELFHEAL_LAB_PG_BIN")
    if override:
        return Path(override) if Path(override, "postgres").exists() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


def preflight(cfg: Config) -> None:
    """Fail with one clear message that names every missing package and taken port."""
    problems = []
    missing = sorted({pkg for binary, pkg in _REQUIRED.items() if not _which(binary)})
    if _pg_bin() is None:
        missing.append("postgresql")
    if missing:
        problems.append(
            "missing packages: " + ", ".join(missing)
            + f"\n  install them with: make deps  (or: apt-get install -y {' '.join(missing)})"
        )
    if os.geteuid() != 0:
        problems.append("the lab creates network namespaces and must run as root")
    for name, port in cfg.ports.items():
        if name in ("rulebook", "approvals"):
            continue  # the daemon's ports are checked when the daemon starts
        if _alive(cfg, name) is None and _port_busy("127.0.0.1", port):
            problems.append(
                f"port {port} (needed by {name}) is already in use by another process: "
                f"stop it, or pick other ports with SELFHEAL_LAB_PORT_BASE=<n> (now {cfg.port_base})"
            )
    if not Path(cfg.lab_dir, "lab.json").exists() and _which("ip"):
        clash = _run(["ip", "-4", "route", "show", "to", "match", f"{cfg.subnet}.0/24"], check=False)
        for line in clash.stdout.splitlines():
            if not line.startswith("default") and cfg.bridge not in line:
                problems.append(
                    f"subnet {cfg.subnet}.0/24 is already routed here ({line.strip()}); "
                    "choose another with SELFHEAL_LAB_SUBNET=a.b.c"
                )
    if problems:
        raise LabError("cannot bring the lab up:\n- " + "\n- ".join(problems))


def _port_busy(address: str, port: int, patience: float = 10.0) -> bool:
    """Taken, and still taken after `patience` seconds (a process that is exiting frees it soon)."""
    deadline = time.monotonic() + patience
    while _port_taken(address, port):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.2)
    return False


def _port_taken(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


# --------------------------------------------------------------------------- processes

def _pidfile(cfg: Config, name: str) -> Path:
    return cfg.path("run", f"{name}.pid")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(cfg: Config, name: str) -> int | None:
    """The pid of a process this lab started under `name`, if it still runs.

    A pid is trusted only while its command line still carries the marker
    recorded at start, so a reused pid is never signalled.
    """
    pidfile = _pidfile(cfg, name)
    try:
        pid_text, marker = pidfile.read_text().split("\n", 1)
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    cmdline = _cmdline(pid)
    state = ""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if state == "Z" or not cmdline or marker.strip() not in cmdline:
        return None
    return pid


def _spawn(cfg: Config, name: str, cmd: list[str], netns: str | None = None,
           user: str | None = None, env: dict[str, str] | None = None, marker: str | None = None) -> int:
    """Start `cmd` detached from this process, log to log/<name>.log, record its pid."""
    program = os.path.basename(cmd[0])
    if user:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    cfg.path("run").mkdir(parents=True, exist_ok=True)
    cfg.path("log").mkdir(parents=True, exist_ok=True)
    log = open(cfg.path("log", f"{name}.log"), "ab")  # noqa: SIM115 (handed to the child)
    try:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True, env={**os.environ, **(env or {})},
        )
    finally:
        log.close()
    marker = marker or cmd[-1]
    _pidfile(cfg, name).write_text(f"{proc.pid}\n{marker}\n")
    # Until the child has exec'd the program itself (through ip netns exec and
    # setpriv), /proc shows another command line, or none for an instant.
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        line = _cmdline(proc.pid)
        if marker in line and os.path.basename(line.split(" ", 1)[0]).startswith(program):
            break
        time.sleep(0.01)
    return proc.pid


def _stop(cfg: Config, name: str, sig: int = signal.SIGTERM, grace: float = 10.0) -> bool:
    pid = _alive(cfg, name)
    if pid is None:
        _pidfile(cfg, name).unlink(missing_ok=True)
        return False
    os.kill(pid, sig)
    deadline = time.monotonic() + grace
    # Gone means gone from the process table (or a zombie), not only its command line:
    # an exiting process keeps its ports until it is gone.
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.05)
    if _running(pid):
        os.kill(pid, signal.SIGKILL)
        while _running(pid):
            time.sleep(0.05)
    _pidfile(cfg, name).unlink(missing_ok=True)
    return True


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (only used for a pid this lab verified as its own)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# Processes the lab did not record in a pid file but that are the lab's all the same: what runs
# inside a host's namespace (the sshd process serving each connection, among them Ansible's
# persistent ones, and whatever those sessions started), what the daemon started, and the ssh
# clients on this machine connected to a host (Ansible's ControlPersist masters). Each is held by
# a pidfd from before it is checked until it is signalled, so a pid reused meanwhile is never hit.

def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _ns_id(path: str) -> tuple[int, int] | None:
    """The identity of a network namespace: of /run/netns/NAME, or of a process's /proc/PID/ns/net."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _netns_ids(cfg: Config) -> dict[tuple[int, int], str]:
    """The lab hosts' network namespaces that exist, by identity."""
    ids = {}
    for host in cfg.hosts:
        ns = _ns_id(f"/run/netns/{host.netns}")
        if ns is not None:
            ids[ns] = host.name
    return ids


def _in_netns(ids: dict[tuple[int, int], str]) -> dict[int, str]:
    """Every process whose network namespace is one of `ids` (a zombie has none), with what it is."""
    found = {}
    for pid in _pids():
        host = ids.get(_ns_id(f"/proc/{pid}/ns/net") or (0, 0))
        if host is not None and pid != os.getpid():
            found[pid] = f"{host}:{_comm(pid)}[{pid}]"
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    parents = {}
    for pid in _pids():
        try:
            parents[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


def _descends(pid: int, ancestor: int, parents: dict[int, int] | None = None) -> bool:
    parents = _parents() if parents is None else parents
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        pid = parents.get(pid, 0)
        if pid == ancestor:
            return True
    return False


def _descendants(ancestor: int) -> dict[int, str]:
    parents = _parents()
    return {pid: f"{_comm(pid)}[{pid}]" for pid in parents if _descends(pid, ancestor, parents)}


def _tcp_sockets(pid: int) -> list[tuple[tuple[str, int], tuple[str, int], str]]:
    """(local end, remote end, state) of the IPv4 TCP sockets `pid` holds, read in its own namespace."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return []

    def end(text: str) -> tuple[str, int]:
        address, port = text.split(":")
        # the kernel prints the address as a number in host byte order
        return socket.inet_ntoa(struct.pack("=I", int(address, 16))), int(port, 16)

    return [(end(cols[1]), end(cols[2]), cols[3]) for cols in map(str.split, lines)
            if len(cols) > 9 and cols[9] in inodes]


def _tcp_peers(pid: int) -> set[tuple[str, int]]:
    return {remote for _local, remote, _state in _tcp_sockets(pid)}


def _listens(pid: int, address: str, port: int) -> bool:
    """Whether `pid` itself holds a socket listening on address:port (0A is TCP_LISTEN)."""
    return any(local == (address, port) and state == "0A" for local, _remote, state in _tcp_sockets(pid))


def _ssh_clients(cfg: Config) -> dict[int, str]:
    """ssh clients on this machine connected to a lab host's sshd: Ansible's ControlPersist masters
    (`ssh: <control path> [mux]`, whatever the control path) and any other ssh session to a host."""
    sshds = {(h.address, SSH_PORT): h.name for h in cfg.hosts}
    found = {}
    for pid in _pids():
        if _comm(pid) == "ssh":
            hosts = sorted({sshds[peer] for peer in _tcp_peers(pid) if peer in sshds})
            if hosts:
                found[pid] = f"ssh to {','.join(hosts)}[{pid}]"
    return found


def _hold(candidates: dict[int, str], still_ours: Callable[[int], bool]) -> dict[int, str]:
    """pidfds of those `candidates` that, checked after their pidfd is open, are still the lab's."""
    held = {}
    for pid, what in candidates.items():
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # gone already
            continue
        # /proc/PID is the pidfd's process for as long as that process runs: if it ended and the pid
        # was reused before the check, signalling the pidfd fails instead of hitting the newcomer.
        if still_ours(pid):
            held[fd] = what
        else:
            os.close(fd)
    return held


def _end(held: dict[int, str], grace: float = 5.0) -> list[str]:
    """SIGTERM every held process, SIGKILL what still runs after `grace`; close the pidfds.

    Returns what was still running when signalled.
    """
    ended = []
    pending = set()
    exited = select.poll()  # a pidfd turns readable when its process exits
    try:
        for fd, what in held.items():
            if _signal_pidfd(fd, signal.SIGTERM):
                ended.append(what)
                pending.add(fd)
                exited.register(fd, select.POLLIN)
        for patience, then in ((grace, signal.SIGKILL), (5.0, None)):
            deadline = time.monotonic() + patience
            while pending and time.monotonic() < deadline:
                for fd, _event in exited.poll(100):
                    pending.discard(fd)
                    exited.unregister(fd)
            if then is not None:
                for fd in pending:
                    _signal_pidfd(fd, then)
    finally:
        for fd in held:
            os.close(fd)
    return ended


def _signal_pidfd(fd: int, sig: int) -> bool:
    try:
        signal.pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        return False
    return True


def _wait(what: str, check: object, timeout: float, log: Path | None = None,
          process: tuple[Config, str] | None = None) -> None:
    """Wait until check() is true; fail early if the process it waits for has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if process is not None and _alive(*process) is None:
            tail = ""
            if log and log.exists():
                tail = "\n  " + "\n  ".join(log.read_text(errors="replace").splitlines()[-8:])
            raise LabError(f"{what} exited while starting; see {log}{tail}")
        time.sleep(0.1)
    hint = f"; see {log}" if log else ""
    raise LabError(f"{what} did not come up within {timeout:.0f}s{hint}")


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (lab URLs only)
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tcp_ok(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- network

def _netns_exists(name: str) -> bool:
    return name in _run(["ip", "netns", "list"]).stdout.split()


def network_up(cfg: Config) -> None:
    if _run(["ip", "link", "show", cfg.bridge], check=False).returncode != 0:
        _run(["ip", "link", "add", cfg.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{cfg.gateway}/24", "dev", cfg.bridge])
    _run(["ip", "link", "set", cfg.bridge, "up"])
    for host in cfg.hosts:
        if not _netns_exists(host.netns):
            _run(["ip", "netns", "add", host.netns])
        if _run(["ip", "link", "show", host.veth], check=False).returncode != 0:
            _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns])
            _run(["ip", "netns", "exec", host.netns, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0"])
        _run(["ip", "link", "set", host.veth, "master", cfg.bridge, "up"])
        _run(["ip", "netns", "exec", host.netns, "ip", "link", "set", "lo", "up"])
        _run(["ip", "netns", "exec", host.netns, "ip", "link", "set", "eth0", "up"])
        _run(["ip", "netns", "exec", host.netns, "ip", "route", "replace", "default", "via", cfg.gateway])


def network_down(cfg: Config) -> None:
    for host in cfg.hosts:
        _run(["ip", "link", "del", host.veth], check=False)
        if _netns_exists(host.netns):
            _run(["ip", "netns", "del", host.netns], check=False)
    _run(["ip", "link", "del", cfg.bridge], check=False)


# --------------------------------------------------------------------------- ssh

def ssh_up(cfg: Config) -> None:
    keydir = cfg.path("ssh")
    keydir.mkdir(parents=True, exist_ok=True)
    client_key = keydir / "id_ed25519"
    if not client_key.exists():
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "selfheal-lab", "-f", str(client_key)])
    (keydir / "authorized_keys").write_text((keydir / "id_ed25519.pub").read_text())
    os.chmod(keydir / "authorized_keys", 0o600)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sshd = _which("sshd") or "/usr/sbin/sshd"
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server") if Path(p).exists()),
                "internal-sftp")
    known = []
    for host in cfg.hosts:
        hdir = cfg.path("hosts", host.name)
        hdir.mkdir(parents=True, exist_ok=True)
        hostkey = hdir / "ssh_host_ed25519_key"
        if not hostkey.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(hostkey)])
        known.append(f"{host.address} {' '.join(Path(str(hostkey) + '.pub').read_text().split()[:2])}")
        conf = hdir / "sshd_config"
        conf.write_text(
            "\n".join([
                f"ListenAddress {host.address}:{SSH_PORT}",
                f"HostKey {hostkey}",
                f"AuthorizedKeysFile {keydir / 'authorized_keys'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "MaxStartups 100:30:200",
                "MaxSessions 50",
                f"Subsystem sftp {sftp}",
                f"SetEnv SELFHEAL_LAB_HOST={host.name} SELFHEAL_LAB_DIR={cfg.lab_dir}",
                "",
            ])
        )
        name = f"{host.name}-sshd"
        if _alive(cfg, name) is None:
            _spawn(cfg, name, [sshd, "-D", "-e", "-f", str(conf)], netns=host.netns, marker=str(conf))
    (keydir / "known_hosts").write_text("\n".join(known) + "\n")
    for host in cfg.hosts:
        _wait(f"sshd on {host.name} ({host.address}:{SSH_PORT})", lambda h=host: _sshd_up(cfg, h),
              15, cfg.path("log", f"{host.name}-sshd.log"), process=(cfg, f"{host.name}-sshd"))


def _sshd_up(cfg: Config, host: Host) -> bool:
    """The host's sshd runs (its pid file, checked against its command line) and listens itself.

    Not a TCP connect: with the lab's network gone, a gateway may answer for the host's address.
    """
    pid = _alive(cfg, f"{host.name}-sshd")
    return pid is not None and _listens(pid, host.address, SSH_PORT)


# --------------------------------------------------------------------------- host services

def _service_spec(cfg: Config, host: Host, service: str) -> dict[str, object]:
    hdir = cfg.path("hosts", host.name)
    if service == "demo":
        db = next((h for h in cfg.hosts if "postgres" in h.services), None)
        dependency = ["--dependency", f"{db.address}:{PG_PORT}"] if db is not None else []
        conf = hdir / "demo.conf"
        if not conf.exists():  # its first configuration; chaos and remediations change it later
            conf.write_text(json.dumps({"greeting": f"hello from {host.name}", "workers": 4}, indent=2) + "\n")
        return {
            "cmd": [sys.executable, str(SERVICES / "demo_service.py"), "--host-name", host.name,
                    "--listen", f"{host.address}:{DEMO_PORT}", *dependency,
                    "--relapse-file", str(hdir / "demo.relapse"), "--config", str(conf)],
            "ready": lambda: _http_ok(f"http://{host.address}:{DEMO_PORT}/"),
            "marker": f"{host.address}:{DEMO_PORT}",
        }
    if service == "nginx":
        conf = hdir / "nginx.conf"
        conf.write_text(_nginx_conf(cfg, hdir, host))
        return {
            "cmd": [_which("nginx") or "nginx", "-c", str(conf), "-g", "daemon off;"],
            "ready": lambda: _tcp_ok(host.address, NGINX_PORT),
            "marker": str(conf),
        }
    if service == "postgres":
        pg_bin = _pg_bin()
        if pg_bin is None:
            raise LabError("PostgreSQL is not installed: run make deps (apt-get install -y postgresql)")
        datadir = hdir / "pgdata"
        _pg_init(cfg, pg_bin, datadir)
        sockdir = hdir / "pgsock"
        sockdir.mkdir(exist_ok=True)
        shutil.chown(sockdir, "postgres", "postgres")
        return {
            "cmd": [str(pg_bin / "postgres"), "-D", str(datadir), "-p", str(PG_PORT),
                    "-c", f"listen_addresses={host.address}", "-c", f"unix_socket_directories={sockdir}",
                    # small, so the chaos playbook exhausts it with a few dozen connections
                    "-c", f"max_connections={PG_MAX_CONNECTIONS}"],
            "user": "postgres",
            "ready": lambda: _tcp_ok(host.address, PG_PORT),
            "marker": str(datadir),
        }
    if service == "pg_exporter":
        password = cfg.path("postgres_password").read_text().strip()
        return {
            "cmd": [_which("prometheus-postgres-exporter") or "prometheus-postgres-exporter",
                    f"--web.listen-address={host.address}:{PG_EXPORTER_PORT}"],
            "env": {"DATA_SOURCE_NAME": f"postgresql://postgres:{password}@{host.address}:{PG_PORT}/postgres"
                                        "?sslmode=disable"},
            "user": "postgres",
            "ready": lambda: _http_ok(f"http://{host.address}:{PG_EXPORTER_PORT}/metrics", timeout=3),
            "marker": f"{host.address}:{PG_EXPORTER_PORT}",
        }
    if service == "node_exporter":
        return {
            # the filesystem collector alone: Prometheus keeps the host's own disk (see _prometheus_config)
            "cmd": [_which("prometheus-node-exporter") or "prometheus-node-exporter",
                    f"--web.listen-address={host.address}:{NODE_EXPORTER_PORT}", "--collector.disable-defaults",
                    "--collector.filesystem", "--collector.filesystem.mount-points-exclude=^/(dev|proc|run|sys)($|/)"],
            "user": "prometheus",  # the Debian package's own user
            "ready": lambda: _http_ok(f"http://{host.address}:{NODE_EXPORTER_PORT}/metrics", timeout=3),
            "marker": f"{host.address}:{NODE_EXPORTER_PORT}",
        }
    raise LabError(f"unknown service {service!r} on {host.name}; it runs {host.services}")


def init_script_up(cfg: Config) -> None:
    """/etc/init.d/demo: an LSB init script that runs the lab's service manager for the demo service of the
    lab host whose network namespace it runs in (the `service` command gives it no environment)."""
    if INIT_SCRIPT.exists() and INIT_MARKER not in INIT_SCRIPT.read_text(errors="replace"):
        raise LabError(f"{INIT_SCRIPT} exists and is not the lab's: the lab will not overwrite it")
    prefix = NETNS_PREFIX
    INIT_SCRIPT.write_text(f"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          demo
# Required-Start:    $network
# Required-Stop:     $network
# Default-Start:
# Default-Stop:
# Short-Description: the selfheal lab's demo service, on the lab host whose network namespace runs it
### END INIT INFO
{INIT_MARKER}
ns=$(ip netns identify $$ 2>/dev/null)
case "$ns" in
  {prefix}*) host=${{ns#{prefix}}} ;;
  *) echo "demo: runs only on a selfheal lab host (in its network namespace)" >&2; exit 4 ;;
esac
SELFHEAL_LAB_HOST=$host SELFHEAL_LAB_DIR={shlex.quote(cfg.lab_dir)} \
  exec {shlex.quote(sys.executable)} {shlex.quote(str(REPO / "lab" / "labctl.py"))} svc "$1" demo
""")
    INIT_SCRIPT.chmod(0o755)


def init_script_down() -> bool:
    if INIT_SCRIPT.exists() and INIT_MARKER in INIT_SCRIPT.read_text(errors="replace"):
        INIT_SCRIPT.unlink()
        return True
    return False


def disk_path(cfg: Config, host: Host) -> Path:
    return cfg.path("hosts", host.name, "disk")


def empty_disk(cfg: Config, host: Host) -> None:
    """The host's own filesystem back to its empty directories, as `up` made it (end its writer first)."""
    root = disk_path(cfg, host)
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            if path.relative_to(root).as_posix() not in DISK_DIRS:
                path.rmdir()
        else:
            path.unlink()


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def disks_up(cfg: Config) -> None:
    """Mount each host's own filesystem (kept across `up`: a fill a test made stays until it is reclaimed)."""
    try:
        size = int(os.environ.get("SELFHEAL_LAB_DISK_MB", "64"))
    except ValueError as exc:
        raise LabError(f"SELFHEAL_LAB_DISK_MB must be an integer: {exc}") from exc
    for host in cfg.hosts:
        path = disk_path(cfg, host)
        path.mkdir(parents=True, exist_ok=True)
        if not _mounted(path):
            _run(["mount", "-t", "tmpfs", "-o", f"size={size}m,mode=0755", f"shlab-{host.name}-disk", str(path)])
            # what runs in the host already would not see it: started again by `up`
            for svc in ("sshd", *host.services):
                _stop(cfg, f"{host.name}-{svc}")
        for sub in DISK_DIRS:
            (path / sub).mkdir(exist_ok=True)


def disks_down(cfg: Config) -> list[str]:
    unmounted = []
    for host in cfg.hosts:
        path = disk_path(cfg, host)
        if _mounted(path):
            _run(["umount", "--lazy", str(path)], check=False)
            unmounted.append(f"{host.name}-disk")
    return unmounted


def _nginx_conf(cfg: Config, hdir: Path, host: Host) -> str:
    for sub in ("nginx-tmp", "nginx-log"):
        (hdir / sub).mkdir(exist_ok=True)
        shutil.chown(hdir / sub, "www-data", "www-data")
    tmp = hdir / "nginx-tmp"
    fleet = [h for h in cfg.hosts if "fleet" in h.groups]
    # with a fleet, the load balancer in front of it: its demo services are the upstreams (a drained one
    # is marked down in the upstreams file, which the fleet roles change and reload); a request an
    # upstream fails is tried on the next one
    upstreams = hdir / "nginx-upstreams.conf"
    if fleet and not upstreams.exists():
        upstreams.write_text("".join(f"server {h.address}:{DEMO_PORT} max_fails=1 fail_timeout=2s;  # {h.name}\n"
                                     for h in fleet))
    pool = f"upstream fleet {{ include {upstreams}; keepalive 16; }}" if fleet else ""
    proxy = ("proxy_pass http://fleet; proxy_http_version 1.1; proxy_set_header Connection \"\";\n"
             "      proxy_next_upstream error timeout http_502 http_503; proxy_next_upstream_tries 3;\n"
             "      proxy_connect_timeout 1s; proxy_read_timeout 5s;"
             if fleet else f"proxy_pass http://{host.address}:{DEMO_PORT};")
    return f"""pid {hdir / 'nginx.pid'};
error_log {hdir / 'nginx-log' / 'error.log'};
worker_processes 1;
events {{ worker_connections 256; }}
http {{
  access_log {hdir / 'nginx-log' / 'access.log'};
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  {pool}
  server {{
    listen {host.address}:{NGINX_PORT};
    location /nginx_status {{ stub_status; }}
    location / {{
      {proxy}
    }}
  }}
}}
"""


def _pg_init(cfg: Config, pg_bin: Path, datadir: Path) -> None:
    if (datadir / "PG_VERSION").exists():
        return
    pwfile = cfg.path("postgres_password")
    if not pwfile.exists():
        pwfile.write_text(os.urandom(12).hex() + "\n")
        os.chmod(pwfile, 0o600)
    tmp_pw = datadir.parent / ".pwfile"
    tmp_pw.write_text(pwfile.read_text())
    shutil.chown(tmp_pw, "postgres", "postgres")
    datadir.mkdir(mode=0o700, exist_ok=True)
    shutil.chown(datadir, "postgres", "postgres")
    try:
        _run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", str(pg_bin / "initdb"),
              "-D", str(datadir), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
              f"--pwfile={tmp_pw}"])
    finally:
        tmp_pw.unlink(missing_ok=True)
    with open(datadir / "pg_hba.conf", "a", encoding="utf-8") as fh:
        fh.write(f"host all all {cfg.subnet}.0/24 scram-sha-256\n")


def service(cfg: Config, host: Host, action: str, service_name: str, quiet: bool = False) -> int:
    """Service manager of a lab host: start | stop | restart | status | kill. Exit codes follow LSB.

    With quiet, stop returns 0 only when it stopped something (for `down`'s report).
    """
    if service_name not in host.services:
        raise LabError(f"{host.name} runs no service {service_name!r}; it runs {host.services}")
    name = f"{host.name}-{service_name}"
    if action == "status":
        pid = _alive(cfg, name)
        print(json.dumps({"host": host.name, "service": service_name, "running": pid is not None, "pid": pid}))
        return 0 if pid else 3
    if action in ("stop", "kill", "restart"):
        # PostgreSQL takes SIGTERM as "wait for every client": SIGINT is its fast shutdown.
        polite = signal.SIGINT if service_name == "postgres" else signal.SIGTERM
        was_running = _stop(cfg, name, signal.SIGKILL if action == "kill" else polite)
        if action != "restart":
            if quiet:
                return 0 if was_running else 3
            print(json.dumps({"host": host.name, "service": service_name, "running": False}))
            return 0
    if action in ("start", "restart"):
        pid = _alive(cfg, name)
        if pid is None:
            spec = _service_spec(cfg, host, service_name)
            pid = _spawn(cfg, name, spec["cmd"], netns=host.netns, user=spec.get("user"),  # type: ignore[arg-type]
                         marker=spec["marker"], env=spec.get("env"))  # type: ignore[arg-type]
            _wait(f"{service_name} on {host.name}", spec["ready"], 30, cfg.path("log", f"{name}.log"),
                  process=(cfg, name))
        print(json.dumps({"host": host.name, "service": service_name, "running": True, "pid": pid}))
        return 0
    raise LabError(f"unknown action {action!r}: use start, stop, restart, status or kill")


# --------------------------------------------------------------------------- monitoring

def _prometheus_config(cfg: Config) -> None:
    pdir = cfg.path("prometheus")
    pdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "lab" / "templates" / "alert_rules.yml", pdir / "alert_rules.yml")
    # the platform's own alerts (the daemon down, not ingesting, its watchdog stalled), as users load them
    shutil.copyfile(REPO / "extensions" / "prometheus" / "platform_rules.yml", pdir / "platform_rules.yml")
    demo_targets = [
        {"targets": [f"{h.address}:{DEMO_PORT}"], "labels": {"host": h.name, "service": "demo"}}
        for h in cfg.hosts
    ]
    conf = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(pdir / "alert_rules.yml"), str(pdir / "platform_rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{cfg.ports['alertmanager']}"]}]}]},
        "scrape_configs": [
            {"job_name": "demo", "static_configs": demo_targets},
            {"job_name": "postgres", "static_configs": [
                {"targets": [f"{h.address}:{PG_EXPORTER_PORT}"], "labels": {"host": h.name, "service": "postgres"}}
                for h in cfg.hosts if "pg_exporter" in h.services]},
            # each host's own filesystem, job "node": its exporter sees every mount of this machine, so only
            # the samples of the host's own disk are kept
            *({"job_name": f"node-{h.name}",
               "static_configs": [{"targets": [f"{h.address}:{NODE_EXPORTER_PORT}"], "labels": {"host": h.name}}],
               "relabel_configs": [{"target_label": "job", "replacement": "node"}],
               "metric_relabel_configs": [{"source_labels": ["mountpoint"], "action": "keep",
                                           "regex": re.escape(str(disk_path(cfg, h)))}]}
              for h in cfg.hosts if "node_exporter" in h.services),
            {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{cfg.ports['prometheus']}"]}]},
            # the daemon's event sources, each with its /metrics: the platform watched from outside it
            {"job_name": "selfheal", "static_configs": [{"targets": [f"127.0.0.1:{cfg.ports['rulebook']}",
                                                                     f"127.0.0.1:{cfg.ports['approvals']}"]}]},
        ],
    }
    # JSON is valid YAML: no YAML library needed before the virtualenv exists.
    (pdir / "prometheus.yml").write_text(json.dumps(conf, indent=2))


def _secret(cfg: Config, name: str) -> str:
    """A random secret in the lab directory, made once and readable by its owner only."""
    path = cfg.path(name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(os.urandom(24).hex() + "\n")
    return path.read_text().strip()


def source_token(cfg: Config) -> str:
    """The bearer token Alertmanager presents to the rulebook's source."""
    return _secret(cfg, "source_token")


def approval_secret(cfg: Config) -> str:
    """The HMAC secret humans sign approvals with (the approve playbook reads it from the file)."""
    return _secret(cfg, "approval_secret")


def proposal_secret(cfg: Config) -> str:
    """The HMAC secret remediation playbooks sign proposals with; it cannot approve."""
    return _secret(cfg, "proposal_secret")


def _alertmanager_config(cfg: Config) -> None:
    adir = cfg.path("alertmanager")
    adir.mkdir(parents=True, exist_ok=True)
    conf = {
        "route": {
            "receiver": "selfheal",
            "group_by": ["alertname", "host", "service"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "4h",
            # the platform's own alerts go straight to a human, never through the daemon they are about
            "routes": [{"matchers": ['route="platform"'], "receiver": "platform-pager", "group_by": ["alertname"]}],
        },
        "receivers": [{
            "name": "platform-pager",
            "webhook_configs": [{"url": f"http://127.0.0.1:{cfg.ports['notify']}/platform", "send_resolved": True}],
        }, {
            "name": "selfheal",
            "webhook_configs": [{
                "url": f"http://127.0.0.1:{cfg.ports['rulebook']}/api/v1/alerts",
                "send_resolved": True,
                "max_alerts": 0,
                "http_config": {"authorization": {"type": "Bearer", "credentials": source_token(cfg)}},
            }],
        }],
    }
    (adir / "alertmanager.yml").write_text(json.dumps(conf, indent=2))


def _rotate(path: Path) -> None:
    """Move a file of an earlier run to <name>.1 (one previous copy is kept), so that the live file
    holds only what this run writes and nobody reads an old page or log line as new."""
    if path.exists() and path.stat().st_size > 0:
        os.replace(path, path.with_name(path.name + ".1"))


def monitoring_up(cfg: Config) -> None:
    ports = cfg.ports
    if _alive(cfg, "notify") is None:
        _rotate(cfg.path("notifications.jsonl"))
        _spawn(cfg, "notify", [sys.executable, str(SERVICES / "notify_sink.py"),
                               "--listen", f"127.0.0.1:{ports['notify']}",
                               "--out", str(cfg.path("notifications.jsonl"))])
    _prometheus_config(cfg)
    if _alive(cfg, "prometheus") is None:
        # A fresh TSDB each start: old samples would replay alerts of a lab that is gone.
        shutil.rmtree(cfg.path("prometheus", "data"), ignore_errors=True)
        _spawn(cfg, "prometheus", [
            _which("prometheus") or "prometheus",
            f"--config.file={cfg.path('prometheus', 'prometheus.yml')}",
            f"--storage.tsdb.path={cfg.path('prometheus', 'data')}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
            "--storage.tsdb.retention.time=1d",
        ], marker=f"127.0.0.1:{ports['prometheus']}")
    _alertmanager_config(cfg)
    if _alive(cfg, "alertmanager") is None:
        data = cfg.path("alertmanager", "data")
        shutil.rmtree(data, ignore_errors=True)  # a fresh data directory each start
        data.mkdir(parents=True)
        _spawn(cfg, "alertmanager", [
            _which("prometheus-alertmanager") or "prometheus-alertmanager",
            f"--config.file={cfg.path('alertmanager', 'alertmanager.yml')}",
            f"--storage.path={data}",
            f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
            "--cluster.listen-address=",
        ], marker=f"127.0.0.1:{ports['alertmanager']}")
    _wait("notify sink", lambda: _tcp_ok("127.0.0.1", ports["notify"]), 15, cfg.path("log", "notify.log"))
    _wait("prometheus", lambda: _http_ok(f"http://127.0.0.1:{ports['prometheus']}/-/ready"), 60,
          cfg.path("log", "prometheus.log"), process=(cfg, "prometheus"))
    _wait("alertmanager", lambda: _http_ok(f"http://127.0.0.1:{ports['alertmanager']}/-/ready"), 60,
          cfg.path("log", "alertmanager.log"), process=(cfg, "alertmanager"))


# --------------------------------------------------------------------------- inventory

# Groups that the lifecycle (playbooks/remediate.yml) builds at run time (add_host) and plays on.
_PLAYBOOK_GROUPS = ("selfheal_proposal_targets", "selfheal_remediation_targets")


def _balancer(cfg: Config) -> dict[str, object]:
    web = next((h for h in cfg.hosts if "nginx" in h.services), None)
    if web is None or not any("fleet" in h.groups for h in cfg.hosts):
        return {}
    conf = str(cfg.path("hosts", web.name, "nginx.conf"))
    return {"selfheal_balancer": {
        "host": web.name, "upstreams": str(cfg.path("hosts", web.name, "nginx-upstreams.conf")),
        "check_command": [_which("nginx") or "nginx", "-t", "-q", "-c", conf],
        "reload_command": [_which("nginx") or "nginx", "-s", "reload", "-c", conf]}}


def write_inventory(cfg: Config) -> Path:
    ssh = cfg.path("ssh")
    approval_secret(cfg), proposal_secret(cfg)  # made now: the inventory reads them from their files

    def lookup(name: str) -> str:
        return f"{{{{ lookup('ansible.builtin.file', '{cfg.path(name)}') }}}}"

    hostvars = {
        h.name: {
            "ansible_host": h.address,
            "selfheal_health_url": f"http://{h.address}:{DEMO_PORT}/healthz",
            "selfheal_health_urls": {svc: url for svc, url in {
                "demo": f"http://{h.address}:{DEMO_PORT}/healthz",
                "nginx": f"http://{h.address}:{NGINX_PORT}/nginx_status",
                "postgres": f"tcp://{h.address}:{PG_PORT}",
                "pg_exporter": f"http://{h.address}:{PG_EXPORTER_PORT}/metrics",
            }.items() if svc in h.services},
            # what the service role reads for its diagnosis and its last known good configuration
            "selfheal_service_configs": {"demo": str(cfg.path("hosts", h.name, "demo.conf"))},
            "selfheal_service_logs": {svc: str(cfg.path("log", f"{h.name}-{svc}.log")) for svc in h.services},
            "selfheal_service_dump_signals": {"demo": "SIGUSR1"},
            # the host's own filesystem and where the disk role reclaims on it (relative: under the mount);
            # package caches and the journal stay where they are, not on it: nothing to reclaim there
            "selfheal_disk_path": str(disk_path(cfg, h)),
            "selfheal_disk_log_dirs": ["log", "/var/log"],
            "selfheal_disk_tmp_dirs": ["tmp"],
            # a real service manager (Debian's `service`, an LSB init script) on these hosts
            **({"selfheal_service_manager": "auto",
                "selfheal_service_pidfiles": {"demo": str(_pidfile(cfg, f"{h.name}-demo"))}}
               if h.name in SYSV_HOSTS else {}),
            # a fleet host is an upstream of the web host's nginx (drained and put back by the fleet types),
            # and its blast radius counts its own group
            **({"selfheal_balancer_member": f"{h.address}:{DEMO_PORT}", "selfheal_group": "fleet"}
               if "fleet" in h.groups else {}),
            # where the postgres role reaches the server (psql over its socket); the lab's leaks are young
            **({"selfheal_postgres_socket_dir": str(cfg.path("hosts", h.name, "pgsock")),
                "selfheal_postgres_port": PG_PORT, "selfheal_postgres_idle_age": PG_LAB_IDLE_AGE}
               if "postgres" in h.services else {}),
        }
        for h in cfg.hosts
    }
    groups: dict[str, dict[str, object]] = {}
    for h in cfg.hosts:
        for g in h.groups:
            groups.setdefault(g, {"hosts": {}})["hosts"][h.name] = {}  # type: ignore[index]
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
                # where the chaos playbooks record the fault they inject: the daemon's store, also when a
                # hand run (a test's) is given a scratch selfheal_store
                "selfheal_chaos_store": str(cfg.path("store.db")),
                "selfheal_notify_url": f"http://127.0.0.1:{cfg.ports['notify']}/escalations",
                # the chaos playbooks refuse any host without this mark
                "selfheal_lab": True,
                "selfheal_service_manager": "command",
                "selfheal_service_command": f"{sys.executable} {REPO / 'lab' / 'labctl.py'} svc",
                "selfheal_prometheus_url": f"http://127.0.0.1:{cfg.ports['prometheus']}",
                "selfheal_store": str(cfg.path("store.db")),
                "selfheal_catalog": str(REPO / "rulebooks" / "catalog.yml"),
                "selfheal_group": "demo",
                # the fleet's load balancer: the web host's nginx, its upstreams in their own file
                **_balancer(cfg),
                # what a by-hand run of the service role acts on when no alert names a service
                "selfheal_default_service": "demo",
                "selfheal_approval_url": f"http://127.0.0.1:{cfg.ports['approvals']}",
                # read from a file only root can read, so the inventory holds no secret
                # The lab's one operator is both the approver and the daemon: in production the
                # approval secret stays with the approvers, away from the daemon's inventory.
                "selfheal_approval_secret": lookup("approval_secret"),
                "selfheal_proposal_secret": lookup("proposal_secret"),
                # the lab's humans answer fast; the catalog's own timeout is for production
                "selfheal_approval_timeout": 20,
            },
            "hosts": hostvars,
            "children": {
                **groups,
                # The remediation playbook fills these with add_host, one per run, and plays on
                # each; declared here (empty), the one a run leaves empty is matched without the
                # "Could not match supplied host pattern" warning in every run's log. Not
                # host_pattern_mismatch=ignore: that would also hide a real mismatch, such as
                # chaos.service_crash run without -e selfheal_target.
                **{group: {"hosts": {}} for group in _PLAYBOOK_GROUPS},
                "selfheal_controller": {
                    "hosts": {"localhost": {"ansible_connection": "local",
                                            "ansible_python_interpreter": "{{ ansible_playbook_python }}"}},
                },
            },
        }
    }
    path = cfg.path("inventory.yml")
    path.write_text(json.dumps(inventory, indent=2))
    return path


# --------------------------------------------------------------------------- daemon

def _venv_bin() -> Path:
    return Path(os.environ.get("SELFHEAL_VENV", str(REPO / ".venv")), "bin")


def daemon_env(cfg: Config) -> dict[str, str]:
    vbin = _venv_bin()
    return {
        "PATH": f"{vbin}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".build" / "collections"),
        "ANSIBLE_INVENTORY": str(cfg.path("inventory.yml")),
        # The rule engine's JVM runs inside ansible-rulebook and would take SIGTERM for itself, ending
        # the process at once: with -Xrs the signal reaches Python, which stops the sources cleanly
        # (they checkpoint what they processed) before it exits.
        "JAVA_TOOL_OPTIONS": "-Xrs",
    }


def write_rulebook_vars(cfg: Config) -> Path:
    """The daemon's --vars file, also for running ansible-rulebook by hand; it holds secrets, so it is
    readable by its owner only from the moment it exists."""
    rulebook_vars = {
        "selfheal_source_host": "127.0.0.1",
        "selfheal_source_port": cfg.ports["rulebook"],
        "selfheal_catalog": str(REPO / "rulebooks" / "catalog.yml"),
        "selfheal_topology": str(REPO / "rulebooks" / "topology.yml"),
        "selfheal_state_path": str(cfg.path("store.db")),
        "selfheal_group_wait": 1.0,
        "selfheal_source_token": source_token(cfg),
        "selfheal_alertmanager_url": f"http://127.0.0.1:{cfg.ports['alertmanager']}",
        "selfheal_approval_port": cfg.ports["approvals"],
        "selfheal_approval_secret": approval_secret(cfg),
        "selfheal_proposal_secret": proposal_secret(cfg),
        "selfheal_store": str(cfg.path("store.db")),
        "selfheal_notify_url": f"http://127.0.0.1:{cfg.ports['notify']}/escalations",
    }
    path = cfg.path("rulebook_vars.yml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file from before keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(rulebook_vars, indent=2) + "\n")
    return path


def daemon_pid(cfg: Config) -> int | None:
    """The pid of the rulebook daemon this lab started, if it runs."""
    return _alive(cfg, "rulebook")


def daemon(cfg: Config, action: str) -> int:
    port = cfg.ports["rulebook"]
    if action == "status":
        pid = _alive(cfg, "rulebook")
        print(json.dumps({"daemon": "ansible-rulebook", "running": pid is not None, "pid": pid, "port": port}))
        return 0 if pid else 3
    if action == "stop":
        _stop(cfg, "rulebook", grace=15)
        return 0
    if action != "start":
        raise LabError(f"unknown daemon action {action!r}: use start, stop or status")
    if _alive(cfg, "rulebook") is not None:
        _say("rulebook daemon already running")
        return 0
    rulebook_bin = _venv_bin() / "ansible-rulebook"
    if not rulebook_bin.exists():
        raise LabError(f"{rulebook_bin} is missing: run make venv first")
    if not cfg.path("inventory.yml").exists():
        raise LabError("the lab is not up (no inventory): run labctl.py up first")
    for busy in (port, cfg.ports["approvals"]):
        if _port_busy("127.0.0.1", busy):
            raise LabError(f"port {busy} (rulebook event source) is already in use: stop that process or set "
                           "SELFHEAL_LAB_PORT_BASE")
    varsfile = write_rulebook_vars(cfg)
    _rotate(cfg.path("log", "rulebook.log"))
    _spawn(cfg, "rulebook", [
        str(rulebook_bin), "--rulebook", str(REPO / "rulebooks" / "self_healing.yml"),
        "--inventory", str(cfg.path("inventory.yml")), "--vars", str(varsfile), "--verbose",
    ], env=daemon_env(cfg), marker="self_healing.yml")
    _wait("ansible-rulebook event source", lambda: _tcp_ok("127.0.0.1", port), 90, cfg.path("log", "rulebook.log"),
          process=(cfg, "rulebook"))
    _say(f"rulebook daemon listening on 127.0.0.1:{port} (log: {cfg.path('log', 'rulebook.log')})")
    return 0


# --------------------------------------------------------------------------- top level

def up(cfg: Config) -> int:
    preflight(cfg)
    Path(cfg.lab_dir).mkdir(parents=True, exist_ok=True)
    cfg.path("lab.json").write_text(json.dumps(asdict(cfg), indent=2))
    t0 = time.monotonic()
    _say(f"network: bridge {cfg.bridge} {cfg.gateway}/24, {len(cfg.hosts)} hosts")
    network_up(cfg)
    # before sshd: each process in a host sees the mounts made before it started (ip netns exec gives
    # it its own mount namespace)
    _say("disks: a small filesystem of its own for every host")
    disks_up(cfg)
    _say("ssh: keys and sshd in every host")
    ssh_up(cfg)
    init_script_up(cfg)
    # Dependencies first: the database, then what uses it.
    for svc in SERVICE_ORDER:
        for host in cfg.hosts:
            if svc in host.services:
                service(cfg, host, "start", svc)
    _say("monitoring: notify sink, prometheus, alertmanager")
    monitoring_up(cfg)
    inv = write_inventory(cfg)
    write_rulebook_vars(cfg)
    _say(f"lab up in {time.monotonic() - t0:.1f}s; inventory: {inv}")
    return 0


def status(cfg: Config) -> int:
    rows: list[tuple[str, str, bool]] = []
    for host in cfg.hosts:
        rows.append((f"{host.name} sshd", f"{host.address}:{SSH_PORT}", _sshd_up(cfg, host)))
        rows.append((f"{host.name} disk", str(disk_path(cfg, host)), _mounted(disk_path(cfg, host))))
        for svc in host.services:
            port = PORTS[svc]
            ok = _alive(cfg, f"{host.name}-{svc}") is not None and _tcp_ok(host.address, port)
            rows.append((f"{host.name} {svc}", f"{host.address}:{port}", ok))
    ports = cfg.ports
    rows.append(("prometheus", f"127.0.0.1:{ports['prometheus']}",
                 _http_ok(f"http://127.0.0.1:{ports['prometheus']}/-/ready")))
    rows.append(("alertmanager", f"127.0.0.1:{ports['alertmanager']}",
                 _http_ok(f"http://127.0.0.1:{ports['alertmanager']}/-/ready")))
    rows.append(("notify sink", f"127.0.0.1:{ports['notify']}", _alive(cfg, "notify") is not None))
    daemon_up = _alive(cfg, "rulebook") is not None
    for name, where, ok in rows:
        print(f"{name:<22} {where:<22} {'up' if ok else 'DOWN'}")
    print(f"{'rulebook daemon':<22} {'127.0.0.1:' + str(ports['rulebook']):<22} {'up' if daemon_up else 'stopped'}")
    return 0 if all(row[2] for row in rows) else 1


def down(cfg: Config) -> int:
    stopped = []
    rulebook = _alive(cfg, "rulebook")
    # The daemon's playbook runs are its descendants only while it lives: held before it stops.
    runs = {} if rulebook is None else _hold(_descendants(rulebook), lambda pid: _descends(pid, rulebook))
    if _stop(cfg, "rulebook", grace=15):
        stopped.append("rulebook")
    stopped += _end(runs)
    # Ssh clients to the hosts (Ansible's ControlPersist masters) end before the hosts' sshd: each
    # closes its connection and removes its control socket, so no later run reuses a dead one.
    hosts = {(h.address, SSH_PORT) for h in cfg.hosts}
    stopped += _end(_hold(_ssh_clients(cfg), lambda pid: _comm(pid) == "ssh" and bool(_tcp_peers(pid) & hosts)))
    for svc in reversed(SERVICE_ORDER):  # users of a service before the service
        for host in cfg.hosts:
            if svc in host.services and service(cfg, host, "stop", svc, quiet=True) == 0:
                stopped.append(f"{host.name}-{svc}")
    for host in cfg.hosts:
        if _stop(cfg, f"{host.name}-sshd"):
            stopped.append(f"{host.name}-sshd")
    # What still runs in a host's namespace is the lab's: the sshd process serving each connection
    # (the listener leaves them running when it stops) and whatever their sessions started.
    netns = _netns_ids(cfg)
    stopped += _end(_hold(_in_netns(netns), lambda pid: _ns_id(f"/proc/{pid}/ns/net") in netns))
    for name in ("alertmanager", "prometheus", "notify"):
        if _stop(cfg, name):
            stopped.append(name)
    stopped += disks_down(cfg)
    # the next lab starts with every fleet host in its load balancer's pool
    for upstreams in Path(cfg.lab_dir, "hosts").glob("*/nginx-upstreams.conf"):
        upstreams.unlink()
    if init_script_down():
        stopped.append(str(INIT_SCRIPT))
    network_down(cfg)
    _say(f"stopped: {', '.join(stopped) or 'nothing was running'}; network removed")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    try:
        cfg = load_config()
        if cmd == "up":
            if not any(_alive(cfg, p.stem) for p in cfg.path("run").glob("*.pid")):
                cfg = load_config(fresh=True)  # nothing runs: take the settings anew
            return up(cfg)
        if cmd == "status":
            return status(cfg)
        if cmd == "down":
            return down(cfg)
        if cmd == "clean":
            down(cfg)
            shutil.rmtree(cfg.lab_dir, ignore_errors=True)
            return 0
        if cmd == "daemon" and len(rest) == 1:
            return daemon(cfg, rest[0])
        if cmd == "svc" and len(rest) == 2:
            host_name = os.environ.get("SELFHEAL_LAB_HOST")
            if not host_name:
                raise LabError("svc runs on a lab host: SELFHEAL_LAB_HOST is not set (its sshd sets it)")
            return service(cfg, cfg.host(host_name), rest[0], rest[1])
        print(__doc__, file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
