# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store: durable state shared by the daemon and the playbooks.

SQLite (WAL) on the controller by default; PostgreSQL (psycopg) when several
daemons or controller nodes share work (``postgresql://...`` URL). One SQL
text serves both (``?`` placeholders become ``%s`` for psycopg) except where
a dialect differs, written side by side in MIGRATIONS. ``migrate()`` applies
the numbered migrations a database lacks, in order.

Leases are the per-target locks: they expire, so a killed run does not block
forever, and each grant carries a fencing token that grows, so a late run
whose lease was taken over cannot record over a newer one. The audit trail is
append-only: the database itself refuses to update or delete it.
"""
from __future__ import annotations

import calendar
import hashlib
import json
import os
import sqlite3
import time
from typing import Any

from ansible_collections.selfheal.core.plugins.module_utils.policy import Policy, circuit_open, track_record

psycopg: Any
try:
    import psycopg
except ImportError:  # pragma: no cover - only needed for PostgreSQL stores
    psycopg = None

_BOTH = "both"
MIGRATIONS: tuple[tuple[int, dict[str, str]], ...] = (
    (1, {_BOTH: """
        CREATE TABLE component_state (
            name TEXT PRIMARY KEY,
            saved_at DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL
        )"""}),
    (2, {_BOTH: """
        CREATE TABLE leases (
            target TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            token BIGINT NOT NULL,
            expires_at DOUBLE PRECISION NOT NULL
        )"""}),
    (3, {_BOTH: """
        CREATE TABLE cooldowns (
            target TEXT PRIMARY KEY,
            until DOUBLE PRECISION NOT NULL
        )"""}),
    (4, {_BOTH: """
        CREATE TABLE outcomes (
            incident_id TEXT NOT NULL,
            incident_type TEXT NOT NULL,
            target TEXT NOT NULL,
            mode TEXT NOT NULL,
            outcome TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )"""}),
    (5, {_BOTH: "CREATE INDEX outcomes_by_type ON outcomes (incident_type, at)"}),
    (6, {_BOTH: """
        CREATE TABLE circuit_escalations (
            incident_type TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )"""}),
    (7, {_BOTH: """
        CREATE TABLE decisions (
            incident_id TEXT NOT NULL,
            incident_type TEXT NOT NULL,
            holder TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            decision TEXT NOT NULL
        )"""}),
    (8, {"sqlite": """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            incident_id TEXT,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            details TEXT NOT NULL
        )""", "postgresql": """
        CREATE TABLE audit (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            incident_id TEXT,
            actor TEXT NOT NULL,
            event TEXT NOT NULL,
            details TEXT NOT NULL
        )"""}),
    (9, {"sqlite": """
        CREATE TRIGGER audit_append_only_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
         "postgresql": """
        CREATE FUNCTION selfheal_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$"""}),
    (10, {"sqlite": """
        CREATE TRIGGER audit_append_only_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
          "postgresql": """
        CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION selfheal_audit_append_only()"""}),
    (11, {_BOTH: """
        CREATE TABLE step_attempts (
            incident_type TEXT NOT NULL,
            step TEXT NOT NULL,
            target TEXT NOT NULL,
            verified INTEGER NOT NULL,
            at DOUBLE PRECISION NOT NULL
        )"""}),
    (12, {_BOTH: "CREATE INDEX step_attempts_by_type ON step_attempts (incident_type, step, at)"}),
    # Retention: the audit trail stays append-only, and bounded. A month is archived whole (every row to
    # a JSON-lines file whose checksum is kept here, with the highest id it holds), and only then may
    # those rows be deleted; a row of a month that is not archived, or written after its archive (a
    # journal replayed late keeps its time), can never be deleted, and no row ever updated. The archive
    # table is append-only too. (These guard against mistakes, not against the database's owner.)
    (13, {_BOTH: """
        CREATE TABLE audit_archives (
            month TEXT NOT NULL,
            part INTEGER NOT NULL,
            starts DOUBLE PRECISION NOT NULL,
            ends DOUBLE PRECISION NOT NULL,
            last_id BIGINT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            row_count BIGINT NOT NULL,
            archived_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (month, part),
            CHECK (ends > starts AND ends - starts <= 2764800)
        )"""}),
    # SQLite: the new delete trigger exists before the old one (which refuses every delete) is dropped,
    # so no moment between two migrations leaves the trail deletable
    (14, {"sqlite": """
        CREATE TRIGGER audit_delete_archived_only BEFORE DELETE ON audit
        WHEN NOT EXISTS (SELECT 1 FROM audit_archives a
                         WHERE OLD.at >= a.starts AND OLD.at < a.ends AND OLD.id <= a.last_id)
        BEGIN
          SELECT RAISE(ABORT, 'the audit trail is append-only (a month is deleted only whole, once archived)');
        END""", "postgresql": """
        CREATE OR REPLACE FUNCTION selfheal_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_archives a
                                          WHERE OLD.at >= a.starts AND OLD.at < a.ends AND OLD.id <= a.last_id)
          THEN RETURN OLD; END IF;
          RAISE EXCEPTION 'the audit trail is append-only (a month is deleted only whole, once archived)';
        END $$"""}),
    (15, {"sqlite": "DROP TRIGGER audit_append_only_delete", "postgresql": """
        CREATE FUNCTION selfheal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"""}),
    (16, {"sqlite": "CREATE INDEX audit_by_time ON audit (at)",
          "postgresql": "CREATE INDEX audit_by_time ON audit (at)"}),
    (17, {"sqlite": """
        CREATE TRIGGER audit_archives_append_only BEFORE UPDATE ON audit_archives
        BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END""", "postgresql": """
        CREATE TRIGGER audit_archives_append_only BEFORE UPDATE OR DELETE ON audit_archives
        FOR EACH ROW EXECUTE FUNCTION selfheal_append_only()"""}),
    (18, {"sqlite": """
        CREATE TRIGGER audit_archives_no_delete BEFORE DELETE ON audit_archives
        BEGIN SELECT RAISE(ABORT, 'audit_archives is append-only'); END""", "postgresql": """
        CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION selfheal_append_only()"""}),
    (19, {"sqlite": "SELECT 1", "postgresql": """
        CREATE TRIGGER audit_archives_no_truncate BEFORE TRUNCATE ON audit_archives
        FOR EACH STATEMENT EXECUTE FUNCTION selfheal_append_only()"""}),
)


def local_store() -> str:
    """The store of the user this runs as, when none is named: the guard is never skipped for want of one."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "selfheal", "store.db")


# Argument spec of the store options, shared by every module that uses the store
# (documented once in doc_fragments/store.py).
STORE_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "store": {"type": "str", "default": ""},
    "store_password": {"type": "str", "no_log": True},
}
# not_held: the fix verified, then failed again within the catalog's hold window (a failure on the circuit;
# the incident is decided again when the cooldown ends)
# unpaged: the run failed and its page could not go out (the watchdog pages instead)
FAILED_OUTCOMES = ("failed", "rolled_back", "escalated", "not_held", "unpaged")
OUTCOMES = ("verified", *FAILED_OUTCOMES, "rejected", "timed_out")
_FAILED_RUN = f"mode = 'auto' AND outcome IN ({', '.join(repr(o) for o in FAILED_OUTCOMES)})"


