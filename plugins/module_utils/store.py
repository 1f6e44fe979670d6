# Copyright: selfheal.core contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The store: durable state shared by the daemon and the playbooks.

SQLite (WAL) on the controller. Its schema is versioned: `migrate()` applies
the numbered migrations that a file lacks, in order, in one transaction each.
This release keeps component state (the correlator's incidents, so they
survive a daemon restart); incidents, decisions, actions, locks and the
audit trail come with later migrations.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
        CREATE TABLE component_state (
            name TEXT PRIMARY KEY,
            saved_at REAL NOT NULL,
            state TEXT NOT NULL
        )
    """),
)


class StoreError(Exception):
    """The store cannot be used; the message says why and what to check."""


class Store:
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = path
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"store {path}: {exc}") from exc

    def migrate(self) -> int:
        """Apply missing migrations; return the schema version."""
        db = self._db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        latest = MIGRATIONS[-1][0]
        if current > latest:
            raise StoreError(f"store {self.path} has schema {current}, newer than this release ({latest}): "
                             "upgrade selfheal.core")
        for version, sql in MIGRATIONS:
            if version > current:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute(sql)
                    db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                    db.execute("COMMIT")
                except sqlite3.Error:
                    db.execute("ROLLBACK")
                    raise
        return latest

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        try:
            self._db.execute(
                "INSERT INTO component_state (name, saved_at, state) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET saved_at = excluded.saved_at, state = excluded.state",
                (name, time.time(), json.dumps(state, separators=(",", ":"))),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot save {name}: {exc}") from exc

    def load_state(self, name: str) -> dict[str, Any] | None:
        try:
            row = self._db.execute("SELECT state FROM component_state WHERE name = ?", (name,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot load {name}: {exc}") from exc
        if row is None:
            return None
        try:
            state = json.loads(row[0])
        except ValueError as exc:
            raise StoreError(f"store {self.path}: saved state of {name} is corrupt: {exc}") from exc
        if not isinstance(state, dict):
            raise StoreError(f"store {self.path}: saved state of {name} is not an object")
        return state

    def close(self) -> None:
        self._db.close()
