# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The policy decision: may this incident be remediated automatically, where, in which batches.

`decide()` is a pure function of the incident type's policy, the targets, and
the facts at one moment (leases, cooldowns, failures, windows, error-budget
burn). It never reads a clock or a store itself, so it is explained by its
inputs alone and its guarantees are property-tested. Every rule that bears
on the answer adds a reason in words.

Order of the rules:
1. never-automate types are denied: preserve state, page a human;
2. a `propose` type whose catalog entry opts in promotes itself to `auto`
   once its track record is ready;
3. a global change freeze or maintenance window turns the run into observe;
4. an open circuit (N failures in the window, not yet reset) demotes
   `auto` to `propose`, and asks for exactly one escalation;
5. targets in a window, with their own circuit open (N failures there),
   cooling down, or leased by another run are skipped;
6. error-budget burn: a fast burn acts at once, a slow burn only observes;
7. `propose` acts only with a human's approval; what is left is split into
   batches of at most the blast radius.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.signals import utc_seconds

MODES = ("observe", "propose", "auto")


@dataclass(frozen=True)
class Policy:
    mode: str = "observe"
    never_automate: bool = False
    blast_percent: float = 10.0
    blast_max: int | None = None
    cooldown: float = 300.0
    circuit_failures: int = 3
    circuit_target_failures: int = 2  # failed automatic runs on one target that stop touching it
    circuit_window: float = 600.0
    circuit_reset: float = 1800.0
    burn_fast: float = 14.4
    burn_slow: float = 6.0
    promote_after: int = 5
    self_promote: bool = False
    # the ladder: the type's steps, least disruptive first, and how many failed attempts in a row skip one;
    # attempts older than the window are forgotten (a skipped step is tried again once they are all older);
    # cumulative: the steps add up (each frees some space), so a step that did not verify on its own is
    # progress, and only the last step of the ladder is counted as failed
    steps: tuple[str, ...] = ("remediate",)
    skip_after: int = 3
    ladder_window: float = 7 * 86400.0
    cumulative: bool = False

    @property
    def lookback(self) -> float:
        """How far back failures can still hold the circuit open: the window, then the reset time."""
        return self.circuit_window + self.circuit_reset


@dataclass(frozen=True)
class Window:
    """A maintenance window or change freeze: [start, end), for some targets or (empty) all."""

    start: float
    end: float
    targets: tuple[str, ...] = ()
    name: str = "window"
    kind: str = "maintenance"

    def covers(self, now: float, target: str | None = None) -> bool:
        if not self.start <= now < self.end:
            return False
        return not self.targets or target is None or target in self.targets


@dataclass(frozen=True)
class Burn:
    """Error-budget burn rates over a short and a long window (multi-window, multi-burn-rate)."""

    fast: float
    slow: float
    # why a pair of windows is not counted (Prometheus holds too little history to fill it): pair -> why
    unmeasured: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Facts:
    now: float
    leases: Mapping[str, tuple[str, float]] = field(default_factory=dict)  # target -> (holder, expires_at)
    cooldowns: Mapping[str, float] = field(default_factory=dict)  # target -> until
    failures: Sequence[float] = ()  # times automatic runs of this type failed
    target_failures: Mapping[str, Sequence[float]] = field(default_factory=dict)  # the same, per target
    circuit_escalated_at: float | None = None  # when the open circuit was escalated, if it was
    # targets whose own open circuit a human was paged for (a flap), and when
    target_circuit_escalated: Mapping[str, float] = field(default_factory=dict)
    windows: Sequence[Window] = ()
    burn: Burn | None = None
    burn_unknown: str | None = None  # why the burn could not be measured, when the type has an SLO
    approved_by: str | None = None  # the human who approved this run's proposal
    ready_for_auto: bool = False  # the track record says so (see track_record)
    step_history: Mapping[str, Sequence[bool]] = field(default_factory=dict)  # step -> verified?, newest first


