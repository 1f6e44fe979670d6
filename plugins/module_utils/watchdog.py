# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The watchdog: no incident ends in silence.

Every incident the correlator opens is watched until it reaches a final
state: verified healthy (a run recorded it), resolved by itself (its alerts
ended), or a human paged. The watchdog looks at each watched incident on
every tick, with what the store says of its runs (`RunState`):

- an incident that no automation will handle (never automated, observe
  mode, no playbook, an inferred cascade, an unknown type) is paged at once;
- a run that recorded an outcome ends the watch (its playbook paged a human
  itself when the outcome was a failure, or when the guard held it back);
- a live run (its lease is held and renewed) or a proposal that waits for a
  human is left alone;
- past its deadline with no live run and no outcome (the run never started),
  or as soon as a run that was allowed to act has ended without an outcome
  (it died with the daemon: its lease expired), the incident is resumed once:
  the rulebook runs its playbook again, and the guard decides again;
- past the deadline after that, or whenever the store cannot be read, a
  human is paged with why, exactly once.

Pure: time is passed in, the store is read by the caller; `tick()` returns
the actions due and changes only the watch list, which the source saves with
its state so that a restarted daemon neither forgets nor repeats a page.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_DEADLINE = 300.0


@dataclass(frozen=True)
class RunState:
    """What the store says of one incident's runs."""

    outcome: str | None = None  # the last recorded outcome (verified, escalated, held_back, ...)
    running: bool = False  # a run holds a live lease for it
    waiting: bool = False  # a proposal of it waits for a human
    died: bool = False  # a run was allowed to act and ended without an outcome (its process died)
    unknown: str | None = None  # the store could not be read: why


@dataclass
class Watch:
    incident_id: str
    incident_type: str
    target: str
    automated: bool  # whether a playbook is expected to handle it
    why_human: str  # why a human must take it when it is not automated
    deadline: float  # seconds a run may take before the incident is resumed or paged
    due: float  # when the next look past the deadline is
    resumes: int = 0
    paged: bool = False
    delivered: bool = False  # the receiver took the page (a page not known delivered is sent again at start)
    closed: bool = False


@dataclass(frozen=True)
class Action:
    kind: str  # "resume" or "page"
    incident_id: str
    why: str


class Watchdog:
    def __init__(self, max_resumes: int = 1) -> None:
        self.max_resumes = max_resumes
        self.watches: dict[str, Watch] = {}

    def open(self, incident: Mapping[str, Any], deadline: float, now: float) -> None:
        """Watch an incident the correlator announced."""
        iid = str(incident["id"])
        if iid in self.watches:
            return
        automated, why = _automation(incident)
        root = incident.get("root") or {}
        target = str(root.get("host") or root.get("name") or "unknown")
        self.watches[iid] = Watch(iid, str(incident.get("type")), target, automated, why, deadline,
                                  now if not automated else now + deadline)

    def close(self, incident_id: str) -> None:
        """The incident ended by itself (resolved, or claimed by its root cause): nothing more is due."""
        watch = self.watches.get(incident_id)
        if watch is not None:
            watch.closed = True

    def pending(self) -> list[str]:
        """Incidents whose runs the caller must look up in the store for the next tick."""
        return [w.incident_id for w in self.watches.values() if not w.closed and w.automated]

    def tick(self, now: float, states: Mapping[str, RunState]) -> list[Action]:
        actions: list[Action] = []
        for watch in self.watches.values():
            if watch.closed:
                continue
            if not watch.automated:
                actions.append(self._page(watch, watch.why_human))
                continue
            state = states.get(watch.incident_id, RunState())
            if state.outcome is not None and state.unknown is None:
                watch.closed = True  # the run recorded how it ended; a failed one paged by itself
                continue
            if state.running or state.waiting:
                watch.due = max(watch.due, now + watch.deadline)
                continue
            if state.died and watch.resumes < self.max_resumes:
                watch.due = now  # a run that died midway is resumed at once, not at the deadline
            if now < watch.due:
                continue
            if state.unknown is not None:
                actions.append(self._page(watch, f"the store cannot be read ({state.unknown}), so whether "
                                                 f"{watch.incident_id} was handled is unknown"))
            elif watch.resumes < self.max_resumes:
                watch.resumes += 1
                watch.due = now + watch.deadline
                cause = ("its run ended without an outcome (its process died)" if state.died
                         else f"no run finished within {watch.deadline:.0f}s")
                actions.append(Action("resume", watch.incident_id,
                                      f"{cause}: resumed ({watch.resumes} of {self.max_resumes})"))
            else:
                actions.append(self._page(watch, f"no run finished within {watch.deadline:.0f}s, even after "
                                                 f"{watch.resumes} resume(s); the failure may still be there"))
        return actions

    @staticmethod
    def _page(watch: Watch, why: str) -> Action:
        watch.paged = watch.closed = True
        return Action("page", watch.incident_id, why)

    def forget(self, keep: set[str]) -> None:
        """Drop the watches of incidents the correlator no longer knows (bounded memory)."""
        self.watches = {k: w for k, w in self.watches.items() if k in keep or not w.closed}

    def to_state(self) -> list[dict[str, Any]]:
        return [asdict(w) for w in self.watches.values()]

    def load_state(self, state: list[dict[str, Any]]) -> None:
        self.watches = {w["incident_id"]: Watch(**w) for w in state}


def _automation(incident: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a playbook will handle the incident, and if not, why a human must."""
    itype = incident.get("type")
    if incident.get("never_automate"):
        if incident.get("inferred_root"):
            return False, (f"{itype}: several services failed at once behind {incident.get('root', {}).get('name')}; "
                           "an unknown cascade is never automated")
        return False, f"{itype} is never automated: preserve the state and take over"
    if not incident.get("playbook"):
        return False, f"{itype} has no automatic remediation (no playbook in the catalog)"
    if incident.get("mode") == "observe":
        return False, f"{itype} runs in observe mode: recorded, not acted on"
    return True, ""
