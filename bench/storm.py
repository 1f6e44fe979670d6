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
POST latency p50/p95, 503 answers, alerts lost (in POSTs never accepted; a
503 is retried after Retry-After, as Alertmanager would), playbook runs
started and the daemon's peak RSS (and its process tree's RSS). For ours,
what the user feels too: alerts correlated (not only answered), the time from
the last POST until every accepted alert is correlated, and the incidents
opened and resolved at the end, read from the saved state.

Shapes: `storm` (the default) sends the firing alerts; `burst` sends them,
10% of them again (Alertmanager's re-sends), then all of them resolved, as fast
as 16 connections go (about a second), so the resolved tail must close the
incident.

  python bench/storm.py [--shape storm|burst] [--hosts 500] [--alerts-per-host 20] [--alerts-per-post 20]
                        [--group-by alertname|host] [--concurrency 50] [--post-timeout 5]
                        [--settle 15] [--only selfheal,throttled,naive]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import statistics
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

from rulebook import Daemon, free_port  # noqa: E402 (a real ansible-rulebook on a rulebook of our own)

sys.path.insert(0, str(REPO / ".build" / "collections"))

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
    resolved: int | None = None
    correlated: int | None = None
    correlated_after: float | None = None  # seconds from the last POST until all accepted are correlated
    runs: int = 0
    peak_rss_mb: float = 0.0
    tree_rss_mb: float = 0.0

    def row(self) -> str:
        lat = sorted(self.latencies) or [0.0]
        p50 = statistics.median(lat) * 1000
        p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))] * 1000
        rate = self.accepted_alerts / self.send_seconds if self.send_seconds else 0.0

        def opt(value: object, fmt: str = "") -> str:
            return "-" if value is None else format(value, fmt)
        return (f"{self.name:<10} {rate:>9.0f} {p50:>7.1f} {p95:>7.1f} {self.retries:>5} {self.lost_alerts:>6} "
                f"{opt(self.correlated):>10} {opt(self.correlated_after, '.2f'):>8} {opt(self.incidents):>9} "
                f"{opt(self.resolved):>8} {self.runs:>5} {self.peak_rss_mb:>7.0f} {self.tree_rss_mb:>8.0f}")


HEADER = (f"{'daemon':<10} {'alerts/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'503s':>5} {'lost':>6} "
          f"{'correlated':>10} {'after s':>8} {'incidents':>9} {'resolved':>8} {'runs':>5} {'RSS MB':>7} "
          f"{'tree MB':>8}")


def storm(hosts: int, per_host: int, per_post: int, group_by: str, seed: int = 7) -> list[dict[str, Any]]:
    """The storm as Alertmanager would send it: alerts grouped by `group_by` (alertname or host),
    each group's notification split into POSTs of at most `per_post` alerts. One alert is the
    root cause (PostgresDown on db1); every other is a symptom of a service that depends on it."""
    rnd = random.Random(seed)
    start = "2026-11-23T10:00:00Z"
    alerts: list[dict[str, Any]] = []
    for h in range(hosts):
        host = f"web{h:03d}"
        for k in range(per_host):
            alerts.append({
                "status": "firing",
                "labels": {"alertname": f"Symptom{k:02d}", "host": host, "service": "demo", "severity": "warning"},
                "annotations": {"summary": f"symptom {k} on {host}"},
                "startsAt": start, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": f"{h:04x}{k:04x}",
            })
    alerts[0] = {"status": "firing",
                 "labels": {"alertname": "PostgresDown", "host": "db1", "service": "postgres", "severity": "critical"},
                 "annotations": {"summary": "PostgreSQL does not answer"},
                 "startsAt": start, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "root0000"}
    groups: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        groups.setdefault(alert["labels"][group_by], []).append(alert)
    payloads = []
    for key, members in groups.items():
        for i in range(0, len(members), per_post):
            payloads.append({"version": "4", "status": "firing", "receiver": "selfheal",
                             "groupKey": f'{{}}:{{{group_by}="{key}"}}', "groupLabels": {group_by: key},
                             "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager",
                             "truncatedAlerts": 0, "alerts": members[i:i + per_post]})
    rnd.shuffle(payloads)
    return payloads


def burst(payloads: list[dict[str, Any]], seed: int = 7) -> list[list[dict[str, Any]]]:
    """The storm, 10% of it re-sent, then all of it resolved: three waves, each sent whole before the next."""
    rnd = random.Random(seed)
    resend = rnd.sample(payloads, max(1, len(payloads) // 10))
    resolved = [{**p, "status": "resolved",
                 "alerts": [{**a, "status": "resolved", "endsAt": "2026-11-23T10:05:00Z"} for a in p["alerts"]]}
                for p in payloads]
    return [payloads, resend, resolved]


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
                except (TimeoutError, aiohttp.ClientError):
                    result.latencies.append(time.perf_counter() - t0)
                    result.timeouts += 1
                    break
        result.lost_alerts += n

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(session, p) for p in payloads))
        result.send_seconds = time.perf_counter() - t0


