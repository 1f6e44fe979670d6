#!/usr/bin/python
# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: timeline
short_description: Record one stage of a recovery in the incident timeline
version_added: 0.1.0
description:
  - Appends one entry (stage, target, incident id, time, details) to the
    incident timeline, a JSON-lines file on the controller.
  - The timeline is what the demo and the recovery benchmark read to report
    time to recovery split into detect, decide, act and verify.
  - Appends take an exclusive lock, so parallel runs never interleave lines.
  - Run it on the controller (C(delegate_to=localhost) or a play on localhost).
author:
  - selfheal.core developers (@selfheal-core)
options:
  path:
    description:
      - Path of the timeline file on the controller. Its directory is created if missing.
    type: path
    required: true
  stage:
    description:
      - The stage reached.
    type: str
    required: true
    choices:
      - fault_injected
      - alert_fired
      - alert_received
      - remediation_started
      - action_done
      - verified_healthy
      - escalated
      - held_back
      - proposed
      - approved
      - rejected
      - approval_timed_out
  target:
    description:
      - The target the stage concerns, an inventory host name.
    type: str
    required: true
  incident_id:
    description:
      - Id of the incident the stage belongs to, when known.
    type: str
  at:
    description:
      - When the stage happened, as Unix time or RFC 3339 text.
      - Defaults to now. Use it for stages that happened elsewhere, such as
        the time an alert started firing.
    type: str
  details:
    description:
      - Free-form facts about the stage, stored with it. Key C(summary) is shown by the demo.
    type: dict
    default: {}
extends_documentation_fragment:
  - selfheal.core.attributes
attributes:
  check_mode:
    support: full
    details: In check mode the entry is validated and returned but not written.
  diff_mode:
    support: none
notes:
  - Later releases move the timeline into the incident store; the stages stay the same.
"""

EXAMPLES = r"""
- name: Record that the remediation started
  selfheal.core.timeline:
    path: /var/lib/selfheal/timeline.jsonl
    stage: remediation_started
    target: web1
    incident_id: 3f2a9c0d1e4b5a69
    details:
      summary: restarting demo on web1
  delegate_to: localhost

- name: Record when the alert started firing, as Alertmanager reported it
  selfheal.core.timeline:
    path: /var/lib/selfheal/timeline.jsonl
    stage: alert_fired
    target: web1
    at: "2026-11-23T10:00:02.123Z"
  delegate_to: localhost
"""

RETURN = r"""
entry:
  description: The entry written (or, in check mode, the entry that would be written).
  returned: success
  type: dict
  sample:
    at: 1795432800.25
    stage: remediation_started
    target: web1
    incident_id: 3f2a9c0d1e4b5a69
    details:
      summary: restarting demo on web1
"""

from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.modules import ModuleError, run_module
from ansible_collections.selfheal.core.plugins.module_utils.signals import SignalError, parse_time
from ansible_collections.selfheal.core.plugins.module_utils.timeline import STAGES, TimelineError, build, record


def _record(p: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    try:
        at = None
        if p["at"] not in (None, ""):
            text = p["at"]
            at = parse_time(float(text) if _is_number(text) else text)
        if check_mode:
            entry = build(p["stage"], p["target"], p["incident_id"], at, p["details"])
        else:
            entry = record(p["path"], p["stage"], p["target"], p["incident_id"], at, p["details"])
    except (TimelineError, SignalError) as exc:
        raise ModuleError(str(exc)) from exc
    return {"changed": not check_mode, "entry": entry}


def main() -> None:
    run_module({
        "path": {"type": "path", "required": True},
        "stage": {"type": "str", "required": True, "choices": list(STAGES)},
        "target": {"type": "str", "required": True},
        "incident_id": {"type": "str"},
        "at": {"type": "str"},
        "details": {"type": "dict", "default": {}},
    }, _record)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


if __name__ == "__main__":
    main()
