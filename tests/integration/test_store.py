"""The store on SQLite and on a real PostgreSQL (the lab's): one suite, both backends."""
from __future__ import annotations

import calendar
import hashlib
import json
import multiprocessing
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import Lab
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.selfheal.core.plugins.module_utils.store import MIGRATIONS, Store, StoreError


def _pg_admin_url(lab: Lab, database: str = "postgres") -> str:
    db = next(h for h in lab.cfg.hosts if "db" in h.groups)
    password = lab.cfg.path("postgres_password").read_text().strip()
    return f"postgresql://postgres:{password}@{db.address}:5432/{database}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
        return
    lab: Lab = request.getfixturevalue("lab")
    name = f"selfheal_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_pg_admin_url(lab), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield _pg_admin_url(lab, name)
    finally:
        with psycopg.connect(_pg_admin_url(lab), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_migrations_are_applied_once(store_url: str) -> None:
    first = Store(store_url)
    assert first.migrate() == MIGRATIONS[-1][0]
    first.close()
    again = Store(store_url)
    rows = again._exec("SELECT count(*) FROM schema_version")
    assert rows[0][0] == len(MIGRATIONS)
    again.close()


def test_leases_expire_and_fence_late_runs(store_url: str) -> None:
    s = Store(store_url)
    a = s.acquire("h1", "run-a", ttl=10, now=100)
    assert a == 1
    assert s.acquire("h1", "run-b", ttl=10, now=105) is None, "held and not expired"
    b = s.acquire("h1", "run-b", ttl=10, now=111)
    assert b is not None and b > a, "expired: taken over with a larger fencing token"
    assert not s.fenced("h1", "run-a", a, now=111), "the late run is fenced off"
    assert s.fenced("h1", "run-b", b, now=111)
    assert not s.release("h1", "run-a", a)
    assert s.release("h1", "run-b", b)
    assert s.leases(["h1"])["h1"][1] <= 111, "released: expired"
    c = s.acquire("h1", "run-c", ttl=10, now=112)
    assert c is not None and c > b, "tokens keep growing across releases"
    s.close()


def test_cooldowns_outcomes_and_circuit_records(store_url: str) -> None:
    s = Store(store_url)
    s.set_cooldown("h1", 500.0)
    s.set_cooldown("h1", 600.0)
    assert s.cooldowns(["h1", "h2"]) == {"h1": 600.0}
    for i, outcome in enumerate(["verified", "failed", "escalated", "rolled_back"]):
        s.record_outcome(f"i{i}", "service_down", "h1", "auto", outcome, at=100.0 + i)
    s.record_outcome("i9", "service_down", "h1", "propose", "failed", at=104.0)
    assert s.failures("service_down", since=0) == [101.0, 102.0, 103.0], "only automatic failures count"
    with pytest.raises(StoreError, match="unknown outcome"):
        s.record_outcome("x", "t", "h", "auto", "meh", at=1)
    assert s.circuit_escalated_at("service_down", since=0) is None
    s.mark_circuit_escalated("service_down", 103.5)
    assert s.circuit_escalated_at("service_down", since=100) == 103.5
    s.close()


def test_only_a_verified_outcome_keeps_the_last_known_good_and_other_keys_stay(store_url: str) -> None:
    with Store(store_url) as s:
        s.record_outcome("i1", "service_down", "h1", "auto", "verified", 100.0, known_good={"service:demo": {"v": 1}})
        s.record_outcome("i2", "service_down", "h1", "auto", "rolled_back", 101.0,
                         known_good={"service:demo": {"v": 2}})
        s.record_outcome("i3", "disk_full", "h1", "auto", "verified", 102.0, known_good={"disk:/": {"v": 3}})
        s.record_outcome("i4", "service_down", "h2", "auto", "verified", 103.0)
        assert s.known_good(["h1", "h2", "h3"]) == {"h1": {"service:demo": {"v": 1}, "disk:/": {"v": 3}}}
        assert s.known_good([]) == {}


def test_the_audit_trail_is_append_only(store_url: str) -> None:
    s = Store(store_url)
    s.audit("decided", "guard", {"allowed": True}, incident_id="i1", at=1.0)
    s.audit("acted", "playbook", {"action": "started"}, incident_id="i1", at=2.0)
    assert [e["event"] for e in s.audit_trail("i1")] == ["decided", "acted"]
    for sql in ("UPDATE audit SET event = 'nothing'", "DELETE FROM audit"):
        with pytest.raises(StoreError, match="append-only"):
            s._exec(sql)
    assert len(s.audit_trail()) == 2
    s.close()


def test_retention_archives_whole_months_then_drops_them_and_nothing_else(store_url: str, tmp_path: Path) -> None:
    """Bounded and still append-only: a month older than the ones kept is written whole to a file (its
    checksum kept), then dropped at once; the months kept stay, and no row of them can be deleted."""
    def at(year: int, month: int, day: int) -> float:
        return float(calendar.timegm((year, month, day, 12, 0, 0, 0, 0, 0)))

    now = at(2026, 12, 3)
    with Store(store_url) as s:
        for when in (at(2026, 9, 1), at(2026, 9, 30), at(2026, 10, 15), at(2026, 11, 2), at(2026, 12, 1)):
            s.audit("decided", "guard", {"when": when}, incident_id=f"i{int(when)}", at=when)
        with pytest.raises(StoreError, match="append-only"):
            s._exec("DELETE FROM audit WHERE at < ?", (at(2026, 10, 1),))
        archived = s.archive_months(keep_months=2, directory=str(tmp_path / "archive"), now=now)
        assert [(a["month"], a["rows"]) for a in archived] == [("2026-09", 2), ("2026-10", 1)]
        for a in archived:
            data = Path(a["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == a["sha256"]
            assert all(json.loads(line)["event"] == "decided" for line in data.decode().splitlines())
        assert s.archives() == archived
        left = [e["details"]["when"] for e in s.audit_trail()]
        assert left == [at(2026, 11, 2), at(2026, 12, 1)], "the months kept are all there"
        with pytest.raises(StoreError, match="append-only"):
            s._exec("DELETE FROM audit")
        with pytest.raises(StoreError, match="append-only"):
            s._exec("UPDATE audit SET event = 'nothing'")
        assert s.archive_months(keep_months=2, directory=str(tmp_path / "archive"), now=now) == [], "idempotent"
        # a late row for an archived month (a replayed journal) cannot be deleted before it is archived,
        # and goes to its own part next time
        s.audit("finished", "journal", {"late": True}, incident_id="late", at=at(2026, 9, 10))
        with pytest.raises(StoreError, match="append-only"):
            s._exec("DELETE FROM audit WHERE incident_id = 'late'")
        # the archive table, which unlocks deletes, is append-only too
        for sql in ("UPDATE audit_archives SET last_id = 1000000", "DELETE FROM audit_archives"):
            with pytest.raises(StoreError, match="append-only"):
                s._exec(sql)
        if s.dialect == "postgresql":
            for table in ("audit", "audit_archives"):
                with pytest.raises(StoreError, match="append-only"):
                    s._exec(f"TRUNCATE {table}")
        # a second retention run at once finds the file the first is writing: it deletes nothing
        (tmp_path / "archive" / "audit-2026-09.2.jsonl").write_text("")
        with pytest.raises(StoreError, match="another retention run"):
            s.archive_months(keep_months=2, directory=str(tmp_path / "archive"), now=now)
        assert [e["incident_id"] for e in s.audit_trail("late")] == ["late"], "nothing deleted"
        (tmp_path / "archive" / "audit-2026-09.2.jsonl").unlink()
        [late] = s.archive_months(keep_months=2, directory=str(tmp_path / "archive"), now=now)
        assert (late["month"], late["part"], late["rows"]) == ("2026-09", 2, 1)
        assert late["path"].endswith("audit-2026-09.2.jsonl")
        with pytest.raises(StoreError, match="at least the current month"):
            s.archive_months(keep_months=0, directory=str(tmp_path / "archive"), now=now)


def test_the_retention_playbook_archives_by_hand(lab: Lab, tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    old = time.time() - 400 * 86400
    with Store(str(store)) as s:
        s.audit("decided", "guard", {"old": True}, incident_id="old", at=old)
        s.audit("decided", "guard", {"old": False}, incident_id="new")
    archive = tmp_path / "archive"
    proc = lab.playbook("selfheal.core.audit_retention", "-e", f"selfheal_audit_archive_dir={archive}", store=store)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 month(s) archived and dropped" in proc.stdout
    [path] = archive.glob("audit-*.jsonl")
    assert json.loads(path.read_text())["incident_id"] == "old"
    with Store(str(store)) as s:
        assert [e["incident_id"] for e in s.audit_trail()] == ["new"]


def _race(url: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue[object],
          holder: str) -> None:
    s = Store(url)
    barrier.wait()
    results.put((holder, s.acquire("db1", holder, ttl=60, now=time.time())))
    s.close()


def test_racing_processes_exactly_one_wins(store_url: str) -> None:
    Store(store_url).close()  # migrated before the race
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    results: multiprocessing.Queue[object] = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(store_url, barrier, results, f"run-{i}")) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got: list[tuple[str, int | None]] = [results.get(timeout=5) for proc in procs]  # type: ignore[misc]
    winners = [holder for holder, token in got if token is not None]
    assert len(winners) == 1, got


def _remediate_then_hang(url: str) -> None:
    s = Store(url)
    token = s.acquire("h2", "run-killed", ttl=1.5, now=time.time())
    assert token is not None
    s.audit("remediation_started", "run-killed", {"token": token}, incident_id="inc-1")
    time.sleep(600)


def test_a_run_killed_mid_remediation_lets_the_next_one_proceed(store_url: str) -> None:
    Store(store_url).close()
    ctx = multiprocessing.get_context("fork")
    victim = ctx.Process(target=_remediate_then_hang, args=(store_url,))
    victim.start()
    s = Store(store_url)
    deadline = time.monotonic() + 20
    while not s.audit_trail("inc-1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert s.acquire("h2", "run-next", ttl=30, now=time.time()) is None, "the lease outlives the killed run"
    time.sleep(1.6)
    token = s.acquire("h2", "run-next", ttl=30, now=time.time())
    assert token is not None
    s.audit("remediation_started", "run-next", {"token": token}, incident_id="inc-1")
    trail = s.audit_trail("inc-1")
    assert [(e["actor"], e["event"]) for e in trail] == [("run-killed", "remediation_started"),
                                                         ("run-next", "remediation_started")]
    s.close()


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["acquire", "release"]),
                                st.floats(min_value=0, max_value=5)), max_size=40))