@dataclass(frozen=True)
class Decision:
    mode: str
    allowed: bool
    reasons: tuple[str, ...]
    targets: tuple[str, ...]
    skipped: Mapping[str, str]
    batches: tuple[tuple[str, ...], ...]
    batch_size: int
    circuit_open: bool
    escalate: bool
    # held back only by what ends by itself (a cooldown, another run's lease): when to decide again
    # instead of paging; None when a human must look (or nothing was held back)
    retry_at: float | None = None
    # held back only by targets whose open circuit a human was already paged for: no second page
    already_paged: bool = False
    steps: tuple[str, ...] = ()  # the ladder's steps to try, in order (see ladder())

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "allowed": self.allowed, "reasons": list(self.reasons),
            "targets": list(self.targets), "skipped": dict(self.skipped),
            "batches": [list(b) for b in self.batches], "batch_size": self.batch_size,
            "serial": self.batch_size, "max_fail_percentage": 0,
            "circuit_open": self.circuit_open, "escalate": self.escalate, "retry_at": self.retry_at,
            "already_paged": self.already_paged, "steps": list(self.steps),
        }


def batch_size(policy: Policy, group_size: int) -> int:
    """Blast radius: percent of the group per batch, at least 1, at most blast_max."""
    size = max(1, math.floor(max(group_size, 1) * policy.blast_percent / 100.0))
    if policy.blast_max is not None:
        size = min(size, max(1, policy.blast_max))
    return size


def circuit_open(policy: Policy, failures: Sequence[float], now: float) -> tuple[bool, int]:
    recent = [t for t in failures if 0 <= now - t <= policy.circuit_window]
    if len(recent) < policy.circuit_failures:
        return False, len(recent)
    return now - max(recent) < policy.circuit_reset, len(recent)


def target_circuit_open(policy: Policy, failures: Sequence[float], now: float) -> bool:
    """One target's own circuit: its failures counted against the per-target threshold."""
    per_target = Policy(circuit_failures=policy.circuit_target_failures, circuit_window=policy.circuit_window,
                        circuit_reset=policy.circuit_reset)
    return circuit_open(per_target, failures, now)[0]


