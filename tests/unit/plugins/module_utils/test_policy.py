from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.policy import (
    Burn,
    Facts,
    Policy,
    Window,
    batch_size,
    decide,
    ladder,
    relapse,
)

TARGETS = [f"h{i}" for i in range(12)]
AUTO = Policy(mode="auto", blast_percent=25, circuit_failures=3, circuit_window=600, circuit_reset=1800)


def test_a_clean_auto_decision_allows_and_batches() -> None:
    d = decide("service_down", AUTO, TARGETS[:8], 8, "run-1", Facts(now=1000))
    assert d.allowed and d.mode == "auto" and d.batch_size == 2
    assert d.batches == (("h0", "h1"), ("h2", "h3"), ("h4", "h5"), ("h6", "h7"))
    assert any("blast radius" in r for r in d.reasons)


def test_never_automate_is_denied_and_escalated() -> None:
    d = decide("data_corruption", Policy(mode="auto", never_automate=True), ["db1"], 1, "r", Facts(now=0))
    assert (d.mode, d.allowed, d.escalate, d.batches) == ("deny", False, True, ())
    assert "never automated" in d.reasons[0]


def test_global_freeze_observes_only() -> None:
    freeze = Window(start=0, end=100, name="black friday", kind="freeze")
    d = decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=50, windows=[freeze]))
    assert not d.allowed and d.mode == "observe"
    assert any("freeze 'black friday'" in r for r in d.reasons)
    assert decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=100, windows=[freeze])).allowed


def test_slow_burn_observes_fast_burn_acts() -> None:
    slow = decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=0, burn=Burn(fast=2, slow=7)))
    fast = decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=0, burn=Burn(fast=20, slow=7)))
    assert (slow.mode, slow.allowed) == ("observe", False)
    assert (fast.mode, fast.allowed) == ("auto", True)
    assert any("burning fast" in r for r in fast.reasons)


@settings(max_examples=300)
@given(n=st.integers(min_value=0, max_value=8), spread=st.floats(min_value=0, max_value=100))
def test_the_nth_failure_opens_the_circuit_and_escalates_once(n: int, spread: float) -> None:
    failures = [1000 + i * spread for i in range(n)]
    now = failures[-1] + 1 if failures else 1000
    first = decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=now, failures=failures))
    in_window = sum(1 for t in failures if now - t <= AUTO.circuit_window)
    if in_window >= AUTO.circuit_failures:
        assert first.circuit_open and not first.allowed and first.mode == "propose"
        assert first.escalate
        again = decide("service_down", AUTO, ["h1"], 1, "r",
                       Facts(now=now + 5, failures=failures, circuit_escalated_at=now))
        assert not again.allowed and not again.escalate, "exactly one escalation"
        reset = decide("service_down", AUTO, ["h1"], 1, "r",
                       Facts(now=max(failures) + AUTO.circuit_reset, failures=failures, circuit_escalated_at=now))
        assert not reset.circuit_open
    else:
        assert not first.circuit_open and first.allowed and not first.escalate


@settings(max_examples=300)
@given(until=st.floats(min_value=0, max_value=2000), now=st.floats(min_value=0, max_value=2000))
def test_cooldown_holds_exactly(until: float, now: float) -> None:
    d = decide("service_down", AUTO, ["h1", "h2"], 2, "r", Facts(now=now, cooldowns={"h1": until}))
    assert ("h1" in d.targets) == (until <= now)
    assert "h2" in d.targets


@settings(max_examples=300)
@given(holder=st.sampled_from(["r", "other"]), expires=st.floats(min_value=0, max_value=2000),
       now=st.floats(min_value=0, max_value=2000))
def test_a_target_leased_by_another_run_is_never_acted_on(holder: str, expires: float, now: float) -> None:
    d = decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=now, leases={"h1": (holder, expires)}))
    held_by_other = holder != "r" and expires > now
    assert d.allowed == (not held_by_other)


@settings(max_examples=300)
@given(targets=st.lists(st.sampled_from(TARGETS), max_size=12), group=st.integers(min_value=0, max_value=500),
       percent=st.floats(min_value=0.1, max_value=100), cap=st.none() | st.integers(min_value=1, max_value=20),
       mode=st.sampled_from(["observe", "propose", "auto"]), never=st.booleans())
