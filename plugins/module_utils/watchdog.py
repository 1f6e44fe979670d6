# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The watchdog: no incident ends in silence.

Every incident the correlator opens is watched until it reaches a final
state: verified healthy (a run recorded it), resolved by itself (its alerts
ended), or a human paged. The watchdog looks at each watched incident on
every tick, with what the store says of its runs (`RunState`):

- an incident that no automation will handle (never automated, observe
  mode, no playbook, an inferred cascade, an unknown type) is paged at once;
- a run that recorded a final outcome ends the watch (its playbook paged a
  human itself when the outcome was a failure, or when the guard held it
  back for a human); a run whose own page could not go out (``unpaged``)
  is paged by the watchdog at once;
- a run held back only by what ends by itself (a cooldown, another run's
  lease: ``deferred``), or a fix that verified and then did not hold
  (``not_held``), is decided again when the target is free (`retry_at`), at
  most `max_retries` times, then paged;
- a live run (its lease is held and renewed) or a proposal that waits for a
  human is left alone;
- past its deadline with no live run and no outcome (the run never started),
  or as soon as a run that was allowed to act has ended without an outcome
  (it died with the daemon: its lease expired), the incident is resumed once:
  the rulebook runs its playbook again, and the guard decides again;
- past the deadline after that, or whenever the store cannot be read, a
  human is paged with why, exactly once;
- when its alerts end, an incident a human was paged for gets its page
  resolved (PagerDuty ``resolve``, a "resolved" note elsewhere), once, after
  `settle_after` seconds: an incident of the same type on the same target
  opened before that (a flapping alert) takes the page over instead, so the
  page stays open until the failure is really gone.

Pure: time is passed in, the store is read by the caller; `tick()` returns
the actions due and changes only the watch list, which the source saves with
its state so that a restarted daemon neither forgets nor repeats a page.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_DEADLINE = 300.0
# outcomes after which the incident is decided again (when `retry_at` comes), not ended
RETRIED = ("deferred", "not_held")
# final outcomes whose run paged a human (the page is resolved when the alerts end)
CLOCK_SLACK = 1.0
PAGED = ("escalated", "failed", "rolled_back", "held_back", "timed_out")
# the outcome of a run whose own page could not go out: the watchdog pages at once, by its own path
UNPAGED = "unpaged"


@dataclass(frozen=True)
class RunState:
    """What the store says of one incident's runs."""

    outcome: str | None = None  # the last recorded outcome (verified, escalated, held_back, ...)
    running: bool = False  # a run holds a live lease for it
    waiting: bool = False  # a proposal of it waits for a human
    died: bool = False  # a run was allowed to act and ended without an outcome (its process died)
    unknown: str | None = None  # the store could not be read: why
    retry_at: float | None = None  # with a RETRIED outcome: when the target is free to be acted on again
    at: float = 0.0  # when the newest decision or outcome was recorded


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
    closed: bool = False  # nothing more is resumed or paged for it
    retries: int = 0  # times it was decided again after a deferral or a fix that did not hold
    resumed_at: float = 0.0  # when it was last resumed (states recorded before that are stale)
    escalated: bool = False  # its run paged a human (so its page is resolved when its alerts end)
    ended: bool = False  # its alerts ended (resolved by itself, or claimed by its root cause)
    settled: bool = False  # its page was resolved, or there was none to resolve: nothing more is due
    ended_at: float = 0.0
    page_key: str = ""  # the incident whose page this one took over (the page's dedup key); "" for its own
    inherits: list[str] = field(default_factory=list)  # incidents it took over (their runs may have paged)


@dataclass(frozen=True)
class Action:
    kind: str  # "resume", "page" or "resolve" (the alerts of a paged incident ended)
    incident_id: str
    why: str


