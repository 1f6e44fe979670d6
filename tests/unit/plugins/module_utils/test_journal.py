"""The journal keeps what the store could not take, and hands it over once the store is back."""
from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.selfheal.core.plugins.module_utils import journal
from ansible_collections.selfheal.core.plugins.module_utils.store import Store


@pytest.fixture(autouse=True)
def _journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SELFHEAL_JOURNAL_DIR", str(tmp_path / "journal"))


def _record(iid: str, outcome: str = "escalated") -> dict[str, object]:
    return {"incident_id": iid, "incident_type": "service_down", "targets": ["h1"], "mode": "auto",
            "outcome": outcome, "holder": "run-1", "at": 100.0, "summary": {"why": "store locked"}}


def test_what_waits_is_read_beside_the_store_and_replayed_into_it_once(tmp_path: Path) -> None:
    target = str(tmp_path / "store.db")
    path = journal.append(target, _record("a"))
    journal.append(target, {**_record("b", "verified"), "known_good": {"service:demo": {"config": {"sha256": "ab"}}}})
    Path(path).write_text(Path(path).read_text() + '{"torn')  # a crash in the middle of a write
    assert journal.outcomes(target, ["a", "c"]) == {"a": "escalated"}
    store = Store(target)
    try:
        assert journal.replay(store) == 2
        assert journal.replay(store) == 0, "replayed once"
        assert sorted((o["incident_id"], o["outcome"]) for o in store.outcomes("service_down")) == [
            ("a", "escalated"), ("b", "verified")]
        assert [e["details"]["journaled"] for e in store.audit_trail()] == [True, True]
        assert store.known_good(["h1"]) == {"h1": {"service:demo": {"config": {"sha256": "ab"}}}}, \
            "a held fix journaled while the store was down still leaves its last known good"
    finally:
        store.close()
    assert journal.records(target) == []


def test_an_audit_event_the_store_could_not_take_is_replayed_at_its_time(tmp_path: Path) -> None:
    """A chaos run's fault_injected while the store was locked: kept, then on the trail at its own time."""
    target = str(tmp_path / "store.db")
    journal.append(target, {"kind": "audit", "event": "fault_injected", "holder": "chaos",
                            "details": {"target": "h3"}, "incident_id": None, "at": 50.0})
    assert journal.outcomes(target, ["a"]) == {}, "an event is no outcome"
    with Store(target) as store:
        assert journal.replay(store) == 1
        [event] = store.audit_trail()
        assert (event["event"], event["at"], event["details"]) == ("fault_injected", 50.0, {"target": "h3"})
        assert store.outcomes("service_down") == []


def test_journals_of_different_stores_are_apart(tmp_path: Path) -> None:
    journal.append(str(tmp_path / "one.db"), _record("a"))
    assert journal.outcomes(str(tmp_path / "two.db"), ["a"]) == {}


def test_pages_are_counted_per_route_within_the_hour(tmp_path: Path) -> None:
    assert [journal.count_page("http://a", t) for t in (0.0, 10.0, 20.0)] == [1, 2, 3]
    assert journal.count_page("http://b", 20.0) == 1, "routes are counted apart"
    assert journal.count_page("http://a", 3605.0) == 3, "the page at 0 is out of the hour; 10, 20 and this one"


def test_a_page_budget_that_cannot_be_kept_never_holds_a_page_back(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the directory should be")
    monkeypatch.setenv("SELFHEAL_JOURNAL_DIR", str(blocked))
    assert journal.count_page("http://a", 1.0) == 1
