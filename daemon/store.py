"""Durable bookkeeping in one SQLite file: tier runs for catch-up and status, and JSON key/values.

Decisions:

* WAL journal with ``synchronous=FULL``: writes are few (a handful per run, plus evaluator and
  recovery state), and FULL makes a committed ``record_scheduled`` survive power loss, which
  is what makes a catch-up happen exactly once.
* A file that is not a SQLite database, fails ``PRAGMA integrity_check`` or has an unreadable
  schema is set aside (renamed to ``<name>.corrupt-<UTC timestamp>``, with its ``-wal`` and
  ``-shm`` files) and a fresh store is created; ``StateStore.set_aside`` lists what was moved
  so the daemon can publish ``StateSetAside``. Nothing is ever deleted. A file written by a
  newer schema raises ``StateError`` instead: starting over would silently downgrade it.
* Values are JSON (never pickle); timestamps are ISO-8601 UTC strings of fixed width, so
  ordering the text orders the times.
* One connection shared by all threads behind a re-entrant lock; ``transaction()`` groups
  several writes atomically, and writes made inside it join it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from daemon.clock import Clock, SystemClock, ensure_utc
from daemon.errors import StateError

SCHEMA_VERSION: Final = 1
# Triggers whose rows stand for a handled cron occurrence: run, caught up, or reported missed
# (so a restart neither runs nor reports it again). Manual and verify runs do not count.
SCHEDULED_TRIGGERS: Final = ("cron", "catch_up", "missed")
# Rows with this trigger bookkeep a RunMissed; they never run, so they are never incomplete.
MISSED_TRIGGER: Final = "missed"
# Triggers of runs that the daemon itself runs again after an interruption (within the tier's
# catch-up grace). "verify" runs are the recovery engine's to re-queue; "manual" ones are not
# repeated (they are reported missed).
RESUMABLE_TRIGGERS: Final = ("cron", "catch_up", "profile_change")
# Status of a run a daemon stop interrupted: set at shutdown (still incomplete, so the next
# start handles it) and kept when the next start closes the row.
INTERRUPTED_STATUS: Final = "interrupted"
_ORIGIN_NAMESPACE: Final = "schedule.origin"

# Migration N brings a database from version N-1 to N.
_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL UNIQUE,
            tier TEXT NOT NULL,
            trigger TEXT NOT NULL,
            scheduled_for TEXT NOT NULL,
            started TEXT,
            completed TEXT,
            status TEXT,
            succeeded INTEGER
        )""",
        "CREATE INDEX runs_tier_scheduled ON runs (tier, scheduled_for)",
        """CREATE TABLE kv (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        ) WITHOUT ROWID""",
    ),
}


def _iso(when: datetime) -> str:
    return ensure_utc(when).isoformat(timespec="microseconds")


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class RunRow:
    """One tier run as bookkept: queued, maybe started, maybe completed."""

    run_id: str
    tier: str
    trigger: str
    scheduled_for: datetime
    started: datetime | None
    completed: datetime | None
    status: str | None
    succeeded: bool | None


class _Unusable(Exception):
    """The file cannot serve as our store; the message says why (internal)."""


