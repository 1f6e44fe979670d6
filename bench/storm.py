"""Alert storm: one root cause, 10,000 alerts from 500 hosts, three daemons.

The same storm (Alertmanager-format webhook POSTs, one per host group of
alerts, sent concurrently) goes to three real ansible-rulebook daemons in
turn, each running a no-op remediation playbook (bench/noop_remediation.yml)
that records every run it starts:

  selfheal   selfheal.core.alertmanager with correlation (catalog + topology),
             one rule: incident_opened -> run_playbook
  naive      eda.builtin.webhook, one run per POSTed alert group
  throttled  eda.builtin.webhook with throttle once_within, grouped by groupKey

For each it prints the ingest rate (alerts accepted per second of sending),
POST latency p50/p95, incidents emitted, playbook runs started, alerts lost
(in POSTs never accepted; a 503 is retried after Retry-After, as Alertmanager
would) and the daemon's peak RSS.

  python bench/storm.py [--hosts 500] [--alerts-per-host 20] [--concurrency 50]
                        [--post-timeout 5] [--settle 20] [--only selfheal,naive,throttled]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "lab"))

import labctl  # noqa: E402 (environment for ansible-rulebook, shared with the lab)

NOOP = REPO / "bench" / "noop_remediation.yml"


@dataclass
class Result:
    name: str
    sent_alerts: int = 0
    accepted_alerts: int = 0
    lost_alerts: int = 0
    send_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    retries: int = 0
    incidents: int | None = None
    runs: int = 0
    peak_rss_mb: float = 0.0

    def row(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = statistics.median(lat) * 1000
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] * 1000
        rate = self.accepted_alerts / self.send_seconds if self.send_seconds else 0.0
        incidents = "-" if self.incidents is None else str(self.incidents)
        return (f"{self.name:<10} {rate:>12.0f} {p50:>9.1f} {p95:>9.1f} {incidents:>9} {self.runs:>6} "
                f"{self.lost_alerts:>6} {self.timeouts:>8} {self.peak_rss_mb:>8.0f}")


HEADER = (f"{'daemon':<10} {'alerts/s':>12} {'p50 ms':>9} {'p95 ms':>9} {'incidents':>9} {'runs':>6} "
          f"{'lost':>6} {'timeouts':>8} {'RSS MB':>8}")


def storm(hosts: int, per_host: int, seed: int = 7) -> list[dict[str, Any]]:
    """One payload per host: its alert group. The database's PostgresDown is among them."""
    rnd = random.Random(seed)
    start = "2026-11-23T10:00:00Z"
    payloads = []
    for h in range(hosts):
        host = f"web{h:03d}"
        alerts = [{
            "status": "firing",
            "labels": {"alertname": f"Symptom{k:02d}", "host": host, "service": "demo", "severity": "warning"},
            "annotations": {"summary": f"symptom {k} on {host}"},
            "startsAt": start, "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{h:04x}{k:04x}",
        } for k in range(per_host)]
        if h == 0:
            alerts[0] = {"status": "firing",
                         "labels": {"alertname": "PostgresDown", "host": "db1", "service": "postgres",
                                    "severity": "critical"},
                         "annotations": {"summary": "PostgreSQL does not answer"},
                         "startsAt": start, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "root0000"}
        payloads.append({"version": "4", "status": "firing", "receiver": "selfheal",
                         "groupKey": f'{{}}:{{host="{host}"}}', "groupLabels": {"host": host},
                         "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
                         "alerts": alerts})
    rnd.shuffle(payloads)
    return payloads


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rulebook(kind: str, port: int, workdir: Path, runs_file: Path) -> Path:
    noop = {"run_playbook": {"name": str(NOOP), "extra_vars": {"runs_file": str(runs_file)}}}
    if kind == "selfheal":
        source = {"selfheal.core.alertmanager": {
            "host": "127.0.0.1", "port": port, "correlate": True,
            "catalog": str(REPO / "bench" / "storm_catalog.yml"),
            "topology": str(REPO / "bench" / "storm_topology.yml"),
            "state_path": str(workdir / "store.db"), "group_wait": 2.0}}
        rules = [{"name": "remediate the root cause", "condition": 'event.kind == "incident_opened"', "action": noop}]
    else:
        source = {"eda.builtin.webhook": {"host": "127.0.0.1", "port": port}}
        rule: dict[str, Any] = {"name": "remediate every alert group", "condition": "event.payload.alerts is defined",
                                "action": noop}
        if kind == "throttled":
            rule["throttle"] = {"once_within": "5 minutes", "group_by_attributes": ["event.payload.groupKey"]}
        rules = [rule]
    path = workdir / f"{kind}.yml"
    path.write_text(yaml.safe_dump([{"name": f"storm {kind}", "hosts": "all", "sources": [source],
                                     "rules": rules}], sort_keys=False))
    return path


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _send(url: str, payloads: list[dict[str, Any]], concurrency: int, timeout: float,
                result: Result) -> None:
    sem = asyncio.Semaphore(concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def one(session: aiohttp.ClientSession, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        n = len(payload["alerts"])
        async with sem:
            for _attempt in range(6):
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"},
                                            timeout=client_timeout) as resp:
                        await resp.read()
                        result.latencies.append(time.perf_counter() - t0)
                        if resp.status == 503:
                            result.retries += 1
                            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                            continue
                        if 200 <= resp.status < 300:
                            result.accepted_alerts += n
                            return
                        break
                except (asyncio.TimeoutError, aiohttp.ClientError):
                    result.latencies.append(time.perf_counter() - t0)
                    result.timeouts += 1
                    break
        result.lost_alerts += n

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session, p) for p in payloads))
        result.send_seconds = time.perf_counter() - t0


