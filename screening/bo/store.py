"""Campaign persistence in SQLite: nothing told is ever lost.

One file per campaign, in WAL mode with ``synchronous=FULL``; every state change (a batch of
suggestions becoming pending, a batch of results being told) is one transaction, so a process
killed with SIGKILL at any instant leaves either the state before or the state after that
change, never half of it.

Tables
- ``meta``: key/value text — the campaign config (JSON), the pool reference (path + content
  hash), the schema version.
- ``observations``: one row per told point, in tell order (``seq``): the point's key (a
  candidate id, or the coordinates of a box point), its coordinates (JSON), ``y`` (JSON: a
  number or a list), the loss, an error reason for failed evaluations, whether it came from the
  prior/initial data, and when it was told.
- ``pending``: points suggested by ``ask`` and not told yet.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from screening.errors import MatscreenError

SCHEMA_VERSION = "1"


class StoreError(MatscreenError):
    """The campaign file is missing, malformed, or a write would corrupt its meaning."""


@dataclass(frozen=True)
class ObservationRecord:
    """One told point. ``y`` is a float, a list of floats, or None for a failed evaluation."""

    key: str
    x: list[float] | None
    y: Any
    loss: float | None
    error: str | None
    source: str  # "prior" (initial data) or "search"
    seq: int | None = None
    told_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PendingRecord:
    key: str
    x: list[float] | None
    asked_at: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class CampaignStore:
    """A campaign's SQLite file. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ---------------------------------------------------------------- lifecycle

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @classmethod
    def create(cls, path: str | Path, config: dict, pool_ref: dict | None = None) -> CampaignStore:
        """A new campaign file holding ``config``; refuses to overwrite an existing one."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: a campaign file already exists (open it to resume)")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = cls._connect(path)
        with _transaction(conn):
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE observations (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, x TEXT, y TEXT,"
                " loss REAL, error TEXT, source TEXT NOT NULL, told_at TEXT NOT NULL)"
            )
            conn.execute("CREATE TABLE pending (key TEXT PRIMARY KEY, x TEXT, asked_at TEXT NOT NULL)")
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [
                    ("schema", SCHEMA_VERSION),
                    ("config", json.dumps(config, sort_keys=True)),
                    ("pool_ref", json.dumps(pool_ref, sort_keys=True)),
                    ("created", _now()),
                ],
            )
        return cls(path, conn)

    @classmethod
    def open(cls, path: str | Path) -> CampaignStore:
        """Reopen an existing campaign file (after a crash, or from another command)."""
        path = Path(path)
        if not path.is_file():
            raise StoreError(f"{path}: no campaign file here")
        try:
            conn = cls._connect(path)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a matscreen campaign file ({exc})") from exc
        if rows.get("schema") != SCHEMA_VERSION:
            raise StoreError(f"{path}: campaign schema {rows.get('schema')!r}, this version reads {SCHEMA_VERSION!r}")
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    def _meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: meta entry {key!r} is missing")
        return json.loads(row[0])

    @property
    def config(self) -> dict:
        return self._meta("config")

    @property
    def pool_ref(self) -> dict | None:
        return self._meta("pool_ref")

    def observations(self) -> list[ObservationRecord]:
        rows = self._conn.execute(
            "SELECT seq, key, x, y, loss, error, source, told_at FROM observations ORDER BY seq"
        ).fetchall()
        return [
            ObservationRecord(
                key=k,
                x=json.loads(x) if x else None,
                y=json.loads(y) if y is not None else None,
                loss=loss,
                error=err,
                source=src,
                seq=seq,
                told_at=t,
            )
            for seq, k, x, y, loss, err, src, t in rows
        ]

    def pending(self) -> list[PendingRecord]:
        rows = self._conn.execute("SELECT key, x, asked_at FROM pending ORDER BY rowid").fetchall()
        return [PendingRecord(k, json.loads(x) if x else None, t) for k, x, t in rows]

    def told_keys(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT key FROM observations")}

    # ---------------------------------------------------------------- writing

    def add_pending(self, items: Iterable[tuple[str, list[float] | None]]) -> None:
        """Record suggested points as pending, in one transaction."""
        now = _now()
        rows = [(k, json.dumps(x) if x is not None else None, now) for k, x in items]
        with _transaction(self._conn):
            self._conn.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", rows)

    def clear_pending(self, keys: Iterable[str] | None = None) -> None:
        with _transaction(self._conn):
            if keys is None:
                self._conn.execute("DELETE FROM pending")
            else:
                self._conn.executemany("DELETE FROM pending WHERE key = ?", [(k,) for k in keys])

    def record_tell(self, records: list[ObservationRecord]) -> None:
        """Append told observations and drop them from pending, atomically.

        Raises :class:`StoreError` (and writes nothing) when a key is already told.
        """
        now = _now()
        try:
            with _transaction(self._conn):
                for r in records:
                    self._conn.execute(
                        "INSERT INTO observations (key, x, y, loss, error, source, told_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            r.key,
                            json.dumps(r.x) if r.x is not None else None,
                            json.dumps(r.y) if r.y is not None else None,
                            r.loss,
                            r.error,
                            r.source,
                            now,
                        ),
                    )
                    self._conn.execute("DELETE FROM pending WHERE key = ?", (r.key,))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: a point in this batch was already told ({exc})") from exc

    def set_meta(self, key: str, value: Any) -> None:
        with _transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
