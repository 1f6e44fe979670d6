"""The watchdog, property-tested: whatever happens to runs, the store and time, every incident ends
verified, resolved by itself or paged within its bound, and none is paged twice."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.watchdog import RETRIED, RunState, Watchdog

DEADLINE = 60.0
INTERVAL = 5.0
COOL = 45.0


def incident(iid: str, **kw: Any) -> dict[str, Any]:
    return {"id": iid, "type": "service_down", "mode": "auto", "playbook": "p", "never_automate": False,
            "root": {"host": "h1", "name": "demo@h1"}, **kw}


def test_a_run_that_records_an_outcome_ends_the_watch_without_a_page() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    assert dog.tick(10, {"a": RunState(running=True)}) == []
    assert dog.tick(100, {"a": RunState(outcome="verified")}) == []
    assert dog.pending() == []


def test_a_run_whose_own_page_failed_is_paged_by_the_watchdog_at_once_and_once() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    assert dog.tick(5, {"a": RunState(running=True)}) == []
    [page] = dog.tick(10, {"a": RunState(outcome="unpaged", at=9)})
    assert page.kind == "page" and "could not page one itself" in page.why
    assert dog.tick(20, {"a": RunState(outcome="unpaged", at=9)}) == [], "exactly once"


def test_a_dead_run_is_resumed_once_then_paged_once() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    assert dog.tick(59, {}) == []
    [resume] = dog.tick(61, {"a": RunState()})
    assert resume.kind == "resume" and "resumed (1 of 1)" in resume.why
    assert dog.tick(100, {"a": RunState()}) == []
    [page] = dog.tick(122, {"a": RunState()})
    assert page.kind == "page" and "even after 1 resume" in page.why
    assert dog.tick(500, {"a": RunState()}) == [], "exactly once"


def test_a_run_that_died_midway_is_resumed_at_once_not_at_the_deadline() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    assert dog.tick(5, {"a": RunState(running=True)}) == []
    [resume] = dog.tick(20, {"a": RunState(died=True)})
    assert resume.kind == "resume" and "its process died" in resume.why
    assert dog.tick(30, {"a": RunState(died=True)}) == [], "resumed once"
    [page] = dog.tick(81, {"a": RunState(died=True)})
    assert page.kind == "page"


def test_an_unreadable_store_is_paged_as_the_cause() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    [page] = dog.tick(61, {"a": RunState(unknown="store /x is locked by another process")})
    assert page.kind == "page" and "the store cannot be read (store /x is locked" in page.why


def test_what_no_automation_handles_is_paged_at_once() -> None:
    dog = Watchdog()
    dog.open(incident("c", type="unknown_cascade", never_automate=True, inferred_root=True,
                      root={"name": "postgres"}), DEADLINE, 0)
    dog.open(incident("o", mode="observe"), DEADLINE, 0)
    dog.open(incident("u", type="unclassified", playbook=None), DEADLINE, 0)
    pages = {a.incident_id: a.why for a in dog.tick(0, {})}
    assert set(pages) == {"c", "o", "u"}
    assert "unknown cascade is never automated" in pages["c"] and "observe mode" in pages["o"]
    assert "no automatic remediation" in pages["u"]


def test_the_watch_list_survives_a_restart() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    assert [a.kind for a in dog.tick(61, {})] == ["resume"]
    again = Watchdog()
    again.load_state(dog.to_state())
    assert [a.kind for a in again.tick(122, {})] == ["page"], "the resume is not repeated after a restart"


def test_a_deferred_incident_is_decided_again_when_its_cooldown_ends_not_paged() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    deferred = {"a": RunState(outcome="deferred", retry_at=50, at=2)}
    assert dog.tick(10, deferred) == [], "no page while the cooldown runs"
    assert dog.tick(45, deferred) == []
    [resume] = dog.tick(51, deferred)
    assert resume.kind == "resume" and "cooldown ended" in resume.why
    assert dog.tick(55, deferred) == [], "the resumed run has not decided yet: the old deferral is not acted on again"
    assert dog.tick(60, {"a": RunState(outcome="verified", at=58)}) == []
    assert dog.pending() == []


def test_a_fix_that_did_not_hold_is_retried_then_paged_when_it_keeps_failing() -> None:
    dog = Watchdog(max_retries=2)
    dog.open(incident("a"), DEADLINE, 0)
    kinds = []
    for n in range(4):
        t = 100.0 * (n + 1)
        kinds += [a.kind for a in dog.tick(t, {"a": RunState(outcome="not_held", retry_at=t - 1, at=t - 50)})]
    assert kinds == ["resume", "resume", "page"], kinds


def test_a_paged_incident_gets_its_page_resolved_once_when_its_alerts_end() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    dog.open(incident("b"), DEADLINE, 0)
    dog.open(incident("c", never_automate=True), DEADLINE, 0)
    states = {"a": RunState(outcome="escalated", at=5), "b": RunState(outcome="verified", at=5)}
    assert [a.kind for a in dog.tick(10, states)] == ["page"]  # c, at once
    for iid in ("a", "b", "c"):
        dog.close(iid, now=12)
    assert dog.tick(15, states) == [], "resolved once the failure stayed away for settle_after"
    resolved = sorted(a.incident_id for a in dog.tick(45, states) if a.kind == "resolve")
    assert resolved == ["a", "c"], "what paged is resolved; a verified incident paged nobody"
    assert dog.tick(50, states) == [], "once"


def test_a_run_that_paged_and_ended_between_two_looks_is_resolved_too() -> None:
    dog = Watchdog()
    dog.open(incident("a"), DEADLINE, 0)
    dog.close("a", now=4)
    assert dog.tick(5, {"a": RunState(outcome="held_back", at=3)}) == []
    [resolve] = dog.tick(35, {})
    assert resolve.kind == "resolve"


_step = st.tuples(st.sampled_from(["run", "finish", "crash", "defer", "relapse", "store_down", "store_up",
                                   "resolve", "wait"]),
                  st.integers(0, 4), st.floats(0, 40))


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(_step, max_size=60), restarts=st.sets(st.integers(0, 60), max_size=3))
def test_every_incident_ends_within_its_bound_and_is_paged_at_most_once(
        steps: list[tuple[str, int, float]], restarts: set[int]) -> None:
    dog = Watchdog()
    now = 0.0
    opened: dict[str, float] = {}
    runs: dict[str, RunState] = {}  # what the store holds of each incident
    store_up = True
    resolved: set[str] = set()
    pages: dict[str, int] = {}

    resolves: dict[str, int] = {}

    def look() -> None:
        states = {i: (runs.get(i, RunState()) if store_up else RunState(unknown="down")) for i in dog.pending()}
        for action in dog.tick(now, states):
            counts = pages if action.kind == "page" else resolves if action.kind == "resolve" else {}
            counts[action.incident_id] = counts.get(action.incident_id, 0) + 1

    for n, (what, k, dt) in enumerate(steps):
        iid = f"i{k}"
        if iid not in opened:
            opened[iid] = now
            dog.open(incident(iid), DEADLINE, now)
        elif what == "run" and iid not in resolved and runs.get(iid, RunState()).outcome in (None, *RETRIED):
            runs[iid] = RunState(running=True, at=now)
        elif what == "finish" and runs.get(iid, RunState()).running:
            runs[iid] = RunState(outcome="verified", at=now)
        elif what == "crash" and runs.get(iid, RunState()).running:
            runs[iid] = RunState(died=True, at=now)  # the run died with its daemon: its lease expires, no outcome
        elif what == "defer" and runs.get(iid, RunState()).running:  # held back by a cooldown: decided again
            runs[iid] = RunState(outcome="deferred", retry_at=now + COOL, at=now)
        elif what == "relapse" and runs.get(iid, RunState()).running:  # the fix verified, then did not hold
            runs[iid] = RunState(outcome="not_held", retry_at=now + COOL, at=now)
        elif what == "store_down":
            store_up = False
        elif what == "store_up":
            store_up = True
        elif what == "resolve":
            resolved.add(iid)
            dog.close(iid, now)
        if n in restarts:  # the daemon restarts: the watch list comes back from the saved state
            saved = dog.to_state()
            dog = Watchdog()
            dog.load_state(saved)
        end = now + dt
        while now < end:
            now = min(end, now + INTERVAL)
            look()
    # then nothing more happens: runs that were live die, and time passes; the bound: every resume and
    # retry the watchdog may make, each one waiting out a cooldown and a deadline
    runs = {i: (RunState(at=s.at) if s.running else s) for i, s in runs.items()}
    store_up = True
    bound = (dog.max_resumes + dog.max_retries + 1) * (DEADLINE + COOL) + dog.settle_after + 2 * INTERVAL
    for _tick in range(int(bound / INTERVAL) + 1):
        now += INTERVAL
        look()
    for iid in opened:
        outcome = runs.get(iid, RunState()).outcome
        ended = iid in resolved or (outcome is not None and outcome not in RETRIED) or pages.get(iid, 0) == 1
        assert ended, f"{iid} ended in silence"
        assert pages.get(iid, 0) <= 1, f"{iid} paged {pages[iid]} times"
        assert resolves.get(iid, 0) <= (1 if iid in resolved else 0), f"{iid} resolved {resolves.get(iid)} times"
    assert dog.pending() == []


def test_a_flapping_alert_keeps_its_page_open_and_the_next_incident_takes_it_over() -> None:
    dog = Watchdog(settle_after=30)
    dog.open(incident("a"), DEADLINE, 0)
    assert dog.tick(10, {"a": RunState(outcome="escalated", at=5)}) == []
    dog.close("a", now=12)
    assert dog.tick(15, {}) == [], "not resolved at once: the failure may come back"
    dog.open(incident("b"), DEADLINE, 20)  # the same type on the same target, before a's page was resolved
    assert dog.page_key("b") == "a", "b is under a's page"
    assert dog.tick(50, {"b": RunState(outcome="covered", at=25)}) == [], "a handed its page over"
    dog.close("b", now=60)
    assert dog.tick(70, {}) == []
    [resolve] = dog.tick(91, {})
    assert (resolve.kind, resolve.incident_id, dog.page_key("b")) == ("resolve", "b", "a")


def test_a_page_its_run_sent_after_the_alerts_ended_is_resolved_by_the_incident_that_took_it_over() -> None:
    """The flapping case: the alert resolves while the relapsing fix is up, the run then records that it
    paged (the target flaps), and the crash opens a new incident that a human closes later."""
    dog = Watchdog(settle_after=30)
    dog.open(incident("a"), DEADLINE, 0)
    assert dog.tick(5, {"a": RunState(running=True, at=1)}) == []
    dog.close("a", now=6)  # the alerts ended while the run held its hold window
    assert "a" in dog.pending(), "looked up until it settles"
    assert dog.tick(10, {"a": RunState(running=True, at=1)}) == []
    dog.open(incident("b"), DEADLINE, 12)  # the crash: the same type on the same target
    assert dog.page_key("b") == "a" and "a" not in dog.pending()
    states = {"a": RunState(outcome="escalated", at=11), "b": RunState(outcome="covered", at=14)}
    assert dog.tick(20, states) == []
    dog.close("b", now=100)  # a human fixed it
    assert set(dog.pending()) == {"b", "a"}
    assert dog.tick(110, states) == []
    [resolve] = dog.tick(131, states)
    assert (resolve.kind, resolve.incident_id, dog.page_key("b")) == ("resolve", "b", "a")
    assert dog.tick(140, states) == [] and dog.pending() == []