def decide(itype: str, policy: Policy, targets: Sequence[str], group_size: int, holder: str,
           facts: Facts) -> Decision:
    now = facts.now
    reasons: list[str] = []
    skipped: dict[str, str] = {}
    unique = tuple(dict.fromkeys(targets))
    size = batch_size(policy, max(group_size, len(unique)))

    if policy.never_automate:
        reasons.append(f"{itype} is never automated: preserve the state and page a human")
        return Decision("deny", False, tuple(reasons), (), {t: "never automated" for t in unique}, (), size,
                        False, True)
    if not unique:
        reasons.append("no target: nothing to act on")
        return Decision("deny", False, tuple(reasons), (), {}, (), size, False, False)

    mode = policy.mode
    reasons.append(f"{itype} runs in {mode} mode by the catalog")
    if mode == "propose" and policy.self_promote and facts.ready_for_auto:
        mode = "auto"
        reasons.append(f"promoted itself to auto: its last {policy.promote_after} approved runs all verified "
                       "and the catalog entry opts in to self-promotion")

    for window in facts.windows:
        if not window.targets and window.covers(now):
            ends = utc_seconds(window.end)
            reasons.append(f"{window.kind} '{window.name}' covers everything until {ends}: observe only")
            mode = "observe"

    is_open, recent = circuit_open(policy, facts.failures, now)
    escalate = False
    if is_open:
        reasons.append(f"circuit open: {recent} failed automatic runs of {itype} within "
                       f"{policy.circuit_window:.0f}s (threshold {policy.circuit_failures}); "
                       f"it resets {policy.circuit_reset:.0f}s after the last failure")
        if mode == "auto":
            mode = "propose"
            reasons.append("demoted to propose while the circuit is open: a human approves each run")
        escalate = facts.circuit_escalated_at is None
        if escalate:
            reasons.append("the circuit has just opened: escalate once")

    waits: dict[str, float] = {}  # skipped targets that are free again by themselves: when
    paged: set[str] = set()  # skipped targets whose open circuit a human already has
    for target in unique:
        covering = next((w for w in facts.windows if w.targets and w.covers(now, target)), None)
        lease = facts.leases.get(target)
        until = facts.cooldowns.get(target)
        if covering is not None:
            skipped[target] = f"in {covering.kind} '{covering.name}' until {utc_seconds(covering.end)}"
        elif target_circuit_open(policy, facts.target_failures.get(target, ()), now):
            skipped[target] = (f"circuit open for this target: {len(facts.target_failures[target])} failed "
                               f"automatic runs here (threshold {policy.circuit_target_failures}); "
                               "a human looks first")
            told = facts.target_circuit_escalated.get(target)
            if told is not None and told >= max(facts.target_failures[target]):
                paged.add(target)
                skipped[target] += f" (paged at {utc_seconds(told)})"
        elif until is not None and until > now:
            skipped[target] = f"cooling down until {utc_seconds(until)}"
            waits[target] = until
        elif lease is not None and lease[0] != holder and lease[1] > now:
            skipped[target] = f"locked by {lease[0]} until {utc_seconds(lease[1])}"
            waits[target] = lease[1]
    for target, why in skipped.items():
        reasons.append(f"{target}: {why}")

    if facts.burn is not None:
        for pair, why in facts.burn.unmeasured.items():
            reasons.append(f"{pair} error-budget burn not counted: {why}")
        if facts.burn.fast >= policy.burn_fast:
            reasons.append(f"error budget burning fast ({facts.burn.fast:.1f}x >= {policy.burn_fast}x): act at once")
        elif facts.burn.slow >= policy.burn_slow:
            reasons.append(f"error budget burning slowly ({facts.burn.slow:.1f}x): observe and notify only")
            if mode == "auto":
                mode = "observe"
        else:
            reasons.append("no significant error-budget burn")
    elif facts.burn_unknown:
        reasons.append(f"error-budget burn unknown ({facts.burn_unknown}): decided without it")

    steps, step_reasons = ladder(policy.steps, facts.step_history, policy.skip_after)
    reasons.extend(step_reasons)
    eligible = tuple(t for t in unique if t not in skipped) if steps else ()
    if not steps:
        escalate = True
        reasons.append(f"every step of the {itype} ladder kept failing: a human looks first")
    elif not eligible:
        reasons.append("no target may be acted on now")
    allowed = mode == "auto" and bool(eligible)
    if mode == "propose" and eligible:
        if facts.approved_by:
            allowed = True
            reasons.append(f"approved by {facts.approved_by}")
        else:
            reasons.append("waiting for a human approval before acting")
    batches = tuple(eligible[i:i + size] for i in range(0, len(eligible), size))
    reasons.append(f"blast radius: batches of at most {size} of a group of {max(group_size, len(unique))}")
    retry_at = None
    if not eligible and mode in ("auto", "propose") and not escalate and set(waits) == set(skipped):
        retry_at = min(waits.values())
        reasons.append(f"decided again at {utc_seconds(retry_at)}, when the first target is free; no page before that")
    already_paged = not eligible and not escalate and bool(paged) and set(paged) == set(skipped)
    if already_paged:
        reasons.append("a human was already paged for every held-back target: no second page")
    return Decision(mode, allowed, tuple(reasons), eligible, skipped, batches, size, is_open, escalate, retry_at,
                    already_paged, steps)


