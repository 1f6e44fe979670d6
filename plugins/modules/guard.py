#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: guard
short_description: Decide whether an incident may be remediated automatically, and take the target leases
version_added: 0.1.0
description:
  - The policy decision for one incident, made once and explained. From the
    catalog entry of the incident type, the store (leases, cooldowns, failed
    runs, circuit escalations) and the maintenance windows and change freezes
    of the catalog, it answers the mode taken (V(auto), V(propose),
    V(observe) or V(deny)), whether acting now is allowed, every reason in
    words, and the batch plan that caps the blast radius.
  - When allowed, it takes a lease on every target it may act on (with a
    fencing token), records the decision and appends it to the audit trail.
  - A store that is unreachable or locked fails the task with the reason, and no
    decision, no action (fail safe).
  - In check mode the decision is made and returned, and nothing is written.
author:
  - selfheal.core developers (@selfheal-core)
extends_documentation_fragment:
  - selfheal.core.attributes
  - selfheal.core.store
attributes:
  check_mode:
    support: full
    details: The decision is computed and returned; no lease is taken and nothing is recorded.
  diff_mode:
    support: none
options:
  incident_id:
    description: Id of the incident.
    type: str
    required: true
  incident_type:
    description: Incident type, a name in the catalog.
    type: str
    required: true
  targets:
    description: Targets (inventory host names) the remediation would touch.
    type: list
    elements: str
    required: true
  group_size:
    description:
      - Size of the group the targets belong to, for the blast radius. Defaults to the number of targets.
    type: int
  catalog:
    description: The catalog file (YAML).
    type: path
    required: true
  holder:
    description: Who takes the leases, for example the run's id. Defaults to the incident id.
    type: str
  lease_ttl:
    description:
      - Seconds a lease lasts unless renewed or released. While the run's C(ansible-playbook) process lives, a
        heartbeat renews the leases every third of this; a run that dies (its daemon killed) stops renewing,
        so its targets are free again within this many seconds, and the watchdog resumes or pages the incident.
    type: float
    default: 30
  heartbeat:
    description:
      - Renew the leases in a background process for as long as the playbook run lives (see O(lease_ttl)).
        Without it, a lease lasts O(lease_ttl) seconds from the decision.
    type: bool
    default: true
  need_role:
    description:
      - Refuse, before any decision or lease, an incident type whose catalog entry names no C(role) (what
        the lifecycle playbook runs).
    type: bool
    default: false
  prometheus_url:
    description:
      - Base URL of the Prometheus that holds the incident type's SLO (C(slo.error_ratio_query) in the catalog).
        The error-budget burn rate is queried over the type's fast and slow window pairs (multi-window);
        a fast burn acts at once, a slow burn only observes and notifies.
      - Without it, or when the type has no SLO, the decision is made without the burn rate. When
        Prometheus cannot answer, the reasons say so and the decision is made without it.
    type: str
  prometheus_timeout:
    description: Seconds each Prometheus query may take.
    type: float
    default: 5
  approved_by:
    description:
      - Who approved this run's proposal. A V(propose) decision is allowed only
        with it; the guardrails that still hold (never-automate, freezes,
        windows, cooldowns, locks) are not overridden by an approval.
    type: str
  signal:
    description:
      - The alert the incident began with, as the rulebook's event carries it. Its name, severity,
        fingerprint, summary and the times it started firing and reached the daemon are kept with the
        decision in the audit trail, the one record the recovery timeline is read from.
    type: dict
    default: {}
  approval_reason:
    description: What the approver said (kept with the decision beside O(approved_by)).
    type: str
  now:
    description: Decide as of this Unix time instead of now (for replays and tests).
    type: float
"""

EXAMPLES = r"""
- name: Guard | decide and take the leases
  selfheal.core.guard:
    incident_id: "{{ ansible_eda.event.incident.id }}"
    incident_type: service_down
    targets: [web1]
    group_size: "{{ groups['web'] | length }}"
    catalog: /etc/selfheal/catalog.yml
    store: /var/lib/selfheal/store.db
  register: decision
  delegate_to: localhost