def run(kind: str, payloads: list[dict[str, Any]], args: argparse.Namespace) -> Result:
    result = Result(kind, sent_alerts=sum(len(p["alerts"]) for p in payloads))
    with tempfile.TemporaryDirectory(prefix=f"storm-{kind}-") as tmp:
        workdir = Path(tmp)
        runs_file = workdir / "runs.log"
        port = _free_port()
        rulebook = _rulebook(kind, port, workdir, runs_file)
        inventory = workdir / "inventory.yml"
        inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
        env = {**os.environ, **labctl.daemon_env(labctl.load_config())}
        log = open(workdir / "rulebook.log", "wb")  # noqa: SIM115 (handed to the daemon)
        proc = subprocess.Popen([str(BIN / "ansible-rulebook"), "--rulebook", str(rulebook), "-i", str(inventory)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise SystemExit(f"storm: {kind} daemon exited:\n{(workdir / 'rulebook.log').read_text()[-3000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            print(f"[storm] {kind}: sending {result.sent_alerts} alerts in {len(payloads)} POSTs", flush=True)
            asyncio.run(_send(f"http://127.0.0.1:{port}/api/v1/alerts", payloads, args.concurrency,
                              args.post_timeout, result))
            time.sleep(args.settle)  # let correlation windows close and playbooks start
            result.runs = len(runs_file.read_text().splitlines()) if runs_file.exists() else 0
            if kind == "selfheal":
                result.incidents = result.runs  # one run per incident_opened: the only rule
            result.peak_rss_mb = _peak_rss_mb(proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--alerts-per-host", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--post-timeout", type=float, default=5.0, help="seconds, as Alertmanager's webhook timeout")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait after sending before counting")
    parser.add_argument("--only", default="selfheal,throttled,naive")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    if not set(kinds) <= {"selfheal", "naive", "throttled"} or not kinds:
        parser.error("--only takes selfheal, naive and throttled, comma-separated")
    payloads = storm(args.hosts, args.alerts_per_host)
    results = [run(kind, payloads, args) for kind in kinds]
    print()
    print(f"storm: {sum(len(p['alerts']) for p in payloads)} alerts from {args.hosts} hosts, one root cause "
          f"(PostgresDown), {len(payloads)} POSTs, concurrency {args.concurrency}")
    print(HEADER)
    for res in results:
        print(res.row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