def test_batches_respect_the_blast_radius_and_cover_the_eligible(targets: list[str], group: int, percent: float,
                                                                 cap: int | None, mode: str, never: bool) -> None:
    policy = Policy(mode=mode, never_automate=never, blast_percent=percent, blast_max=cap)
    d = decide("t", policy, targets, group, "r", Facts(now=0))
    assert d.batch_size >= 1 and (cap is None or d.batch_size <= cap)
    assert all(1 <= len(b) <= d.batch_size for b in d.batches)
    assert [t for b in d.batches for t in b] == list(d.targets)
    if never:
        assert not d.allowed and d.targets == ()
    assert d.allowed == (mode == "auto" and not never and bool(d.targets))


def test_batch_size_rounds_down_but_never_to_zero() -> None:
    assert batch_size(Policy(blast_percent=10), 5) == 1
    assert batch_size(Policy(blast_percent=10), 100) == 10
    assert batch_size(Policy(blast_percent=10, blast_max=3), 100) == 3


PROPOSE = Policy(mode="propose", circuit_failures=3, circuit_window=600, circuit_reset=1800)


@settings(max_examples=300)
@given(mode=st.sampled_from(["observe", "propose", "auto"]), never=st.booleans(), frozen=st.booleans(),
       cooling=st.booleans(), approver=st.sampled_from([None, "ana"]))
def test_an_approval_only_unblocks_propose_and_never_overrides_a_guardrail(
        mode: str, never: bool, frozen: bool, cooling: bool, approver: str | None) -> None:
    policy = Policy(mode=mode, never_automate=never)
    facts = Facts(now=1000, approved_by=approver, cooldowns={"h1": 2000} if cooling else {},
                  windows=[Window(0, 5000, (), "freeze", "freeze")] if frozen else [])
    d = decide("service_hung", policy, ["h1"], 4, "r", facts)
    expected = not never and not frozen and not cooling and (mode == "auto" or (mode == "propose" and bool(approver)))
    assert d.allowed == expected
    if d.allowed and mode == "propose":
        assert "approved by ana" in d.reasons


def test_propose_waits_for_a_human_then_acts_when_approved() -> None:
    waiting = decide("service_hung", PROPOSE, ["h1"], 4, "r", Facts(now=10))
    assert (waiting.mode, waiting.allowed, waiting.targets) == ("propose", False, ("h1",))
    assert "waiting for a human approval before acting" in waiting.reasons
    approved = decide("service_hung", PROPOSE, ["h1"], 4, "r", Facts(now=10, approved_by="ana"))
    assert (approved.mode, approved.allowed, approved.batches) == ("propose", True, (("h1",),))


@settings(max_examples=200)
@given(opted_in=st.booleans(), ready=st.booleans(), failures=st.integers(min_value=0, max_value=5))
def test_self_promotion_needs_the_opt_in_a_ready_record_and_a_closed_circuit(
        opted_in: bool, ready: bool, failures: int) -> None:
    policy = Policy(mode="propose", self_promote=opted_in, circuit_failures=3)
    facts = Facts(now=1000, ready_for_auto=ready, failures=[990.0] * failures)
    d = decide("t", policy, ["h1"], 4, "r", facts)
    promoted = opted_in and ready and failures < 3
    assert d.allowed == promoted
    assert (d.mode == "auto") == promoted
    assert any("promoted itself" in r for r in d.reasons) == (opted_in and ready)


@settings(max_examples=300)
@given(n=st.integers(min_value=0, max_value=4), age=st.floats(min_value=0, max_value=3000))
def test_a_target_whose_own_fixes_keep_failing_is_left_to_a_human(n: int, age: float) -> None:
    policy = Policy(mode="auto", circuit_failures=5, circuit_target_failures=2, circuit_window=600,
                    circuit_reset=1800)
    now = 10_000.0
    facts = Facts(now=now, target_failures={"h1": [now - age] * n})
    d = decide("service_down", policy, ["h1", "h2"], 8, "r", facts)
    tripped = n >= 2 and age <= 600
    assert ("h1" in d.skipped) == tripped
    assert "h2" in d.targets and not d.circuit_open, "the other target and the type are unaffected"
    if tripped:
        assert "circuit open for this target" in d.skipped["h1"]


@settings(max_examples=200, deadline=None)
@given(until=st.floats(1001, 5000), lease_end=st.floats(1001, 5000), locked=st.booleans(), cooling=st.booleans(),
       open_circuit=st.booleans())
