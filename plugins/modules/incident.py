#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: incident
short_description: Record the outcome of a remediation run, or an event, in the incident store
version_added: 0.1.0
description:
  - With O(action=finish), records the outcome of a run on each target, then
    (only while the run still holds the target's lease with its fencing
    token) starts the cooldown when the run changed something and releases
    the lease. A run whose lease was taken over by a newer run is fenced off
    and changes nothing but the record of its outcome.
  - With O(action=audit), appends one event to the append-only audit trail.
  - With O(action=step), records whether one step of the type's ladder verified on each target (what
    the guard's ladder learns from).
  - With O(action=retain), keeps the audit trail bounded. Every month (UTC) older than the O(keep_months)
    newest is written whole to O(archive_dir) as C(audit-YYYY-MM.jsonl) (synced; its sha256 is kept in the
    store), then its rows are dropped at once. The trail stays append-only otherwise - the database refuses
    to delete a row of a month that is not archived, and to update any.
  - With O(action=fence), fails unless the run still holds every target's lease with its fencing token,
    by the store's clock. A run calls it before each change, so a run that could not renew its lease (its
    heartbeat lost the store, or the lease was taken over) stops before its next change.
  - O(outcome=not_held) is a fix that verified and then failed again within the catalog's hold window. It
    counts on the target's circuit. The failure that opens the circuit is recorded as C(escalated), with
    C(flaps) true in RV(relapse), and the playbook pages a human that the target flaps. Before that, no page; the
    watchdog decides the incident again when the cooldown ends.
  - Outcomes feed the circuit breaker (failed automatic runs) and the track
    record of the incident type (see M(selfheal.core.incident_info)).
author:
  - selfheal.core developers (@selfheal-core)
extends_documentation_fragment:
  - selfheal.core.attributes
  - selfheal.core.store
attributes:
  check_mode:
    support: full
    details: In check mode nothing is written; the result says what would be.
  diff_mode:
    support: none