def ladder(steps: Sequence[str], history: Mapping[str, Sequence[bool]],
           skip_after: int) -> tuple[tuple[str, ...], list[str]]:
    """The steps to try, least disruptive first (the catalog's order), and the reasons in words.

    Each step's verified-success rate over its recent attempts on this type is reported; a step whose
    last `skip_after` attempts all failed to verify is skipped, so a fix that never works stops being
    tried first. It is tried again once those attempts are older than the ladder's window (the caller
    reads only the attempts within it).
    """
    kept: list[str] = []
    reasons: list[str] = []
    for step in steps:
        tried = list(history.get(step, ()))
        if not tried:
            reasons.append(f"step {step}: not tried on this type yet")
            kept.append(step)
            continue
        rate = f"{sum(tried)} of its last {len(tried)} attempts verified"
        if len(tried) >= skip_after and not any(tried[:skip_after]):
            reasons.append(f"step {step} skipped: its last {skip_after} attempts all failed to verify ({rate})")
        else:
            reasons.append(f"step {step}: {rate}")
            kept.append(step)
    return tuple(kept), reasons


@dataclass(frozen=True)
class Relapse:
    """What a fix that verified and then did not hold comes to (see `relapse`)."""

    flaps: bool  # the target's circuit is open now: a human takes it, nothing automatic after this
    why: str


def relapse(itype: str, target: str, policy: Policy, target_failures: Sequence[float], now: float,
            hold: float) -> Relapse:
    """A verified fix failed again within its hold window: a failed run on the target's circuit.

    `target_failures` are the target's failed automatic runs of `itype`, this one included. While its
    circuit stays closed the incident is decided again once the cooldown ends (no page yet: the next try
    may hold); the failure that opens it makes the target a flapping one: one escalation says so, and the
    open circuit keeps every automatic run off the target until it resets.
    """
    recent = [t for t in target_failures if 0 <= now - t <= policy.circuit_window]
    if target_circuit_open(policy, target_failures, now):
        return Relapse(True, f"{itype} on {target} flaps: the fix verified and failed again within its "
                             f"{hold:.0f}s hold window {len(recent)} times in {policy.circuit_window:.0f}s "
                             f"(threshold {policy.circuit_target_failures}); the target's circuit is open, "
                             f"nothing automatic runs on it until {policy.circuit_reset:.0f}s pass without "
                             "a failure")
    return Relapse(False, f"{itype} on {target}: the fix verified, then failed again within its {hold:.0f}s "
                          f"hold window ({len(recent)} of {policy.circuit_target_failures} failures that open "
                          "the target's circuit); decided again when the cooldown ends")


def track_record(itype: str, mode: str, outcomes: Sequence[Mapping[str, Any]], proposed: Sequence[Mapping[str, Any]],
                 circuit_is_open: bool, promote_after: int = 5) -> dict[str, Any]:
    """How runs of a type went, newest first, and what that says about its mode.

    `outcomes` are its newest runs of any mode (counted); `proposed` its newest
    runs in `propose` mode, read apart so that automatic runs never push them
    out of the window. A `propose` type whose last `promote_after` approved
    runs all verified is reported ready for `auto`; an `auto` type whose
    circuit is open runs as `propose` until it resets (demoted).
    """
    counts: dict[str, int] = {}
    for item in outcomes:
        counts[item["outcome"]] = counts.get(item["outcome"], 0) + 1
    approved = [o for o in proposed if o["outcome"] not in ("rejected", "timed_out")][:promote_after]
    ready = (mode == "propose" and len(approved) == promote_after
             and all(o["outcome"] == "verified" for o in approved))
    demoted = mode == "auto" and circuit_is_open
    if ready:
        verdict = f"ready for auto: the last {promote_after} approved runs all verified without rollback"
    elif demoted:
        verdict = "demoted: its automatic runs kept failing, so it runs as propose until the circuit resets"
    elif mode == "propose":
        verdict = (f"stays propose: {sum(1 for o in approved if o['outcome'] == 'verified')} of the last "
                   f"{promote_after} approved runs verified ({len(approved)} on record)")
    else:
        verdict = f"runs as {mode}"
    return {"incident_type": itype, "mode": mode, "runs": len(outcomes), "outcomes": counts,
            "ready_for_auto": ready, "demoted": demoted, "verdict": verdict}