class Watchdog:
    def __init__(self, max_resumes: int = 1, max_retries: int = 3, settle_after: float = 30.0) -> None:
        self.max_resumes = max_resumes
        self.max_retries = max_retries
        self.settle_after = settle_after
        self.watches: dict[str, Watch] = {}
        self._settling: dict[tuple[str, str], str] = {}  # (type, target) -> the ended watch not yet settled

    def open(self, incident: Mapping[str, Any], deadline: float, now: float) -> None:
        """Watch an incident the correlator announced."""
        iid = str(incident["id"])
        if iid in self.watches:
            return
        automated, why = _automation(incident)
        root = incident.get("root") or {}
        target = str(root.get("host") or root.get("name") or "unknown")
        watch = Watch(iid, str(incident.get("type")), target, automated, why, deadline,
                      now if not automated else now + deadline)
        old = self.watches.get(self._settling.pop((watch.incident_type, watch.target), ""))
        if old is not None and not old.settled:  # the same failure again before its page was resolved: take it over
            watch.escalated = watch.escalated or old.escalated or old.paged
            watch.page_key = old.page_key or old.incident_id
            watch.inherits += [old.incident_id, *old.inherits]
            old.closed = old.settled = True
        self.watches[iid] = watch

    def page_key(self, incident_id: str) -> str:
        """The dedup key of the page an incident is under (its own id, or the one it took over)."""
        watch = self.watches.get(incident_id)
        return (watch.page_key or watch.incident_id) if watch is not None else incident_id

    def close(self, incident_id: str, now: float = 0.0) -> None:
        """The incident's alerts ended (resolved, or claimed by its root cause): nothing is resumed or paged
        any more; its page, if a human was paged, is resolved `settle_after` seconds later."""
        watch = self.watches.get(incident_id)
        if watch is not None and not watch.ended:
            watch.ended, watch.ended_at = True, now
            self._settling[(watch.incident_type, watch.target)] = watch.incident_id

    def pending(self) -> list[str]:
        """Incidents whose runs the caller must look up in the store for the next tick: those not at a final
        state, and until they settle, those whose alerts ended (with the ones they took over)."""
        out: list[str] = []
        for w in self.watches.values():
            if w.settled:
                continue
            if w.automated and (not w.closed or w.ended):
                out.append(w.incident_id)
            if w.ended:
                out += w.inherits
        return out

    def tick(self, now: float, states: Mapping[str, RunState]) -> list[Action]:
        actions: list[Action] = []
        for watch in self.watches.values():
            if watch.settled:
                continue
            if watch.ended:
                actions.extend(self._settle(watch, now, states))
                continue
            if watch.closed:
                continue
            if not watch.automated:
                actions.append(self._page(watch, watch.why_human))
                continue
            action = self._look(watch, now, states.get(watch.incident_id, RunState()))
            if action is not None:
                actions.append(action)
        return actions

    def _look(self, watch: Watch, now: float, state: RunState) -> Action | None:
        # the resumed run has not decided yet (with slack for a store whose clock is a little behind ours)
        stale = watch.resumed_at > 0 and state.at < watch.resumed_at - CLOCK_SLACK
        if state.unknown is None and not stale and state.outcome in RETRIED:
            if watch.retries >= self.max_retries:
                return self._page(watch, f"decided again {watch.retries} times and still held back or not holding "
                                         f"({state.outcome}); the failure is still there")
            if now < (state.retry_at or now):
                watch.due = max(watch.due, (state.retry_at or now) + watch.deadline)
                return None
            watch.retries += 1
            return self._resume(watch, now, "its cooldown ended and it is still open" if state.outcome == "deferred"
                                else "its fix did not hold and its cooldown ended", watch.retries, self.max_retries)
        if state.outcome == UNPAGED and state.unknown is None and not stale:
            return self._page(watch, "its run ended needing a human and could not page one itself (the "
                                     "notification failed), so the watchdog does")
        if state.outcome is not None and state.unknown is None and not stale:
            watch.closed = True  # the run recorded how it ended; a failed one paged by itself
            watch.escalated = watch.escalated or state.outcome in PAGED
            return None
        if state.running or state.waiting:
            watch.due = max(watch.due, now + watch.deadline)
            return None
        if state.died and not stale and watch.resumes < self.max_resumes:
            watch.due = now  # a run that died midway is resumed at once, not at the deadline
        if now < watch.due:
            return None
        if state.unknown is not None:
            return self._page(watch, f"the store cannot be read ({state.unknown}), so whether "
                                     f"{watch.incident_id} was handled is unknown")
        if watch.resumes < self.max_resumes:
            watch.resumes += 1
            cause = ("its run ended without an outcome (its process died)" if state.died
                     else f"no run finished within {watch.deadline:.0f}s")
            return self._resume(watch, now, cause, watch.resumes, self.max_resumes)
        return self._page(watch, f"no run finished within {watch.deadline:.0f}s, even after "
                                 f"{watch.resumes} resume(s); the failure may still be there")

    @staticmethod
    def _resume(watch: Watch, now: float, cause: str, count: int, limit: int) -> Action:
        watch.due = now + watch.deadline
        watch.resumed_at = now
        return Action("resume", watch.incident_id, f"{cause}: resumed ({count} of {limit})")

    def _settle(self, watch: Watch, now: float, states: Mapping[str, RunState]) -> list[Action]:
        """The alerts ended: resolve the page of an incident a human was paged for, once. Its run (or the run
        of an incident it took over) may record that it paged after the alerts ended: looked up till then."""
        for iid in (watch.incident_id, *watch.inherits):
            state = states.get(iid)
            if state is not None and state.unknown is None and state.outcome in PAGED:
                watch.escalated = True
        watch.closed = True
        if now < watch.ended_at + self.settle_after:
            return []  # settled only once the failure stayed away a while (see open())
        watch.settled = True
        if self._settling.get((watch.incident_type, watch.target)) == watch.incident_id:
            del self._settling[(watch.incident_type, watch.target)]
        if not (watch.paged or watch.escalated):
            return []
        return [Action("resolve", watch.incident_id, "its alerts ended: the incident is resolved")]

    @staticmethod
    def _page(watch: Watch, why: str) -> Action:
        watch.paged = watch.closed = True
        return Action("page", watch.incident_id, why)

    def forget(self, keep: set[str]) -> None:
        """Drop the watches of incidents the correlator no longer knows (bounded memory)."""
        self.watches = {k: w for k, w in self.watches.items()
                        if k in keep or not w.closed or (w.ended and not w.settled)}

    def to_state(self) -> list[dict[str, Any]]:
        return [asdict(w) for w in self.watches.values()]

    def load_state(self, state: list[dict[str, Any]]) -> None:
        self.watches = {w["incident_id"]: Watch(**w) for w in state}
        self._settling = {(w.incident_type, w.target): w.incident_id
                          for w in sorted(self.watches.values(), key=lambda w: w.ended_at)
                          if w.ended and not w.settled}


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
