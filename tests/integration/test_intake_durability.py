"""Accepted means kept, through a real ansible-rulebook daemon: alerts answered 202 survive SIGKILL and
SIGTERM during a storm (counted in the saved state after a restart), and a rulebook's shutdown action
during a storm ends the daemon within seconds. The long versions run in bench/storm.py."""
from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import REPO, wait_for
from rulebook import Daemon, free_port

from ansible_collections.selfheal.core.extensions.eda.plugins.event_source.alertmanager import saved_state
from ansible_collections.selfheal.core.plugins.module_utils.store import Store


def _rulebook(workdir: Path, port: int, rules: list[dict[str, Any]]) -> Path:
    source = {"selfheal.core.alertmanager": {
        "host": "127.0.0.1", "port": port, "correlate": True, "group_wait": 1.0,
        "catalog": str(REPO / "bench" / "storm_catalog.yml"), "topology": str(REPO / "bench" / "storm_topology.yml"),
        "state_path": str(workdir / "store.db")}}
    path = workdir / "rulebook.yml"
    path.write_text(yaml.safe_dump([{"name": "intake", "hosts": "all", "sources": [source], "rules": rules}]))
    return path


def _storm(n: int, per_post: int = 20) -> list[list[dict[str, Any]]]:
    alerts = [{"status": "firing", "labels": {"alertname": f"Symptom{i % 20}", "host": f"web{i // 20:03d}",
                                              "service": "demo"},
               "startsAt": "2026-11-23T10:00:00Z", "fingerprint": f"fp{i:06d}"} for i in range(n)]
    alerts[0] = {"status": "firing", "labels": {"alertname": "PostgresDown", "host": "db1", "service": "postgres"},
                 "startsAt": "2026-11-23T10:00:00Z", "fingerprint": "root"}
    return [alerts[i:i + per_post] for i in range(0, n, per_post)]


async def _send(port: int, posts: list[list[dict[str, Any]]], accepted: set[str], concurrency: int = 16,
                on_progress: Any = None) -> None:
    """POST every batch as Alertmanager does; `accepted` gets the fingerprints of those answered 2xx."""
    sem = asyncio.Semaphore(concurrency)
    url = f"http://127.0.0.1:{port}/api/v1/alerts"

    async def one(session: aiohttp.ClientSession, alerts: list[dict[str, Any]]) -> None:
        async with sem:
            try:
                async with session.post(url, data=json.dumps({"version": "4", "alerts": alerts}),
                                        headers={"Content-Type": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    if 200 <= resp.status < 300:
                        accepted.update(a["fingerprint"] for a in alerts)
            except (aiohttp.ClientError, TimeoutError):
                pass  # a daemon killed mid-request: not answered, so not accepted
            if on_progress is not None:
                on_progress()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, a) for a in posts))


def _saved_fingerprints(store_path: Path) -> set[str]:
    store = Store(str(store_path))
    try:
        state = saved_state(store)["correlator"]
    finally:
        store.close()
    return {fp for incident in state.get("incidents", []) for fp in incident["signals"]}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_every_alert_answered_202_is_in_the_saved_state_after_a_restart(tmp_path: Path, sig: int) -> None:
    port = free_port()
    rulebook = _rulebook(tmp_path, port, [{"name": "incidents", "condition": 'event.kind == "incident_opened"',
                                           "action": {"debug": {"msg": "{{ event.incident.id }}"}}}])
    posts = _storm(6000)
    accepted: set[str] = set()
    daemon = Daemon(rulebook, tmp_path, port).start()
    answered = 0

    def progress() -> None:  # stop the daemon in the middle of the storm
        nonlocal answered
        answered += 1
        if answered == len(posts) // 2:
            daemon.stop(sig, timeout=0.001)

    try:
        asyncio.run(_send(port, posts, accepted, on_progress=progress))
        assert daemon.proc is not None
        daemon.proc.wait(30)
    finally:
        daemon.stop(signal.SIGKILL)
    assert 0 < len(accepted) < 6000, f"the stop came in the middle of the storm ({len(accepted)} accepted)"
    restarted = Daemon(rulebook, tmp_path, port).start()
    try:
        wait_for("the intake processed", lambda: (restarted.status() or {}).get("buffered", 1) == 0, 60)
        time.sleep(1.5)  # a checkpoint
    finally:
        exited = restarted.stop(signal.SIGTERM)
    saved = _saved_fingerprints(tmp_path / "store.db")
    missing = accepted - saved
    print(f"{signal.Signals(sig).name}: {len(accepted)} alerts answered 202, {len(saved & accepted)} in the saved "
          f"state after the restart, {len(missing)} missing; clean stop in {exited:.1f}s")
    assert not missing, f"{len(missing)} alerts answered 202 were lost, e.g. {sorted(missing)[:5]}"
    assert exited < 10


def test_a_shutdown_action_during_a_storm_ends_the_daemon_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    rulebook = _rulebook(tmp_path, port, [{"name": "stop at the first incident",
                                           "condition": 'event.kind == "incident_opened"',
                                           "action": {"shutdown": {"delay": 0.5, "message": "test"}}}])
    posts = _storm(8000)
    daemon = Daemon(rulebook, tmp_path, port).start()
    try:
        started = time.monotonic()
        asyncio.run(_send(port, posts, set()))
        took = daemon.wait_exit(30)
    finally:
        daemon.stop(signal.SIGKILL)
    assert took is not None, f"the daemon did not exit after its shutdown action:\n{daemon.log()[-2000:]}"
    print(f"shutdown during a storm: exited {time.monotonic() - started:.1f}s after the storm began")
    assert daemon.proc is not None and daemon.proc.returncode == 0, daemon.log()[-2000:]
    assert time.monotonic() - started < 20
