"""No target is acted on by two runs at once: random interleavings of runs that decide, renew,
act, crash and finish against a real SQLite store, with time passed in. A run acts only after the
fence check (`Store.fenced`, what `selfheal.core.incident action=fence` runs before each change)."""
from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.store import Store

TTL = 30.0
TARGETS = ("h1", "h2")


@dataclass
class Run:
    holder: str
    target: str
    token: int | None = None
    alive: bool = True
    expires: float = 0.0  # the lease's end as last granted (acquire or renew)
    released: float | None = None  # when it gave the lease back


_step = st.tuples(st.sampled_from(["start", "renew", "act", "crash", "finish", "wait"]), st.integers(0, 5),
                  st.floats(0, 45))


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, min_size=1, max_size=50))
def test_no_target_is_acted_on_by_two_runs_at_once(steps: list[tuple[str, int, float]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(str(Path(tmp) / "store.db"))
        try:
            now = 1000.0
            runs: dict[int, Run] = {}
            acting: dict[str, list[tuple[str, float]]] = {t: [] for t in TARGETS}  # target -> (holder, at)
            for what, k, dt in steps:
                run = runs.get(k)
                if what == "start" and run is None:
                    run = runs[k] = Run(f"inc{k}-run", TARGETS[k % len(TARGETS)])
                    run.token = store.acquire(run.target, run.holder, TTL, now)
                    run.expires = now + TTL
                elif run is None or not run.alive or run.token is None:
                    pass
                elif what == "renew":  # the heartbeat: a lease it lost is not renewed, and the run learns so
                    if store.renew(run.target, run.holder, run.token, TTL, now):
                        run.expires = now + TTL
                    else:
                        run.token = None
                elif what == "act":
                    if store.fenced(run.target, run.holder, run.token, now):
                        acting[run.target].append((run.holder, now))
                elif what == "crash":  # its heartbeat dies with it: the lease expires by itself
                    run.alive = False
                elif what == "finish":
                    store.release(run.target, run.holder, run.token)
                    run.alive, run.released = False, now
                # the invariant, at every moment: at most one run passes the fence on a target
                for target in TARGETS:
                    holders = {r.holder for r in runs.values() if r.target == target and r.token is not None
                               and store.fenced(target, r.holder, r.token, now)}
                    assert len(holders) <= 1, f"{target} held by {holders} at {now}"
                now += dt
            by_holder = {r.holder: r for r in runs.values()}
            for target, acts in acting.items():
                for (a, _t_a), (b, t_b) in itertools.pairwise(acts):
                    # another run acts only once the first gave its lease back or the lease ran out
                    first = by_holder[a]
                    gone = first.expires if first.released is None else min(first.released, first.expires)
                    assert a == b or t_b >= gone, (target, acts, first)
        finally:
            store.close()