def test_two_runs_never_hold_the_same_lease(tmp_path_factory: pytest.TempPathFactory,
                                            steps: list[tuple[str, str, float]]) -> None:
    s = Store(str(tmp_path_factory.mktemp("lease") / "s.db"))
    now = 0.0
    held: dict[str, tuple[int, float]] = {}
    last_token = 0
    for holder, action, dt in steps:
        now += dt
        if action == "acquire":
            token = s.acquire("t", holder, ttl=3, now=now)
            others = [h for h, lease in held.items() if h != holder and lease[1] > now]
            assert (token is None) == bool(others)
            if token is not None:
                assert token > last_token
                last_token = token
                held = {holder: (token, now + 3)}
        elif holder in held:
            s.release("t", holder, held.pop(holder)[0])
    s.close()


def test_a_locked_sqlite_store_fails_safe_with_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    Store(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        s = Store(path, timeout=0.2)
    except StoreError as exc:
        assert "locked" in str(exc)
    else:
        with pytest.raises(StoreError, match="locked by another process"):
            s.acquire("h1", "run", ttl=5, now=1)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_an_unreachable_postgresql_is_a_clear_error_without_the_password() -> None:
    with pytest.raises(StoreError) as info:
        Store("postgresql://selfheal:s3cr3t-pw@127.0.0.1:9/selfheal", timeout=1)
    assert "127.0.0.1" in str(info.value) and "s3cr3t-pw" not in str(info.value)


def test_heartbeats_renew_only_live_leases_of_their_holder(store_url: str) -> None:
    s = Store(store_url)
    try:
        token = s.acquire("h1", "inc-1-a", ttl=10, now=100)
        assert token is not None
        assert s.renew("h1", "inc-1-a", token, ttl=10, now=105) and s.leases(["h1"])["h1"][1] == 115
        assert not s.renew("h1", "inc-1-b", token, ttl=10, now=106), "another holder"
        assert not s.renew("h1", "inc-1-a", token + 1, ttl=10, now=106), "another token"
        assert not s.renew("h1", "inc-1-a", token, ttl=10, now=116), "expired: lost, not renewed"
    finally:
        s.close()


def test_run_states_tell_the_watchdog_what_became_of_each_incident(store_url: str) -> None:
    s = Store(store_url)
    try:
        allowed = {"allowed": True, "mode": "auto", "targets": ["h1"]}
        s.record_decision("done", "service_down", "done-1", allowed, 100)
        s.record_outcome("done", "service_down", "h1", "auto", "verified", 110)
        s.record_decision("live", "service_down", "live-1", allowed, 100)
        s.acquire("h2", "live-1", ttl=30, now=100)
        s.record_decision("dead", "service_down", "dead-1", allowed, 100)
        s.acquire("h3", "dead-1", ttl=30, now=100)  # expired by now=200: the run died
        s.record_decision("held", "service_down", "held-1", {"allowed": False, "mode": "auto", "targets": []}, 100)
        s.record_decision("asks", "service_down", "asks-1", {"allowed": False, "mode": "propose", "targets": ["h4"]},
                          100)
        states = s.run_states(["done", "live", "dead", "held", "asks", "never"], now=120)
        assert states["done"]["outcome"] == "verified" and not states["done"]["died"]
        assert states["live"]["running"] and not states["live"]["died"]
        assert states["held"]["outcome"] == "held_back" and states["asks"]["waiting"]
        assert states["never"] == {"outcome": None, "running": False, "waiting": False, "died": False,
                                   "retry_at": None, "at": 0.0}
        assert s.run_states(["dead"], now=200)["dead"]["died"], "allowed, no outcome, lease expired"
    finally:
        s.close()


def test_run_states_say_when_a_deferred_or_relapsed_incident_is_decided_again(store_url: str) -> None:
    s = Store(store_url)
    try:
        s.record_decision("cool", "service_down", "cool-1", {"allowed": False, "mode": "auto", "targets": [],
                                                             "retry_at": 160.0}, 100)
        s.record_decision("flap", "service_down", "flap-1", {"allowed": True, "mode": "auto", "targets": ["h1"]}, 100)
        s.record_outcome("flap", "service_down", "h1", "auto", "not_held", 130)
        s.set_cooldown("h1", 190)
        # decided again after a fix that did not hold: the newest entry (the new decision) tells
        s.record_decision("again", "service_down", "again-1", {"allowed": True, "mode": "auto", "targets": ["h2"]},
                          100)
        s.record_outcome("again", "service_down", "h2", "auto", "not_held", 110)
        s.record_decision("again", "service_down", "again-2", {"allowed": True, "mode": "auto", "targets": ["h2"]},
                          170)
        s.acquire("h2", "again-2", ttl=30, now=170)
        states = s.run_states(["cool", "flap", "again"], now=175)
        assert (states["cool"]["outcome"], states["cool"]["retry_at"], states["cool"]["at"]) == ("deferred", 160, 100)
        assert (states["flap"]["outcome"], states["flap"]["retry_at"], states["flap"]["at"]) == ("not_held", 190, 130)
        assert states["again"]["outcome"] is None and states["again"]["running"] and states["again"]["at"] == 170
        assert s.failures_by_target("service_down", ["h1", "h2"], since=0) == {"h1": [130.0], "h2": [110.0]}, \
            "a fix that did not hold counts on the circuit"
        assert abs(s.clock() - time.time()) < 5, "the store's clock is a clock"
    finally:
        s.close()


def test_the_ladder_reads_each_steps_attempts_newest_first(store_url: str) -> None:
    with Store(store_url) as s:
        for at, (step, verified) in enumerate([("restart", False), ("restart", True), ("restore_config", False),
                                               ("restart", False)]):
            s.record_step("service_down", step, "h1", verified, 100.0 + at)
        s.record_step("disk_full", "restart", "h1", True, 200.0)
        assert s.step_history("service_down", ["restart", "restore_config", "reboot"]) == {
            "restart": [False, True, False], "restore_config": [False], "reboot": []}
