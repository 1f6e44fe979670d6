"""The recovery timeline as read from the store's audit trail (a real SQLite store), the one record."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from ansible_collections.selfheal.core.plugins.module_utils import timeline
from ansible_collections.selfheal.core.plugins.module_utils.store import Store


def _decided(store: Store, target: str, t0: float, allowed: bool = True, approver: str | None = None) -> None:
    decision = {"mode": "auto", "allowed": allowed, "targets": [target] if allowed else [],
                "reasons": ["decided", "cooldown until later"], "steps": ["restart"]}
    details = {"requested": [target], "decision": decision, "leases": {},
               "signal": {"name": "ServiceDown", "severity": "critical", "summary": "demo is down",
                          "starts_at": datetime.fromtimestamp(t0 + 2.0, tz=timezone.utc).isoformat(),
                          "received_at": t0 + 3.0, "symptom_count": 2}}
    if approver:
        details["approval"] = {"approver": approver, "reason": "looks right"}
    store.audit("decided", "guard", details, f"inc-{target}", t0 + 5.0)


def _heal(store: Store, target: str, t0: float) -> None:
    store.audit("fault_injected", "chaos", {"target": target, "summary": "killed"}, None, t0)
    _decided(store, target, t0)
    store.audit("action_done", "run", {"target": target, "step": "restart", "action": "started",
                                       "prior_state": {"running": False}}, f"inc-{target}", t0 + 8.0)
    store.audit("verified_healthy", "run", {"target": target, "step": "restart"}, f"inc-{target}", t0 + 10.0)
    store.audit("finished", "run", {"outcome": "verified", "targets": [target]}, f"inc-{target}", t0 + 10.5)


def test_every_stage_and_phase_comes_from_the_audit_trail(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        _heal(store, "h2", 1000.0)
        [rec] = timeline.recoveries(timeline.load(store, 0))
    assert rec.outcome == "healed" and rec.complete
    assert [e["stage"] for e in sorted(rec.stages.values(), key=lambda e: e["at"])] == [
        "fault_injected", "alert_fired", "alert_received", "remediation_started", "action_done", "verified_healthy"]
    assert rec.at("alert_fired") == 1002.0, "the alert's own start time (RFC 3339), as Alertmanager said it"
    assert rec.stages["alert_received"]["details"]["summary"] == "demo is down (+2 symptoms)"
    assert rec.stages["action_done"]["details"]["prior_state"] == {"running": False}
    assert rec.stages["remediation_started"]["details"]["decision"]["steps"] == ["restart"]
    assert rec.phases() == {"detect": 3.0, "decide": 2.0, "act": 3.0, "verify": 2.0, "time_to_recovery": 10.0}
    text = timeline.render(rec)
    assert "time to recovery: 10.00s" in text
    assert "detect 3.00s, decide 2.00s, act 3.00s, verify 2.00s" in text


def test_recoveries_are_split_by_target_and_fault_and_end_as_recorded(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        _heal(store, "h1", 1000.0)
        _heal(store, "h2", 1001.0)
        _heal(store, "h1", 2000.0)
        store.audit("fault_injected", "chaos", {"target": "h3"}, None, 3000.0)
        store.audit("finished", "run", {"outcome": "rolled_back", "targets": ["h3"]}, "inc-h3", 3030.0)
        store.audit("fault_injected", "chaos", {"target": "h4"}, None, 4000.0)
        _decided(store, "h4", 4000.0, allowed=False)
        store.audit("fault_injected", "chaos", {"target": "h5"}, None, 5000.0)
        store.audit("finished", "run", {"outcome": "timed_out", "targets": ["h5"]}, "inc-h5", 5060.0)
        recs = timeline.recoveries(timeline.load(store, 0))
        later = timeline.recovery_of(store, "h1", 1500.0)
    expected = [("h1", "healed"), ("h2", "healed"), ("h1", "healed"), ("h3", "escalated"), ("h4", "held back"),
                ("h5", "escalated")]
    assert [(r.target, r.outcome) for r in recs] == expected
    assert recs[4].stages["held_back"]["details"]["summary"] == "cooldown until later"
    assert "approval_timed_out" in recs[5].stages
    assert not recs[3].complete and recs[3].phases()["time_to_recovery"] is None
    assert later is not None and later.at("fault_injected") == 2000.0


def test_an_approved_run_shows_the_approval_not_the_alert_again(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        _decided(store, "h1", 100.0, approver="alice")
        stages = timeline.load(store, 0)
    assert [e["stage"] for e in stages] == ["approved", "remediation_started"]
    assert stages[0]["details"]["summary"] == "approved by alice: looks right"


def test_unfinished_recovery_is_open_and_unknown_events_are_not_stages(tmp_path: Path) -> None:
    with Store(str(tmp_path / "s.db")) as store:
        store.audit("fault_injected", "chaos", {"target": "h1"}, None, 10.0)
        store.audit("lease_renewed", "run", {"target": "h1"}, "inc", 11.0)
        store.audit("action_done", "run", {"step": "restart"}, "inc", 11.5)  # no target: not a stage
        _decided(store, "h1", 9.0)
        [rec] = timeline.recoveries(timeline.load(store, 0))
    assert rec.outcome == "open"
    assert rec.phases()["detect"] == 2.0
    assert "action_done" not in rec.stages


@pytest.mark.parametrize(("intervals", "most"), [
    ([], 0),
    ([(0, 10)], 1),
    ([(0, 10), (10, 20)], 1),  # one ends as the next starts: never both
    ([(0, 10), (5, 15), (6, 7)], 3),
    ([(0, 4), (1, 5), (2, 6), (4, 8), (5, 9), (6, 10)], 3),  # batches of three, back to back
])
def test_most_at_once_counts_the_intervals_open_at_one_moment(intervals: list[tuple[float, float]],
                                                              most: int) -> None:
    assert timeline.most_at_once(intervals) == most