def _month_start(at: float, offset: int = 0) -> float:
    """The start (UTC) of the month `offset` months from the one `at` falls in."""
    tm = time.gmtime(at)
    index = tm.tm_year * 12 + tm.tm_mon - 1 + offset
    return float(calendar.timegm((index // 12, index % 12 + 1, 1, 0, 0, 0, 0, 0, 0)))


class StoreError(Exception):
    """The store cannot be used; the message says why and what to check. Callers fail safe: no action."""


class Store:
    """One connection to the store. `target` is a path (SQLite) or a postgresql:// URL. A context manager:
    ``with Store(target) as store:`` closes it however the block ends."""

    def __init__(self, target: str, timeout: float = 5.0, password: str | None = None) -> None:
        target = target or local_store()
        self.target = target
        self.dialect = "postgresql" if target.startswith(("postgresql://", "postgres://")) else "sqlite"
        self._db: Any
        try:
            if self.dialect == "postgresql":
                if psycopg is None:
                    raise StoreError(f"store {self.shown}: psycopg is not installed (pip install 'psycopg[binary]')")
                extra = {"password": password} if password else {}
                self._db = psycopg.connect(target, autocommit=True, connect_timeout=max(1, int(timeout)), **extra)
            else:
                path = target.removeprefix("sqlite://")
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self.migrate()
        except StoreError:
            raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"store {self.shown}: {exc}") from exc
        except Exception as exc:
            if psycopg is not None and isinstance(exc, psycopg.Error):
                raise StoreError(f"store {self.shown}: {str(exc).strip()}") from exc
            raise

    @property
    def shown(self) -> str:
        """The target without any password, for messages."""
        if "@" in self.target and "://" in self.target:
            scheme, rest = self.target.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return self.target

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            cur = self._db.execute(self._sql(sql), params)
            return list(cur.fetchall()) if cur.description else []
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc):
                raise StoreError(f"store {self.shown} is locked by another process: {exc}; no action taken") from exc
            raise StoreError(f"store {self.shown}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.shown}: {exc}") from exc
        except Exception as exc:
            if psycopg is not None and isinstance(exc, psycopg.Error):
                raise StoreError(f"store {self.shown}: {str(exc).strip()}") from exc
            raise

    def migrate(self) -> int:
        """Apply missing migrations; return the schema version."""
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        rows = self._db.execute("SELECT max(version) FROM schema_version").fetchall()
        current = rows[0][0] or 0
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise StoreError(f"store {self.shown} has schema {current}, newer than this release ({latest}): "
                             "upgrade selfheal.core")
        for version, variants in MIGRATIONS:
            if version <= current:
                continue
            sql = variants.get(self.dialect, variants.get(_BOTH, ""))
            if self.dialect == "sqlite":
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(sql)
                    self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                    self._db.execute("COMMIT")
                except sqlite3.Error:
                    self._db.execute("ROLLBACK")
                    raise
            else:
                with self._db.transaction():
                    self._db.execute("LOCK TABLE schema_version IN EXCLUSIVE MODE")
                    done = self._db.execute("SELECT 1 FROM schema_version WHERE version = %s", (version,)).fetchall()
                    if not done:
                        self._db.execute(sql)
                        self._db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        return latest

    # ------------------------------------------------------------------ component state

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        self._exec("INSERT INTO component_state (name, saved_at, state) VALUES (?, ?, ?) "
                   "ON CONFLICT (name) DO UPDATE SET saved_at = excluded.saved_at, state = excluded.state",
                   (name, time.time(), json.dumps(state, separators=(",", ":"))))

    def load_state(self, name: str) -> dict[str, Any] | None:
        rows = self._exec("SELECT state FROM component_state WHERE name = ?", (name,))
        return self._state(name, rows[0][0]) if rows else None

    def _state(self, name: str, raw: str) -> dict[str, Any]:
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"store {self.shown}: saved state of {name} is corrupt: {exc}") from exc
        if not isinstance(state, dict):
            raise StoreError(f"store {self.shown}: saved state of {name} is not an object")
        return state

    def known_good(self, targets: list[str]) -> dict[str, dict[str, Any]]:
        """The last known good state of each target that has one: what verified fixes that held left on it,
        by key (e.g. its configuration), kept by record_outcome; one query for all targets."""
        rows = self._in("SELECT name, state FROM component_state", "name", [f"known_good:{t}" for t in targets])
        return {name.split(":", 1)[1]: self._state(name, raw) for name, raw in rows}

    # ------------------------------------------------------------------ leases

    def clock(self) -> float:
        """Now by the store's clock: leases expire by it, so that runs on hosts whose clocks disagree
        still agree on who holds a target (PostgreSQL's clock; a SQLite file is on this host, so its own)."""
        if self.dialect != "postgresql":
            return time.time()
        return float(self._exec("SELECT extract(epoch FROM clock_timestamp())")[0][0])

    def acquire(self, target: str, holder: str, ttl: float, now: float) -> int | None:
        """Take or renew the lease of `target`; its fencing token, or None while another run holds it."""
        rows = self._exec(
            "INSERT INTO leases (target, holder, token, expires_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (target) DO UPDATE SET holder = excluded.holder, token = leases.token + 1, "
            "expires_at = excluded.expires_at WHERE leases.expires_at <= ? OR leases.holder = excluded.holder "
            "RETURNING token",
            (target, holder, now + ttl, now))
        return int(rows[0][0]) if rows else None

    def renew(self, target: str, holder: str, token: int, ttl: float, now: float) -> bool:
        """Extend a live lease that `holder` still holds with `token` (the run's heartbeat); False when it
        expired, was released or was taken over: the run must stop before its next change."""
        rows = self._exec("UPDATE leases SET expires_at = ? WHERE target = ? AND holder = ? AND token = ? "
                          "AND expires_at > ? RETURNING target", (now + ttl, target, holder, token, now))
        return bool(rows)

    def release(self, target: str, holder: str, token: int) -> bool:
        """Give the lease back; False when it was no longer ours (expired and taken over).

        The row stays, expired, so the next grant's fencing token is still larger than this one.
        """
        rows = self._exec("UPDATE leases SET expires_at = 0 WHERE target = ? AND holder = ? AND token = ? "
                          "RETURNING target", (target, holder, token))
        return bool(rows)

    def fenced(self, target: str, holder: str, token: int, now: float) -> bool:
        """Whether `holder` still holds `target` with `token` (checked before every recorded change)."""
        rows = self._exec("SELECT 1 FROM leases WHERE target = ? AND holder = ? AND token = ? AND expires_at > ?",
                          (target, holder, token, now))
        return bool(rows)

    def leases(self, targets: list[str]) -> dict[str, tuple[str, float]]:
        """Current and past leases of `targets`: target -> (holder, expires_at); expired ones hold nothing."""
        rows = self._in("SELECT target, holder, expires_at FROM leases", "target", targets)
        return {row[0]: (row[1], float(row[2])) for row in rows}

    def _in(self, sql: str, column: str, values: list[str], where: str = "",
            params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """`sql` for the rows whose `column` is one of `values` (and, if given, `where` holds)."""
        if not values:
            return []
        marks = ", ".join(["?"] * len(values))
        more = f" AND {where}" if where else ""
        return self._exec(f"{sql} WHERE {column} IN ({marks}){more}", (*values, *params))

    # ------------------------------------------------------------------ cooldowns and outcomes

    def set_cooldown(self, target: str, until: float) -> None:
        self._exec("INSERT INTO cooldowns (target, until) VALUES (?, ?) "
                   "ON CONFLICT (target) DO UPDATE SET until = excluded.until", (target, until))

    def cooldowns(self, targets: list[str]) -> dict[str, float]:
        return {row[0]: float(row[1]) for row in self._in("SELECT target, until FROM cooldowns", "target", targets)}

    def busy_until(self, target: str) -> float:
        """Until when `target` is held by a cooldown or a lease (0: free); the guard holds runs back till then."""
        lease = self.leases([target]).get(target)
        return max(self.cooldowns([target]).get(target, 0.0), lease[1] if lease is not None else 0.0)

    def record_outcome(self, incident_id: str, itype: str, target: str, mode: str, outcome: str, at: float,
                       known_good: dict[str, Any] | None = None) -> None:
        """The outcome of a run on `target`. A verified one also keeps `known_good` (what the fix left, by key)
        as the target's last known good state; keys it does not name are kept from earlier fixes."""
        if outcome not in OUTCOMES:
            raise StoreError(f"unknown outcome {outcome!r}; outcomes are {', '.join(OUTCOMES)}")
        self._exec("INSERT INTO outcomes (incident_id, incident_type, target, mode, outcome, at) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (incident_id, itype, target, mode, outcome, at))
        if outcome == "verified" and known_good:
            name = f"known_good:{target}"
            self.save_state(name, {**(self.load_state(name) or {}), **known_good})

    def failures(self, itype: str, since: float) -> list[float]:
        """Times automatic runs of `itype` failed since `since` (what the circuit breaker counts)."""
        rows = self._exec(f"SELECT at FROM outcomes WHERE incident_type = ? AND {_FAILED_RUN} AND at >= ? "  # noqa: S608 - a constant
                          "ORDER BY at", (itype, since))
        return [float(r[0]) for r in rows]

    def failures_by_target(self, itype: str, targets: list[str], since: float) -> dict[str, list[float]]:
        """The same, per target (the per-target circuit)."""
        out: dict[str, list[float]] = {}
        for target, at in self._in("SELECT target, at FROM outcomes", "target", targets,
                                   f"incident_type = ? AND {_FAILED_RUN} AND at >= ? ORDER BY at", (itype, since)):
            out.setdefault(target, []).append(float(at))
        return out

    def outcomes(self, itype: str, limit: int = 50, mode: str | None = None) -> list[dict[str, Any]]:
        """The newest outcomes of `itype` (of runs in `mode` only, when given)."""
        if mode is None:
            rows = self._exec("SELECT incident_id, target, mode, outcome, at FROM outcomes WHERE incident_type = ? "
                              "ORDER BY at DESC LIMIT ?", (itype, limit))
        else:
            rows = self._exec("SELECT incident_id, target, mode, outcome, at FROM outcomes WHERE incident_type = ? "
                              "AND mode = ? ORDER BY at DESC LIMIT ?", (itype, mode, limit))
        return [{"incident_id": r[0], "target": r[1], "mode": r[2], "outcome": r[3], "at": float(r[4])} for r in rows]

    def track_record(self, itype: str, policy: Policy, now: float, limit: int = 200,
                     promote_after: int | None = None) -> dict[str, Any]:
        """The track record of a type, read the one way the guard and the report both use."""
        is_open = circuit_open(policy, self.failures(itype, now - policy.lookback), now)[0]
        return track_record(itype, policy.mode, self.outcomes(itype, limit), self.outcomes(itype, 200, mode="propose"),
                            is_open, promote_after or policy.promote_after)

    def record_step(self, itype: str, step: str, target: str, verified: bool, at: float) -> None:
        """One attempt of a step of the ladder of `itype` on `target`, and whether it verified."""
        self._exec("INSERT INTO step_attempts (incident_type, step, target, verified, at) VALUES (?, ?, ?, ?, ?)",
                   (itype, step, target, int(verified), at))

    def step_history(self, itype: str, steps: list[str], limit: int = 20,
                     since: float = 0.0) -> dict[str, list[bool]]:
        """Whether each of the last `limit` attempts (since `since`) of each step of `itype` verified, newest
        first."""
        out: dict[str, list[bool]] = {}
        for step in steps:
            rows = self._exec("SELECT verified FROM step_attempts WHERE incident_type = ? AND step = ? AND at >= ? "
                              "ORDER BY at DESC LIMIT ?", (itype, step, since, limit))
            out[step] = [bool(r[0]) for r in rows]
        return out

    def circuit_escalated_at(self, itype: str, since: float) -> float | None:
        rows = self._exec("SELECT max(at) FROM circuit_escalations WHERE incident_type = ? AND at >= ?",
                          (itype, since))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def mark_circuit_escalated(self, itype: str, at: float, target: str | None = None) -> None:
        """A human was paged for the open circuit of `itype` (of `itype` on `target` only, when given)."""
        self._exec("INSERT INTO circuit_escalations (incident_type, at) VALUES (?, ?)",
                   (itype if target is None else f"{itype}@{target}", at))

    def target_circuits_escalated(self, itype: str, targets: list[str], since: float) -> dict[str, float]:
        """When a human was last paged for the open circuit of `itype` on each of `targets` (those that were)."""
        keys = {f"{itype}@{t}": t for t in targets}
        rows = self._in("SELECT incident_type, max(at) FROM circuit_escalations", "incident_type", list(keys),
                        "at >= ? GROUP BY incident_type", (since,))
        return {keys[row[0]]: float(row[1]) for row in rows}

    def run_states(self, incident_ids: list[str], now: float) -> dict[str, dict[str, Any]]:
        """What the runs of each incident came to, for the watchdog (see watchdog.RunState); `now` by the
        store's clock (`clock()`), by which leases expire.

        The newest of its decisions and outcomes tells: an outcome is how its last run ended (``not_held``
        is decided again when the target's cooldown ends: `retry_at`); a decision without an outcome after
        it either waits for a human (a proposal), holds the run back until `retry_at` (``deferred``: a
        cooldown or another run's lease), holds it back for a human (``held_back``: its playbook paged;
        ``covered``: a human already paged for the same target has it), or
        allowed a run that is live (its lease is held) or died midway (``died``: no live lease)."""
        blank = {"outcome": None, "running": False, "waiting": False, "died": False, "retry_at": None, "at": 0.0}
        states: dict[str, dict[str, Any]] = {i: dict(blank) for i in incident_ids}
        newest: dict[str, tuple[float, int, Any]] = {}
        for iid, outcome, target, at in self._in("SELECT incident_id, outcome, target, at FROM outcomes",
                                                 "incident_id", incident_ids):
            if iid not in newest or (float(at), 1) >= newest[iid][:2]:
                newest[iid] = (float(at), 1, (outcome, target))
        for iid, text, at in self._in("SELECT incident_id, decision, at FROM decisions", "incident_id", incident_ids):
            if iid not in newest or (float(at), 0) > newest[iid][:2]:
                newest[iid] = (float(at), 0, json.loads(text))
        for iid, (at, is_outcome, what) in newest.items():
            state = states[iid]
            state["at"] = at
            if is_outcome:
                state["outcome"] = what[0]
                if what[0] == "not_held":
                    state["retry_at"] = self.cooldowns([what[1]]).get(what[1], now)
            elif what.get("allowed"):
                state["died"] = True  # unless its lease is live (below)
            elif what.get("mode") == "propose" and what.get("targets"):
                state["waiting"] = True
            elif what.get("already_paged"):
                state["outcome"] = "covered"  # held back for a human who was already paged for it
            elif what.get("retry_at") is not None:
                state["outcome"], state["retry_at"] = "deferred", float(what["retry_at"])
            else:
                state["outcome"] = "held_back"
        for (holder,) in self._exec("SELECT holder FROM leases WHERE expires_at > ?", (now,)):
            iid = str(holder).rsplit("-", 1)[0]
            if iid in states:
                states[iid]["running"] = True
                states[iid]["died"] = False
        return states

    # ------------------------------------------------------------------ decisions and audit

    def record_decision(self, incident_id: str, itype: str, holder: str, decision: dict[str, Any],
                        at: float) -> None:
        self._exec("INSERT INTO decisions (incident_id, incident_type, holder, at, decision) VALUES (?, ?, ?, ?, ?)",
                   (incident_id, itype, holder, at, json.dumps(decision, sort_keys=True)))

    def audit(self, event: str, actor: str, details: dict[str, Any], incident_id: str | None = None,
              at: float | None = None) -> None:
        self._exec("INSERT INTO audit (at, incident_id, actor, event, details) VALUES (?, ?, ?, ?, ?)",
                   (time.time() if at is None else at, incident_id, actor, event,
                    json.dumps(details, sort_keys=True, default=str)))

    def audit_trail(self, incident_id: str | None = None, limit: int = 1000,
                    since: float | None = None) -> list[dict[str, Any]]:
        """The audit trail, oldest first: of one incident, or of all (from `since`, when given)."""
        clauses: list[str] = []
        params: list[Any] = []
        if incident_id:
            clauses.append("incident_id = ?")
            params.append(incident_id)
        if since is not None:
            clauses.append("at >= ?")
            params.append(since)
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        rows = self._exec(f"SELECT id, at, incident_id, actor, event, details FROM audit {where}"  # noqa: S608
                          "ORDER BY id LIMIT ?", (*params, limit))
        return [{"id": r[0], "at": float(r[1]), "incident_id": r[2], "actor": r[3], "event": r[4],
                 "details": json.loads(r[5])} for r in rows]

    def archive_months(self, keep_months: int, directory: str, now: float | None = None) -> list[dict[str, Any]]:
        """Retention: every month (UTC) older than the `keep_months` newest is written whole to
        `directory`/audit-YYYY-MM[.part].jsonl (synced, its sha256 kept in audit_archives), then its rows
        are deleted at once. The current month is always kept. Returns what was archived."""
        if keep_months < 1:
            raise StoreError("retention keeps at least the current month (keep_months >= 1)")
        now = time.time() if now is None else now
        cutoff = _month_start(now, -(keep_months - 1))
        first = self._exec("SELECT min(at) FROM audit WHERE at < ?", (cutoff,))[0][0]
        archived: list[dict[str, Any]] = []
        start = _month_start(float(first)) if first is not None else cutoff
        while start < cutoff:
            end = _month_start(start, 1)
            rows = self._exec("SELECT id, at, incident_id, actor, event, details FROM audit "
                              "WHERE at >= ? AND at < ? ORDER BY id", (start, end))
            if rows:
                archived.append(self._archive(start, end, rows, directory))
            start = end
        return archived

    def _archive(self, start: float, end: float, rows: list[tuple[Any, ...]], directory: str) -> dict[str, Any]:
        month = time.strftime("%Y-%m", time.gmtime(start))
        part = int(self._exec("SELECT count(*) FROM audit_archives WHERE month = ?", (month,))[0][0]) + 1
        path = os.path.join(directory, f"audit-{month}{'' if part == 1 else f'.{part}'}.jsonl")
        digest = hashlib.sha256()
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            # never over an existing file: a second retention run at the same time stops here (or at the
            # archive table's key below), and deletes nothing
            with open(path, "x", encoding="utf-8") as fh:
                for r in rows:
                    line = json.dumps({"id": r[0], "at": float(r[1]), "incident_id": r[2], "actor": r[3],
                                       "event": r[4], "details": json.loads(r[5])}, sort_keys=True) + "\n"
                    fh.write(line)
                    digest.update(line.encode())
                fh.flush()
                os.fsync(fh.fileno())
        except FileExistsError as exc:
            raise StoreError(f"{path} exists (another retention run is archiving {month}, or a file was left "
                             "there): nothing deleted") from exc
        except OSError as exc:
            raise StoreError(f"cannot archive the audit trail of {month} to {path}: {exc}; nothing deleted") from exc
        entry = {"month": month, "part": part, "path": path, "sha256": digest.hexdigest(), "rows": len(rows)}
        last = max(int(r[0]) for r in rows)  # rows written to the month since it was read wait for the next pass
        self._exec("INSERT INTO audit_archives (month, part, starts, ends, last_id, path, sha256, row_count, "
                   "archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (month, part, start, end, last, path, entry["sha256"], len(rows), time.time()))
        self._exec("DELETE FROM audit WHERE at >= ? AND at < ? AND id <= ?", (start, end, last))
        return entry

    def archives(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT month, part, path, sha256, row_count FROM audit_archives ORDER BY month, part")
        return [{"month": r[0], "part": int(r[1]), "path": r[2], "sha256": r[3], "rows": int(r[4])} for r in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