def _settle_start(port: int) -> None:
    """Wait until the daemon has finished starting (its rule engine loads after the port opens)."""
    fast = 0
    deadline = time.monotonic() + 15
    while fast < 5 and time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                sock.recv(1024)
        except OSError:
            pass
        fast = fast + 1 if time.perf_counter() - t0 < 0.02 else 0
        time.sleep(0.2)


def _saved_incidents(store_path: Path) -> tuple[int, int]:
    """(incidents opened, incidents resolved) in our daemon's saved correlator state."""
    from ansible_collections.selfheal.core.extensions.eda.plugins.event_source.alertmanager import saved_state
    from ansible_collections.selfheal.core.plugins.module_utils.store import Store

    store = Store(str(store_path))
    try:
        state = saved_state(store)["correlator"]
    finally:
        store.close()
    announced = [i for i in state.get("incidents", []) if i.get("opened_at") and i["state"] != "suppressed"]
    return len(announced), sum(1 for i in announced if i["state"] == "resolved")


def run(kind: str, waves: list[list[dict[str, Any]]], args: argparse.Namespace) -> Result:
    result = Result(kind, sent_alerts=sum(len(p["alerts"]) for wave in waves for p in wave))
    with tempfile.TemporaryDirectory(prefix=f"storm-{kind}-") as tmp:
        workdir = Path(tmp)
        runs_file = workdir / "runs.log"
        port = free_port()
        daemon = Daemon(_rulebook(kind, port, workdir, runs_file), workdir, port)
        try:
            daemon.start()
            _settle_start(port)
            print(f"[storm] {kind}: sending {result.sent_alerts} alerts in {sum(len(w) for w in waves)} POSTs "
                  f"({len(waves)} wave(s))", flush=True)
            for wave in waves:
                sent = Result(kind)
                asyncio.run(_send(f"http://127.0.0.1:{port}/api/v1/alerts", wave, args.concurrency,
                                  args.post_timeout, sent))
                for name in ("accepted_alerts", "lost_alerts", "send_seconds", "timeouts", "retries"):
                    setattr(result, name, getattr(result, name) + getattr(sent, name))
                result.latencies += sent.latencies
            last_post = time.monotonic()
            if kind == "selfheal":  # correlated, not only answered: wait until the source has processed all
                while time.monotonic() - last_post < args.settle + 60:
                    status = daemon.status() or {}
                    if status.get("processed", -1) >= status.get("accepted", 0) and not status.get("buffered"):
                        result.correlated_after = time.monotonic() - last_post
                        result.correlated = int(status["processed"])
                        break
                    time.sleep(0.05)
            time.sleep(max(0.0, args.settle - (time.monotonic() - last_post)))
            result.runs = len(runs_file.read_text().splitlines()) if runs_file.exists() else 0
            result.peak_rss_mb, result.tree_rss_mb = daemon.peak_rss_mb()
        finally:
            daemon.stop(signal.SIGTERM)
        if kind == "selfheal":
            result.incidents, result.resolved = _saved_incidents(workdir / "store.db")
        else:
            result.incidents = result.runs
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=("storm", "burst"), default="storm")
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--alerts-per-host", type=int, default=20)
    parser.add_argument("--alerts-per-post", type=int, default=20)
    parser.add_argument("--group-by", choices=("alertname", "host"), default="alertname",
                        help="Alertmanager's group_by for the storm (default alertname)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--post-timeout", type=float, default=5.0, help="seconds, as Alertmanager's webhook timeout")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait after sending before counting")
    parser.add_argument("--only", default="selfheal,throttled,naive")
    args = parser.parse_args()
    kinds = [k for k in args.only.split(",") if k]
    if not set(kinds) <= {"selfheal", "naive", "throttled"} or not kinds:
        parser.error("--only takes selfheal, naive and throttled, comma-separated")
    if min(args.hosts, args.alerts_per_host, args.alerts_per_post, args.concurrency) < 1:
        parser.error("--hosts, --alerts-per-host, --alerts-per-post and --concurrency must be at least 1")
    payloads = storm(args.hosts, args.alerts_per_host, args.alerts_per_post, args.group_by)
    waves = burst(payloads) if args.shape == "burst" else [payloads]
    results = []
    for kind in kinds:
        results.append(run(kind, waves, args))
        print(f"{HEADER}\n{results[-1].row()}", flush=True)
    print()
    groups = len({p["groupKey"] for p in payloads})
    print(f"{args.shape}: {sum(len(p['alerts']) for w in waves for p in w)} alert instances "
          f"({sum(len(p['alerts']) for p in payloads)} alerts) from {args.hosts} hosts, one root cause "
          f"(PostgresDown), {groups} alert groups (by {args.group_by}), {len(payloads)} POSTs, "
          f"concurrency {args.concurrency}, POST timeout {args.post_timeout:.0f}s")
    print(HEADER)
    for res in results:
        print(res.row())
    print("correlated: alerts the source processed; after s: from the last POST until all were; incidents and "
          "resolved: at the end, from the saved state (ours) or playbook runs (stock); RSS MB: the daemon's peak, "
          "tree MB: its process tree at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