class StateStore:
    """The daemon's SQLite state; open with ``StateStore.open(path)``, ``close()`` when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection, set_aside: list[tuple[str, str, str]]):
        self.path = path
        self.set_aside = set_aside
        self._conn = conn
        self._lock = threading.RLock()
        self._depth = 0

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, clock: Clock | None = None) -> StateStore:
        """Open or create the store at ``path``, setting aside a corrupt file (see module doc)."""
        clock = clock if clock is not None else SystemClock()
        path = Path(path)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        set_aside: list[tuple[str, str, str]] = []
        try:
            conn = _connect(path)
        except _Unusable as exc:
            moved = _set_aside(path, clock.now())
            set_aside.append((str(path), str(moved), str(exc)))
            try:
                conn = _connect(path)
            except _Unusable as again:
                raise StateError(f"{path}: cannot create a fresh store: {again}") from None
        return cls(path, conn, set_aside)

    def close(self) -> None:
        """Close the connection (checkpointing the WAL); idempotent."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[StateStore]:
        """Group writes atomically: all commit at the end of the block, or none on an error."""
        with self._lock:
            outermost = self._depth == 0
            if outermost:
                self._execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outermost:
                    self._execute("ROLLBACK")
                raise
            self._depth -= 1
            if outermost:
                self._execute("COMMIT")

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: {exc}") from exc

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._execute(sql, params).fetchall())

    # --- run bookkeeping ----------------------------------------------------------------

    def record_scheduled(
        self, tier: str, scheduled_for: datetime, run_id: str, trigger: str
    ) -> None:
        """Bookkeep a queued run; for a cron occurrence, call it when queuing (exactly once)."""
        with self.transaction():
            self._execute(
                "INSERT INTO runs (run_id, tier, trigger, scheduled_for) VALUES (?, ?, ?, ?)",
                (run_id, tier, trigger, _iso(scheduled_for)),
            )

    def record_started(self, run_id: str, at: datetime) -> None:
        """Bookkeep that a queued run started."""
        self._update_run("UPDATE runs SET started = ? WHERE run_id = ?", (_iso(at), run_id), run_id)

    def record_completed(self, run_id: str, at: datetime, status: str, succeeded: bool) -> None:
        """Bookkeep that a run ended with ``status``; ``succeeded``: every check gave a result."""
        self._update_run(
            "UPDATE runs SET completed = ?, status = ?, succeeded = ? WHERE run_id = ?",
            (_iso(at), status, int(succeeded), run_id),
            run_id,
        )

    def record_interrupted(self, run_id: str) -> None:
        """Bookkeep that a stop interrupted a run; it stays incomplete for the next start."""
        self._update_run(
            "UPDATE runs SET status = ? WHERE run_id = ?",
            (INTERRUPTED_STATUS, run_id),
            run_id,
        )

    def _update_run(self, sql: str, params: tuple[Any, ...], run_id: str) -> None:
        with self.transaction():
            if self._execute(sql, params).rowcount != 1:
                raise StateError(f"{self.path}: no run {run_id!r} was recorded as scheduled")

    def last_scheduled(
        self, tier: str, triggers: Collection[str] = SCHEDULED_TRIGGERS
    ) -> datetime | None:
        """The latest ``scheduled_for`` among the tier's rows by ``triggers``."""
        marks = ",".join("?" * len(triggers))
        rows = self._query(
            f"SELECT MAX(scheduled_for) FROM runs WHERE tier = ? AND trigger IN ({marks})",  # noqa: S608 -- only placeholders are interpolated
            (tier, *triggers),
        )
        return _parse(rows[0][0])

    def last_started(self, tier: str) -> datetime | None:
        """When the tier's most recent run started, or None."""
        return _parse(self._query("SELECT MAX(started) FROM runs WHERE tier = ?", (tier,))[0][0])

    def last_success(self, tier: str) -> datetime | None:
        """When the tier's most recent successful run completed, or None."""
        rows = self._query(
            "SELECT MAX(completed) FROM runs WHERE tier = ? AND succeeded = 1", (tier,)
        )
        return _parse(rows[0][0])

    def last_run(self, tier: str) -> RunRow | None:
        """The tier's most recently queued run, or None."""
        rows = self._query(f"{_RUN_SELECT} WHERE tier = ? ORDER BY id DESC LIMIT 1", (tier,))
        return _run_row(rows[0]) if rows else None

    def incomplete_runs(self) -> list[RunRow]:
        """Runs queued or started but never completed (the daemon stopped or was killed).

        Rows bookkeeping a missed occurrence (trigger ``"missed"``) are not runs and are left out.
        A run a graceful stop interrupted has status ``"interrupted"``; one a crash or
        ``kill -9`` interrupted has none. Oldest first.
        """
        rows = self._query(
            f"{_RUN_SELECT} WHERE completed IS NULL AND trigger != ? ORDER BY id", (MISSED_TRIGGER,)
        )
        return [_run_row(row) for row in rows]

    def catch_up_baseline(self, tier: str, now: datetime) -> datetime | None:
        """What ``plan_catch_up`` should treat as the tier's last scheduled time.

        The last scheduled cron/catch-up run; failing that, the time the daemon first started
        with this tier. On that very first start this records ``now`` and returns None (nothing
        was missed), so an occurrence missed before the tier's first run is still caught up.
        """
        with self.transaction():
            last = self.last_scheduled(tier)
            if last is not None:
                return last
            origin = self.get_json(_ORIGIN_NAMESPACE, tier)
            if origin is None:
                self.put_json(_ORIGIN_NAMESPACE, tier, _iso(now))
                return None
            return _parse(str(origin))

    # --- key/value ----------------------------------------------------------------------

    def get_json(self, namespace: str, key: str) -> Any | None:
        """The JSON value stored under (namespace, key), or None."""
        rows = self._query("SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        return json.loads(rows[0][0]) if rows else None

    def put_json(self, namespace: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value (datetimes: pass ISO strings); replaces any old one."""
        try:
            text = json.dumps(value, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StateError(f"{namespace}/{key}: value is not JSON: {exc}") from None
        with self.transaction():
            self._execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                (namespace, key, text),
            )

    def delete(self, namespace: str, key: str) -> None:
        """Remove (namespace, key) if present."""
        with self.transaction():
            self._execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    def items(self, namespace: str) -> dict[str, Any]:
        """Every key of ``namespace`` with its value."""
        rows = self._query(
            "SELECT key, value FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
        )
        return {key: json.loads(value) for key, value in rows}


_RUN_SELECT: Final = (
    "SELECT run_id, tier, trigger, scheduled_for, started, completed, status, succeeded FROM runs"
)


def _run_row(row: tuple[Any, ...]) -> RunRow:
    run_id, tier, trigger, scheduled_for, started, completed, status, succeeded = row
    scheduled = _parse(scheduled_for)
    assert scheduled is not None  # NOT NULL column
    return RunRow(
        run_id=run_id,
        tier=tier,
        trigger=trigger,
        scheduled_for=scheduled,
        started=_parse(started),
        completed=_parse(completed),
        status=status,
        succeeded=None if succeeded is None else bool(succeeded),
    )


def _connect(path: Path) -> sqlite3.Connection:
    """Open, verify and migrate the database; raise ``_Unusable`` if the file cannot serve."""
    # Create the file ourselves so it is 0600 from the first byte; SQLite gives its -wal and
    # -shm files the same mode.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    path.chmod(0o600)
    # Autocommit mode: transactions are ours (BEGIN IMMEDIATE in StateStore.transaction).
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    try:
        _verify_and_migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _verify_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            detail = "; ".join(str(r[0]) for r in rows[:3])
            raise _Unusable(f"integrity check failed: {detail}")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StateError(f"{path}: cannot enable WAL journal mode (got {mode!r})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{path}: schema version {version} is newer than this daemon's "
                f"{SCHEMA_VERSION}; refusing to downgrade it"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        # Reading every table proves the schema is what the migrations made.
        conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        conn.execute("SELECT COUNT(*) FROM kv").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _Unusable(str(exc)) from None


def _schema_version(conn: sqlite3.Connection) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables - {"sqlite_sequence"}:
            raise _Unusable(f"not a kernelwatch store (tables: {', '.join(sorted(tables))})")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if row is None or row[0] is None:
        return 0
    if not isinstance(row[0], int):
        raise _Unusable(f"schema version is not an integer: {row[0]!r}")
    return row[0]


def _set_aside(path: Path, now: datetime) -> Path:
    """Rename the file and its WAL/SHM sidecars out of the way; never delete them."""
    stamp = ensure_utc(now).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    path.rename(target)
    for suffix in ("-wal", "-shm"):
        sidecar = path.with_name(path.name + suffix)
        if sidecar.exists():
            sidecar.rename(target.with_name(target.name + suffix))
    return target
