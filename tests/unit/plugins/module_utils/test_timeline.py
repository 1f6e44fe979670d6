from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from ansible_collections.selfheal.core.plugins.module_utils import timeline
from ansible_collections.selfheal.core.plugins.module_utils.timeline import TimelineError


def _heal(path: str, target: str, t0: float) -> None:
    offsets = {"fault_injected": 0.0, "alert_fired": 2.0, "alert_received": 3.0, "remediation_started": 5.0,
               "action_done": 8.0, "verified_healthy": 10.0}
    for stage, offset in offsets.items():
        timeline.record(path, stage, target, incident_id="i1", at=t0 + offset)


def test_phases_and_time_to_recovery(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    _heal(path, "h2", 1000.0)
    entries, problems = timeline.read(path)
    assert problems == []
    [rec] = timeline.recoveries(entries)
    assert rec.outcome == "healed" and rec.complete
    assert rec.phases() == {"detect": 3.0, "decide": 2.0, "act": 3.0, "verify": 2.0, "time_to_recovery": 10.0}
    text = timeline.render(rec)
    assert "time to recovery: 10.00s" in text
    assert "detect 3.00s, decide 2.00s, act 3.00s, verify 2.00s" in text


def test_recoveries_are_split_by_target_and_fault(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    _heal(path, "h1", 1000.0)
    _heal(path, "h2", 1001.0)
    _heal(path, "h1", 2000.0)
    timeline.record(path, "fault_injected", "h3", at=3000.0)
    timeline.record(path, "escalated", "h3", at=3030.0)
    recs = timeline.recoveries(timeline.read(path)[0])
    expected = [("h1", "healed"), ("h2", "healed"), ("h1", "healed"), ("h3", "escalated")]
    assert [(r.target, r.outcome) for r in recs] == expected
    assert not recs[3].complete
    assert recs[3].phases()["time_to_recovery"] is None


def test_unfinished_recovery_is_open(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    timeline.record(path, "fault_injected", "h1", at=10.0)
    timeline.record(path, "alert_received", "h1", at=12.0)
    [rec] = timeline.recoveries(timeline.read(path)[0])
    assert rec.outcome == "open"
    assert rec.phases()["detect"] == 2.0


def test_bad_lines_are_reported_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    timeline.record(str(path), "fault_injected", "h1", at=10.0)
    with open(path, "a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"stage": "exploded"}) + "\n")
    timeline.record(str(path), "alert_received", "h1", at=11.0)
    entries, problems = timeline.read(str(path))
    assert [e["stage"] for e in entries] == ["fault_injected", "alert_received"]
    assert len(problems) == 2 and f"{path}:2:" in problems[0] and f"{path}:3:" in problems[1]


def test_invalid_entries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TimelineError, match="unknown stage"):
        timeline.record(str(tmp_path / "t.jsonl"), "exploded", "h1")
    with pytest.raises(TimelineError, match="needs a target"):
        timeline.record(str(tmp_path / "t.jsonl"), "fault_injected", "")
    assert not (tmp_path / "t.jsonl").exists()


def test_unwritable_timeline_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TimelineError, match="cannot open timeline"):
        timeline.record(str(blocker / "t.jsonl"), "fault_injected", "h1")


def _writer(path: str, n: int, worker: int) -> None:
    for i in range(n):
        timeline.record(path, "alert_received", f"h{worker}", details={"i": i, "pad": "x" * 3000})


def test_parallel_appends_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    procs = [multiprocessing.Process(target=_writer, args=(path, 200, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    entries, problems = timeline.read(path)
    assert problems == []
    assert len(entries) == 800
    for w in range(4):
        assert sorted(e["details"]["i"] for e in entries if e["target"] == f"h{w}") == list(range(200))