def test_held_back_only_by_what_ends_by_itself_is_decided_again_then_not_paged(
        until: float, lease_end: float, locked: bool, cooling: bool, open_circuit: bool) -> None:
    facts = Facts(now=1000, cooldowns={"h1": until} if cooling else {},
                  leases={"h1": ("other-run", lease_end)} if locked else {},
                  target_failures={"h1": [990.0, 995.0]} if open_circuit else {})
    d = decide("service_down", AUTO, ["h1"], 1, "run", facts)
    if open_circuit or not (locked or cooling):
        assert d.retry_at is None, "a target a human must look at, or a free one, is not deferred"
    else:
        assert not d.allowed and d.retry_at == (until if cooling else lease_end)
        assert any("decided again at" in r for r in d.reasons) and not d.escalate


def test_a_fix_that_does_not_hold_counts_and_the_failure_that_opens_the_circuit_flaps() -> None:
    first = relapse("service_down", "h1", AUTO, [1000.0], 1000, hold=20)
    assert not first.flaps and "decided again when the cooldown ends" in first.why
    second = relapse("service_down", "h1", AUTO, [1000.0, 1070.0], 1070, hold=20)
    assert second.flaps and "flaps" in second.why and "20s hold window 2 times" in second.why
    assert decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=1100, target_failures={"h1": [1000.0, 1070.0]})
                  ).targets == (), "no automatic action after it flaps"
    old = relapse("service_down", "h1", AUTO, [100.0, 1070.0], 1070, hold=20)
    assert not old.flaps, "failures outside the circuit's window do not count"


def test_a_target_whose_open_circuit_was_paged_is_not_paged_again() -> None:
    flapped = {"h1": [1000.0, 1070.0]}
    first = decide("service_down", AUTO, ["h1"], 1, "r", Facts(now=1100, target_failures=flapped))
    assert not first.allowed and not first.already_paged and first.retry_at is None, "the first one pages"
    paged = {"h1": 1070.0}
    told = decide("service_down", AUTO, ["h1"], 1, "r",
                  Facts(now=1100, target_failures=flapped, target_circuit_escalated=paged))
    assert not told.allowed and told.already_paged and "paged at" in told.skipped["h1"]
    later = {"h1": [1000.0, 1070.0, 1200.0]}
    again = decide("service_down", AUTO, ["h1"], 1, "r",
                   Facts(now=1300, target_failures=later, target_circuit_escalated=paged))
    assert not again.already_paged, "a failure after the page is news: it pages"


STEPS = ("restart", "restore_config", "reboot")
HISTORIES = st.dictionaries(st.sampled_from(STEPS), st.lists(st.booleans(), max_size=8), max_size=3)


@settings(max_examples=300, deadline=None)
@given(history=HISTORIES, skip_after=st.integers(1, 4), step=st.sampled_from(STEPS),
       older=st.lists(st.booleans(), max_size=5))
def test_the_ladder_skips_a_step_only_for_its_last_k_failures(history: dict[str, list[bool]], skip_after: int,
                                                              step: str, older: list[bool]) -> None:
    """What skips a step, said as behaviour rather than as the rule: a verified attempt brings it back,
    k failures in a row take it out, and attempts older than the last k change nothing."""
    kept, reasons = ladder(STEPS, history, skip_after)
    tried = history.get(step, [])
    back = ladder(STEPS, {**history, step: [True, *tried]}, skip_after)[0]
    assert step in back, "a step whose newest attempt verified is tried"
    out = ladder(STEPS, {**history, step: [False] * skip_after + tried}, skip_after)[0]
    assert step not in out, f"{skip_after} failed attempts in a row, newest first, skip it"
    if len(tried) >= skip_after:
        padded = ladder(STEPS, {**history, step: tried + older}, skip_after)[0]
        assert (step in padded) == (step in kept), "attempts older than the last k do not count"
    else:
        assert step in kept, "fewer than k attempts never skip a step"
    assert list(kept) == [s for s in STEPS if s in kept], "least disruptive first, as the catalog orders them"
    assert len(reasons) == len(STEPS) and all(any(s in r for r in reasons) for s in STEPS), "each step is explained"
    policy = Policy(mode="auto", steps=STEPS, skip_after=skip_after)
    d = decide("service_down", policy, ["h1"], 1, "r", Facts(now=0, step_history=history))
    assert d.steps == kept
    if not kept:
        assert not d.allowed and d.escalate and d.retry_at is None, "a ladder that never works goes to a human"
    else:
        assert d.allowed
