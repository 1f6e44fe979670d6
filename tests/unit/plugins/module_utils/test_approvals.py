"""Proposals are answered exactly once: by the first decision before the deadline, or by the timeout."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.approvals import (
    ApprovalError,
    Approvals,
    parse_approval,
    parse_proposal,
)

IDS = ["i1", "i2", "i3"]
STEP = st.one_of(
    st.tuples(st.just("propose"), st.sampled_from(IDS), st.integers(1, 30)),
    st.tuples(st.just("decide"), st.sampled_from(IDS), st.sampled_from(["approve", "reject"])),
    st.tuples(st.just("wait"), st.integers(0, 20), st.just(None)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_every_proposal_is_answered_exactly_once_and_nothing_else_is(steps: list[tuple]) -> None:
    book = Approvals()
    now = 0.0
    opened = answered = 0
    waiting: set[str] = set()
    done: set[str] = set()
    for step in steps:
        events = []
        try:
            if step[0] == "propose":
                events = book.propose(parse_proposal({"incident_id": step[1], "targets": ["h1"],
                                                      "timeout": step[2]}, 900), now)
                assert step[1] not in waiting, "a second proposal while one waits is refused"
                assert step[1] not in done, "an answered incident cannot be proposed again (replays)"
                waiting.add(step[1])
                opened += 1
            elif step[0] == "decide":
                events = book.decide(parse_approval({"incident_id": step[1], "decision": step[2],
                                                     "approver": "ana"}), now)
                assert step[1] in waiting, "an approval needs a waiting proposal"
            else:
                now += step[1]
        except ApprovalError as exc:
            assert exc.status == 409
        events += book.tick(now)
        for event in events:
            if event["kind"] != "proposal_pending":
                incident = event["proposal"]["incident_id"]
                assert incident in waiting
                waiting.discard(incident)
                done.add(incident)
                answered += 1
                if event["kind"] == "approval_timed_out":
                    assert event["proposal"]["deadline"] <= now
                else:
                    assert event["approval"]["decided_at"] < event["proposal"]["deadline"]
    assert answered == opened - len(waiting)
    assert set(book.pending) == waiting
    timed_out = book.tick(now + 10_000)
    assert {e["proposal"]["incident_id"] for e in timed_out} == waiting and not book.pending


def test_state_round_trips_through_json() -> None:
    book = Approvals()
    book.propose(parse_proposal({"incident_id": "i1", "targets": ["h1"], "context": {"a": 1}}, 60), 100)
    book.propose(parse_proposal({"incident_id": "i2", "targets": ["h2"]}, 60), 100)
    book.decide(parse_approval({"incident_id": "i2", "decision": "reject", "approver": "bo"}), 110)
    restored = Approvals()
    restored.load_state(json.loads(json.dumps(book.to_state())))
    assert restored.pending["i1"]["context"] == {"a": 1} and restored.pending["i1"]["deadline"] == 160
    with pytest.raises(ApprovalError, match="rejected by bo"):
        restored.check_approval({"incident_id": "i2"})


@pytest.mark.parametrize(("payload", "message"), [
    ([], "JSON object"),
    ({"incident_id": "a b", "targets": ["h1"]}, "incident_id"),
    ({"incident_id": "a", "targets": []}, "targets"),
    ({"incident_id": "a", "targets": ["h1"], "timeout": -1}, "timeout"),
    ({"incident_id": "a", "targets": ["h1"], "timeout": True}, "timeout"),
    ({"incident_id": "a", "targets": ["h1"], "evidence": "x"}, "evidence"),
    ({"incident_id": "a", "targets": ["h1"], "run": "rm -rf /"}, "unknown proposal field"),
])
def test_bad_proposals_name_the_field(payload: object, message: str) -> None:
    with pytest.raises(ApprovalError, match=message) as info:
        parse_proposal(payload, 900)
    assert info.value.status == 400


def test_a_full_book_refuses_more_proposals() -> None:
    book = Approvals(max_pending=1)
    book.propose(parse_proposal({"incident_id": "i1", "targets": ["h1"]}, 60), 0)
    with pytest.raises(ApprovalError, match="already waiting; decide some first"):
        book.propose(parse_proposal({"incident_id": "i2", "targets": ["h1"]}, 60), 0)


def test_a_late_approval_loses_to_the_timeout_and_a_replayed_proposal_is_refused() -> None:
    book = Approvals()
    book.propose(parse_proposal({"incident_id": "i1", "targets": ["h1"], "timeout": 10}, 900), 0)
    with pytest.raises(ApprovalError, match="timed out"):
        book.check_approval({"incident_id": "i1"}, now=10)
    events = book.decide(parse_approval({"incident_id": "i1", "decision": "approve", "approver": "ana"}), 10.1)
    assert [e["kind"] for e in events] == ["approval_timed_out"], "the deadline passed before the answer"
    with pytest.raises(ApprovalError, match="already answered"):
        book.propose(parse_proposal({"incident_id": "i1", "targets": ["h1"]}, 900), 20)