"""

RETURN = r"""
decision:
  description: The decision.
  returned: success
  type: dict
  contains:
    mode:
      description: Mode taken, after demotions (auto, propose, observe, deny).
      type: str
      sample: auto
    allowed:
      description: Whether automatic action is allowed now.
      type: bool
      sample: true
    reasons:
      description: Every rule that bore on the decision, in words.
      type: list
      elements: str
    targets:
      description: Targets that may be acted on.
      type: list
      elements: str
    skipped:
      description: Targets that may not, with why.
      type: dict
    batches:
      description: The targets in batches of at most the blast radius.
      type: list
      elements: list
    serial:
      description: Batch size, for the play's C(serial).
      type: int
      sample: 1
    max_fail_percentage:
      description: For the play's C(max_fail_percentage); 0 so that a failed batch stops the rest.
      type: int
      sample: 0
    circuit_open:
      description: Whether the incident type's circuit breaker is open.
      type: bool
    escalate:
      description: Whether a human must be paged now (never-automate type, or a circuit that has just opened).
      type: bool
    steps:
      description:
        - The steps of the type's ladder to try, least disruptive first; a step whose last
          C(ladder.skip_after) attempts all failed to verify is left out (the reasons say so, with each
          step's verified-success rate). Empty when every step kept failing (a human is paged).
      type: list
      elements: str
    already_paged:
      description:
        - Every target was held back by its own open circuit, and a human was already paged for each (for a
          flap, or by an earlier decision), so the playbook pages nobody again.
      type: bool
    retry_at:
      description:
        - When every target was held back only by what ends by itself (a cooldown, another run's lease), the
          time (epoch seconds, by the store's clock) at which the watchdog decides again; no page before then.
          Null otherwise.
      type: float
leases:
  description: Fencing token of every lease taken, by target (empty in check mode or when not allowed).
  returned: success
  type: dict
  sample: {web1: 7}
holder:
  description: Who holds the leases.
  returned: success
  type: str
cooldown:
  description: Seconds of cooldown the catalog sets after a run of this type acts (for M(selfheal.core.incident)).
  returned: success
  type: float
  sample: 300.0
verify_timeout:
  description: Seconds the catalog allows for verification of this type.
  returned: success
  type: float
  sample: 30.0
verify_query:
  description:
    - The catalog's PromQL verification of this type (C(verification.promql)), with its C({name})
      placeholders for the lifecycle to fill (see M(selfheal.core.probe)'s O(selfheal.core.probe#module:placeholders))
      from C({target}), C({service}), the alert's labels, the catalog's C(parameters) and what the type's role
      gives (C(<role>_query_vars)); null when the type has none.
  returned: success
  type: str
  sample: up{host="{target}", service="{service}"} == 1
burn:
  description:
    - The error-budget burn measured for the decision - C(fast) and C(slow) burn rates and, per window,
      the error ratio and burn. Empty when not measured.
  returned: success
  type: dict
  sample: {fast: 0.8, slow: 0.4, windows: {5m: {error_ratio: 0.0008, burn: 0.8}}}
approval_timeout:
  description: Seconds a proposal of this type waits for a human before it times out.
  returned: success
  type: float
  sample: 900.0
hold:
  description:
    - Seconds a verified fix of this type stays under watch (C(verification.hold)); a failure within it fails
      the run (outcome C(not_held)) and counts on the target's circuit.
  returned: success
  type: float
  sample: 30.0
notify_resolved:
  description: Whether a healed incident of this type sends an informational notice (C(escalation.notify_resolved)).
  returned: success
  type: bool
role:
  description: The role that fixes this type (the catalog's C(role)), which the lifecycle playbook runs; null without.
  returned: success
  type: str
  sample: selfheal.core.service
lease_ttl:
  description: Seconds each lease taken lasts unless renewed (O(lease_ttl)).
  returned: success
  type: float
ladder_cumulative:
  description:
    - Whether the type's steps add up (C(ladder.cumulative)); a step that did not verify on its own is then
      progress, and the lifecycle counts only the last step of the ladder as failed.
  returned: success
  type: bool
known_good:
  description:
    - The last known good state of each target that has one (kept by M(selfheal.core.incident) when a fix
      verified and held), which the lifecycle gives the type's role as C(selfheal_request.known_good).
  returned: success
  type: dict
  sample: {web1: {"service:demo": {config: {path: /etc/demo.conf, checksum: 3f2a...}}}}
parameters:
  description:
    - The settings the catalog gives the type's role (its C(parameters)), which the lifecycle passes on as
      C(selfheal_request.parameters).
  returned: success
  type: dict
  sample: {threshold: 90}
deadline:
  description: Seconds a run of this type may take before the watchdog resumes it or pages (C(escalation.deadline)).
  returned: success
  type: float
  sample: 300.0
"""

import os
import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.catalog import IncidentType, PolicyFileError, load_catalog
from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.policy import Burn, Facts, decide
from ansible_collections.selfheal.core.plugins.module_utils.slo import SloError, query_burn
from ansible_collections.selfheal.core.plugins.module_utils.store import STORE_ARGUMENT_SPEC, Store, StoreError


def _burn(itype: IncidentType, p: dict[str, Any]) -> tuple[Burn | None, str | None, dict[str, Any]]:
    """The type's error-budget burn from Prometheus: (burn, why unknown, evidence)."""
    if itype.slo is None or not p["prometheus_url"]:
        return None, None, {}
    try:
        burn, windows = query_burn(p["prometheus_url"], itype.slo, p["prometheus_timeout"])
    except SloError as exc:
        return None, str(exc), {}
    return burn, None, {"fast": burn.fast, "slow": burn.slow, "objective": itype.slo.objective, "windows": windows}


def _run_pid() -> int:
    """The ansible-playbook process this module works for: the outermost ancestor of that name."""
    found, pid = os.getppid(), os.getppid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"ansible-playbook" in f.read():
                    found = pid
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def _heartbeat(p: dict[str, Any], holder: str, leases: dict[str, int]) -> None:
    """Fork a detached process that renews `leases` while the run's ansible-playbook lives."""
    run = _run_pid()
    if os.fork() != 0:
        return
    try:  # the child: detached from the module's pipes, so Ansible does not wait for it
        os.setsid()
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        live = dict(leases)
        while live:
            time.sleep(p["lease_ttl"] / 3)
            try:
                os.kill(run, 0)
            except OSError:
                break  # the run is gone: its leases expire by themselves
            try:
                with Store(p["store"], password=p["store_password"], timeout=2.0) as store:
                    for target, token in list(live.items()):
                        if not store.renew(target, holder, token, p["lease_ttl"], store.clock()):
                            del live[target]  # released by the run, or lost: nothing more to renew
            except StoreError:
                continue  # not renewed: if the store stays away the lease expires and the run is fenced off
    finally:
        os._exit(0)


def _guard(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    holder = p["holder"] or p["incident_id"]
    try:
        catalog = load_catalog(p["catalog"])
    except PolicyFileError as exc:
        raise ModuleError(f"cannot decide: {exc}") from exc
    itype = catalog.get(p["incident_type"])
    if itype is None:
        raise ModuleError(f"cannot decide: incident type {p['incident_type']!r} is not in {p['catalog']} "
                          f"(types: {', '.join(t.name for t in catalog.types)})")
    if p["need_role"] and not itype.role:
        raise ModuleError(f"incident type {itype.name} names no role in {p['catalog']} (its 'role' key): the "
                          "lifecycle has nothing to run. Nothing was changed.")
    policy = itype.policy
    targets = list(dict.fromkeys(p["targets"]))
    leases: dict[str, int] = {}
    try:
        with Store(p["store"], password=p["store_password"]) as store:
            # leases expire by the store's clock, so the decision is made by it too
            now = p["now"] if p["now"] is not None else store.clock()
            since = now - policy.lookback
            failures = store.failures(itype.name, since=since)
            # the approved runs are read apart: automatic runs after a promotion do not push them out
            ready = policy.self_promote and store.track_record(itype.name, policy, now)["ready_for_auto"]
            burn, burn_unknown, burn_details = _burn(itype, p)
            facts = Facts(
                now=now,
                leases=store.leases(targets),
                cooldowns=store.cooldowns(targets),
                failures=failures,
                target_failures=store.failures_by_target(itype.name, targets, since=since),
                circuit_escalated_at=store.circuit_escalated_at(itype.name, since=now - policy.circuit_reset),
                target_circuit_escalated=store.target_circuits_escalated(itype.name, targets, since=since),
                windows=catalog.windows,
                burn=burn,
                burn_unknown=burn_unknown,
                approved_by=p["approved_by"],
                ready_for_auto=ready,
                step_history=store.step_history(itype.name, list(policy.steps), since=now - policy.ladder_window),
            )
            decision = decide(itype.name, policy, targets, p["group_size"] or len(targets), holder, facts)
            result = decision.to_dict()
            if not check_mode:
                if decision.allowed:
                    for target in decision.targets:
                        token = store.acquire(target, holder, p["lease_ttl"], now)
                        if token is None:  # taken between reading and acquiring: refuse it, keep the rest
                            result["skipped"][target] = "locked by another run (lost the race)"
                        else:
                            leases[target] = token
                    result["targets"] = [t for t in decision.targets if t in leases]
                    kept = ([t for t in batch if t in leases] for batch in decision.batches)
                    result["batches"] = [batch for batch in kept if batch]
                    result["allowed"] = bool(leases)
                if decision.escalate and decision.circuit_open:
                    store.mark_circuit_escalated(itype.name, now)
                if not decision.allowed and not decision.already_paged:  # this decision pages for these targets
                    for target, why in decision.skipped.items():
                        if why.startswith("circuit open for this target"):
                            store.mark_circuit_escalated(itype.name, now, target)
                store.record_decision(p["incident_id"], itype.name, holder, result, now)
                store.audit("decided", holder, _audited(p, targets, result, leases), p["incident_id"], now)
            # what the targets it acts on last ran healthy with, for a step that restores it
            known_good = store.known_good(list(result["targets"])) if result["allowed"] else {}
    except StoreError as exc:
        raise ModuleError(f"cannot decide, so nothing is done (fail safe): {exc}") from exc
    if leases and p["heartbeat"] and not check_mode:
        _heartbeat(p, holder, leases)
    return {"changed": not check_mode, "decision": result, "leases": leases, "holder": holder,
            "cooldown": policy.cooldown, "verify_timeout": itype.verify_timeout,
            "approval_timeout": itype.approval_timeout, "burn": burn_details, "verify_query": itype.verify_query,
            "hold": itype.hold, "notify_resolved": itype.notice, "deadline": itype.deadline, "role": itype.role,
            "parameters": dict(itype.parameters), "known_good": known_good, "ladder_cumulative": policy.cumulative,
            "lease_ttl": p["lease_ttl"]}


SIGNAL_KEPT = ("name", "severity", "fingerprint", "starts_at", "received_at", "symptom_count")


def _audited(p: dict[str, Any], targets: list[str], result: dict[str, Any], leases: dict[str, int]) -> dict[str, Any]:
    """What the audit trail keeps of a decision: the alert as it fired and arrived, the approval, the
    decision with its reasons and the leases taken."""
    signal = {k: p["signal"][k] for k in SIGNAL_KEPT if p["signal"].get(k) not in (None, "")}
    summary = (p["signal"].get("annotations") or {}).get("summary")
    if summary:
        signal["summary"] = str(summary)
    details: dict[str, Any] = {"requested": targets, "decision": result, "leases": leases, "signal": signal}
    if p["approved_by"]:
        details["approval"] = {"approver": p["approved_by"], "reason": p["approval_reason"] or ""}
    return details


ARGUMENT_SPEC = {
    "incident_id": {"type": "str", "required": True},
    "incident_type": {"type": "str", "required": True},
    "targets": {"type": "list", "elements": "str", "required": True},
    "group_size": {"type": "int"},
    "catalog": {"type": "path", "required": True},
    **STORE_ARGUMENT_SPEC,
    "holder": {"type": "str"},
    "lease_ttl": {"type": "float", "default": 30},
    "heartbeat": {"type": "bool", "default": True},
    "need_role": {"type": "bool", "default": False},
    "approved_by": {"type": "str"},
    "approval_reason": {"type": "str"},
    "signal": {"type": "dict", "default": {}},
    "prometheus_url": {"type": "str"},
    "prometheus_timeout": {"type": "float", "default": 5},
    "now": {"type": "float"},
}


def main() -> None:
    run_module(ARGUMENT_SPEC, _guard)


if __name__ == "__main__":
    main()
