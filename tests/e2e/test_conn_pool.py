"""End to end on the lab: a leaking client exhausts PostgreSQL's connections on h4, the daemon heals it.

Real parts only: PostgreSQL and its exporter, Prometheus's PostgresConnectionsExhausted rule,
Alertmanager, the rulebook daemon and the postgres role over SSH; pg_stat_activity before and after.
"""
from __future__ import annotations

import math
import time

from conftest import Lab, wait_for

from ansible_collections.selfheal.core.plugins.module_utils import timeline

BOUND = 120  # seconds; the lab heals in about 15
HOST = "h4"


def test_leaked_connections_are_terminated_and_work_in_flight_survives(daemon: Lab) -> None:
    lab = daemon
    lab.wait_until_free(HOST)
    since = time.time()
    opened = lab.playbook("selfheal.core.chaos.pg_connections", "-e", f"selfheal_target={HOST}")
    assert opened.returncode == 0, opened.stdout[-3000:] + opened.stderr
    try:
        before = lab.pg_backends(HOST)
        keep = {pid for pid, b in before.items() if b["application"] in ("chaos-active", "chaos-in_transaction")}
        assert len(keep) == 2 and len(before) >= 24, before
        pids = {h.name: lab.pid(h.name) for h in lab.cfg.hosts}

        rec = wait_for(f"the connections of {HOST} healed", lambda: lab.recovery_ended(HOST, since), BOUND)
        print(timeline.render(rec))
        assert rec.outcome == "healed", timeline.render(rec)
        assert rec.complete, timeline.render(rec)
        after = lab.pg_backends(HOST)
        limit = 30
        assert keep <= set(after), "the active backend and the one in a transaction survive (their pids)"
        assert 100.0 * len(after) / limit < 60, f"{len(after)} of {limit} connections left"
        acted = rec.stages["action_done"]["details"]
        assert acted["step"] == "terminate_idle" and acted["action"] == "terminated_idle"
        passes = acted["prior_state"]["passes"]
        terminated = {b["pid"] for p in passes for b in p["terminated"]}
        assert all(len(p["terminated"]) <= math.floor(limit * 0.15) for p in passes), passes
        assert terminated and terminated <= {pid for pid, b in before.items() if b["application"] == "chaos-idle"}
        assert not terminated & set(after)
        assert rec.stages["verified_healthy"]["details"]["step"] == "terminate_idle"
        incident_id = str(rec.stages["verified_healthy"]["incident_id"])
        finished = wait_for("the outcome on record", lambda: [
            e for e in lab.audit_trail(incident_id) if e["event"] == "finished"], 30)
        verification = finished[0]["details"]["evidence"]["verification"]
        assert verification["healthy"] is True and "target below" in verification["how"], verification
        decision = rec.stages["remediation_started"]["details"]["decision"]
        assert decision["targets"] == [HOST] and decision["reasons"]
        assert {h.name: lab.pid(h.name) for h in lab.cfg.hosts} == pids, "no service was restarted"
    finally:
        lab.playbook("selfheal.core.chaos.pg_connections", "-e", f"selfheal_target={HOST}", "-e", "chaos_conns=stop")