options:
  action:
    description: What to record.
    type: str
    choices: [finish, audit, fence, step, retain]
    default: finish
  incident_id:
    description:
      - Id of the incident. Required but with O(action=audit), where an event that belongs to no incident yet
        (a fault injected on the lab) has none.
    type: str
  incident_type:
    description: Incident type. Required with O(action=finish).
    type: str
  holder:
    description: Who ran (the holder given to M(selfheal.core.guard)).
    type: str
    required: true
  targets:
    description: Targets the run concerned (O(action=finish)).
    type: list
    elements: str
    default: []
  tokens:
    description: Fencing token of each target's lease, as M(selfheal.core.guard) returned them.
    type: dict
    default: {}
  outcome:
    description:
      - Outcome of the run (O(action=finish)). V(unpaged) is a run that needed a human and could not page one
        (the notification failed); the daemon's watchdog pages for it at once.
    type: str
    choices: [verified, failed, rolled_back, escalated, not_held, unpaged, rejected, timed_out]
  mode:
    description: Mode the run took (C(auto) runs count for the circuit breaker).
    type: str
    choices: [auto, propose, observe, deny]
    default: auto
  acted:
    description: Whether the run changed something; only then does the cooldown start.
    type: bool
    default: true
  cooldown:
    description: Seconds of cooldown on each target after a run that acted.
    type: float
    default: 300
  step:
    description: The step of the ladder (O(action=step)).
    type: str
  verified:
    description: Whether the step verified (O(action=step)).
    type: bool
    default: false
  counted:
    description:
      - With O(action=step) and O(verified=false), whether the failure counts on the ladder (see
        M(selfheal.core.guard)'s C(steps)). Not counted - only in the audit trail, as C(step_failed) with
        C(counted=false) - is a step whose verification's data source could not be asked, or a step of a
        cumulative ladder that made progress without verifying on its own.
    type: bool
    default: true
  acted_at:
    description:
      - With O(action=step), when the step's action was done (Unix time). The audit trail then keeps an
        C(action_done) event at that time with O(details) (the action and the prior state it recorded),
        before the step's result (C(verified_healthy) or C(step_failed)). Without it the step acted on nothing.
      - With O(action=audit), when the event happened (Unix time), if not now. A chaos run records the time
        it began, before the fault, so the fault is on record before the first alert it causes.
    type: float
  verified_at:
    description:
      - With O(action=step) and O(verified=true), when the verification passed (Unix time), before the hold
        window that followed it; the C(verified_healthy) event is kept at that time, with C(held_until) (now),
        so the time to recovery ends when the target was verified healthy. By default, now.
    type: float
  catalog:
    description:
      - Path of the catalog, for the circuit and hold window of O(incident_type). Required with
        O(outcome=not_held).
    type: path
  known_good:
    description:
      - With O(action=finish) and O(outcome=verified), what the fix left on each target that a later run may
        restore (by key, e.g. C(service:demo) with its configuration); the guard returns it as the target's
        last known good state. Keys not given are kept.
    type: dict
    default: {}
  keep_months:
    description: With O(action=retain), how many months of the audit trail stay in the store (the current one counts).
    type: int
    default: 13
  archive_dir:
    description:
      - With O(action=retain), the directory on the controller the archived months are written to; by default
        C(audit-archive) beside the local store (see O(store)).
    type: path
  event:
    description: Name of the audit event (O(action=audit)).
    type: str
  details:
    description:
      - With O(action=audit), facts stored with the audit event.
      - With O(action=finish), the evidence of the run stored with its outcome in the audit trail, such as
        the action taken, the state before it (what a rollback restores) and the verification.
      - With O(action=step), the action the step took and the prior state it recorded.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Record | the run verified; cooldown and release
  selfheal.core.incident:
    store: /var/lib/selfheal/store.db
    incident_id: "{{ incident_id }}"
    incident_type: service_down
    holder: "{{ guard.holder }}"
    targets: "{{ guard.decision.targets }}"
    tokens: "{{ guard.leases }}"
    outcome: verified
  delegate_to: localhost

- name: Record | a proposal was sent
  selfheal.core.incident:
    store: /var/lib/selfheal/store.db
    action: audit
    incident_id: "{{ incident_id }}"
    holder: "{{ guard.holder }}"
    event: proposal_sent
    details:
      targets: "{{ guard.decision.targets }}"
  delegate_to: localhost
"""

RETURN = r"""
journaled:
  description:
    - When the store could not take the outcome (locked, read-only, full), the local journal it waits in; it
      is recorded in the store by the next run or look of the watchdog that finds the store writable.
  returned: when the store could not be written
  type: str
  sample: /root/.local/state/selfheal/journal-0123456789abcdef.jsonl
recorded:
  description: Targets whose outcome was recorded.
  returned: action=finish
  type: list
  elements: str
released:
  description: Targets whose lease was released (and cooldown started when the run acted).
  returned: action=finish
  type: list
  elements: str
fenced_out:
  description: Targets whose lease had been taken over by a newer run; nothing but the outcome was recorded.
  returned: action=finish
  type: list
  elements: str
archived:
  description: With O(action=retain), each month archived and dropped (C(month), C(part), C(path), C(sha256), C(rows)).
  returned: action=retain
  type: list
  elements: dict
outcome:
  description: The outcome recorded (C(escalated) when a fix that did not hold made the target flap).
  returned: action=finish
  type: str
relapse:
  description: With O(outcome=not_held), whether the target now flaps (C(flaps)) and why, in words (C(why)).
  returned: outcome=not_held
  type: dict
  sample: {flaps: true, why: "service_down on web1 flaps: ..."}
"""

import os
import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils import journal
from ansible_collections.selfheal.core.plugins.module_utils.catalog import PolicyFileError, load_catalog
from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.policy import Relapse, relapse
from ansible_collections.selfheal.core.plugins.module_utils.store import (
    OUTCOMES,
    STORE_ARGUMENT_SPEC,
    Store,
    StoreError,
    local_store,
)


def _fence(p: dict[str, Any]) -> dict[str, Any]:
    """Fail unless the run still holds each target's lease: it stops before its next change."""
    try:
        with Store(p["store"], password=p["store_password"], timeout=2.0) as store:
            now = store.clock()
            lost = [t for t in p["targets"]
                    if p["tokens"].get(t) is None or not store.fenced(t, p["holder"], int(p["tokens"][t]), now)]
    except StoreError as exc:
        raise ModuleError(f"the lease cannot be checked, so the run stops before its next change: {exc}") from exc
    if lost:
        raise ModuleError(f"the lease of {', '.join(lost)} is no longer held by {p['holder']} (it expired or was "
                          "taken over): the run stops before its next change")
    return {"changed": False, "held": p["targets"]}


def _relapse(p: dict[str, Any], store: Store, target: str, now: float) -> Relapse:
    try:
        itype = load_catalog(p["catalog"]).get(p["incident_type"])
    except PolicyFileError as exc:
        raise ModuleError(f"outcome=not_held: {exc}") from exc
    if itype is None:
        raise ModuleError(f"outcome=not_held: incident type {p['incident_type']!r} is not in {p['catalog']}")
    policy = itype.policy
    failures = store.failures_by_target(itype.name, [target], since=now - policy.lookback).get(target, [])
    return relapse(itype.name, target, policy, [*failures, now], now, itype.hold)


def _step(p: dict[str, Any]) -> dict[str, Any]:
    """Whether one step of the ladder verified on each target (what the guard's ladder learns from), and in
    the audit trail the action it took (at O(acted_at), with the prior state) and then its result."""
    result = "verified_healthy" if p["verified"] else "step_failed"
    try:
        with Store(p["store"], password=p["store_password"]) as store:
            now = store.clock()
            for target in p["targets"]:
                if p["verified"] or p["counted"]:
                    store.record_step(p["incident_type"], p["step"], target, p["verified"], now)
                if p["acted_at"] is not None:
                    store.audit("action_done", p["holder"], {"target": target, "step": p["step"], **p["details"]},
                                p["incident_id"], p["acted_at"])
                at = p["verified_at"] if p["verified"] and p["verified_at"] is not None else now
                store.audit(result, p["holder"], {"target": target, "step": p["step"],
                                                  **({} if p["verified"] or p["counted"] else {"counted": False}),
                                                  **({"held_until": now} if at != now else {})},
                            p["incident_id"], min(at, now))
    except StoreError as exc:  # the ladder learns a little less; the run goes on
        return {"changed": False, "warnings": [f"the step's result was not recorded: {exc}"]}
    return {"changed": True}


def _retain(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """Archive, then drop, the months of the audit trail older than the ones kept."""
    if check_mode:
        return {"changed": False, "archived": []}
    try:
        with Store(p["store"], password=p["store_password"]) as store:
            directory = p["archive_dir"] or os.path.join(os.path.dirname(local_store()), "audit-archive")
            archived = store.archive_months(p["keep_months"], directory, store.clock())
    except StoreError as exc:
        raise ModuleError(f"nothing archived or dropped: {exc}") from exc
    return {"changed": bool(archived), "archived": archived}


def _record(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    if p["action"] == "fence":
        # a check-mode run took no lease (the guard only decided): it changes nothing to be fenced from
        return {"changed": False, "held": p["targets"]} if check_mode else _fence(p)
    if p["action"] == "retain":
        return _retain(p, check_mode)
    if p["action"] == "step" and not check_mode:
        return _step(p)
    if check_mode:
        return {"changed": True, "recorded": [], "released": [], "fenced_out": []}
    now = time.time()
    try:
        store = Store(p["store"], password=p["store_password"])
    except StoreError as exc:
        return _journaled(p, now, exc)
    with store:
        try:
            now = store.clock()
            journal.replay(store)  # what earlier runs could not record catches up first
        except StoreError as exc:
            return _journaled(p, now, exc)
        return _finish(p, store, now)


def _finish(p: dict[str, Any], store: Store, now: float) -> dict[str, Any]:
    recorded: list[str] = []
    released: list[str] = []
    fenced_out: list[str] = []
    try:
        if p["action"] == "audit":
            at = now if p["acted_at"] is None else p["acted_at"]
            store.audit(p["event"], p["holder"], p["details"], p["incident_id"], at)
            return {"changed": True}
        outcome, relapsed = p["outcome"], None
        for target in p["targets"]:
            if p["outcome"] == "not_held":
                relapsed = _relapse(p, store, target, now)
                outcome = "escalated" if relapsed.flaps else "not_held"
                if relapsed.flaps:  # the playbook pages that it flaps: later decisions on it page nobody again
                    store.mark_circuit_escalated(p["incident_type"], now, target)
            store.record_outcome(p["incident_id"], p["incident_type"], target, p["mode"], outcome, now,
                                 known_good=p["known_good"])
            recorded.append(target)
            token = p["tokens"].get(target)
            if token is None:
                continue
            if not store.fenced(target, p["holder"], int(token), now):
                fenced_out.append(target)
                continue
            if p["acted"]:
                store.set_cooldown(target, now + p["cooldown"])
            store.release(target, p["holder"], int(token))
            released.append(target)
        summary = {"outcome": outcome, "mode": p["mode"], "acted": p["acted"], "targets": p["targets"],
                   "released": released,
                   "fenced_out": fenced_out, **({"evidence": p["details"]} if p["details"] else {}),
                   **({"relapse": {"flaps": relapsed.flaps, "why": relapsed.why}} if relapsed else {})}
        store.audit("finished", p["holder"], summary, p["incident_id"], now)
    except StoreError as exc:
        if recorded:
            raise ModuleError(f"recording stopped after {recorded}: {exc}") from exc
        return _journaled(p, now, exc)
    result = {"changed": True, "recorded": recorded, "released": released, "fenced_out": fenced_out,
              "outcome": outcome}
    if relapsed is not None:
        result["relapse"] = {"flaps": relapsed.flaps, "why": relapsed.why}
    return result


def _journaled(p: dict[str, Any], now: float, exc: StoreError) -> dict[str, Any]:
    """The store cannot take the outcome (or the audit event): keep it in the local journal, to be replayed
    into the store by the next record that reaches it."""
    if p["action"] == "audit":
        return _journal_write(p, {"kind": "audit", "event": p["event"], "holder": p["holder"],
                                  "details": p["details"], "incident_id": p["incident_id"],
                                  "at": now if p["acted_at"] is None else p["acted_at"]}, exc)
    if p["action"] != "finish":
        raise ModuleError(f"nothing recorded: {exc}")
    return _journal_write(p, {
        "incident_id": p["incident_id"], "incident_type": p["incident_type"], "targets": p["targets"],
        "mode": p["mode"], "outcome": p["outcome"], "holder": p["holder"], "at": now, "known_good": p["known_good"],
        "summary": {"outcome": p["outcome"], "mode": p["mode"], "acted": p["acted"], "targets": p["targets"],
                    **({"evidence": p["details"]} if p["details"] else {})}}, exc)


def _journal_write(p: dict[str, Any], record: dict[str, Any], exc: StoreError) -> dict[str, Any]:
    try:
        path = journal.append(p["store"] or local_store(), record)
    except OSError as err:
        raise ModuleError(f"nothing recorded: {exc}; and the local journal cannot be written either: {err}") from exc
    return {"changed": True, "recorded": [], "released": [], "fenced_out": [], "journaled": path,
            "warnings": [f"the store cannot take the {'event' if record.get('kind') == 'audit' else 'outcome'} "
                         f"({exc}); it waits in {path} and is recorded when the store is back"]}


ARGUMENT_SPEC = {
    **STORE_ARGUMENT_SPEC,
    "action": {"type": "str", "choices": ["finish", "audit", "fence", "step", "retain"], "default": "finish"},
    "incident_id": {"type": "str"},
    "incident_type": {"type": "str"},
    "holder": {"type": "str", "required": True},
    "targets": {"type": "list", "elements": "str", "default": []},
    "tokens": {"type": "dict", "default": {}, "no_log": False},  # fencing tokens are counters, not secrets
    "outcome": {"type": "str", "choices": list(OUTCOMES)},
    "mode": {"type": "str", "choices": ["auto", "propose", "observe", "deny"], "default": "auto"},
    "acted": {"type": "bool", "default": True},
    "cooldown": {"type": "float", "default": 300},
    "step": {"type": "str"},
    "verified": {"type": "bool", "default": False},
    "counted": {"type": "bool", "default": True},
    "acted_at": {"type": "float"},
    "verified_at": {"type": "float"},
    "catalog": {"type": "path"},
    "event": {"type": "str"},
    "known_good": {"type": "dict", "default": {}},
    "keep_months": {"type": "int", "default": 13},
    "archive_dir": {"type": "path"},
    "details": {"type": "dict", "default": {}},
}


def main() -> None:
    run_module(ARGUMENT_SPEC, _record, required_if=[("action", "audit", ["event"]),
                                                    ("action", "finish", ["incident_id", "incident_type", "outcome"]),
                                                    ("outcome", "not_held", ["catalog"]),
                                                    ("action", "step", ["incident_id", "incident_type", "step"]),
                                                    ("action", "fence", ["incident_id"])])


if __name__ == "__main__":
    main()
