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
- ``asks`` (made on first use): each ask that wrote a file — its points, the file, the process
  that made it and whether the file was written. An ask killed between claiming its points and
  writing its file is finished by the next ask (:meth:`CampaignStore.interrupted_ask`), so its
  points never stay pending in no file.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import weakref
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
class AskRecord:
    """One ask that wrote (or was about to write) a file."""

    batch: int
    keys: list[str]
    file: str
    pid: int
    host: str
    asked_at: str
    written: bool


@dataclass
class PendingRecord:
    key: str
    x: list[float] | None
    asked_at: str


_ASKS_TABLE = (
    "CREATE TABLE IF NOT EXISTS asks (batch INTEGER PRIMARY KEY, keys TEXT NOT NULL, file TEXT NOT NULL,"
    " pid INTEGER NOT NULL, host TEXT NOT NULL, asked_at TEXT NOT NULL, written INTEGER NOT NULL DEFAULT 0)"
)


class _NamedConnection:
    """A SQLite connection whose errors name the campaign file: a damaged, locked or read-only
    store becomes a :class:`StoreError` the command line prints as one line, never an "internal
    error". Integrity errors pass through (:meth:`CampaignStore.record_tell` explains them)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path, self.raw = path, conn

    def _named(self, exc: sqlite3.Error) -> StoreError:
        text = str(exc)
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"{self.path}: the campaign cannot be written here ({text}); "
                "copy its folder somewhere writable to ask or tell"
            )
        if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
            return StoreError(f"{self.path}: another command holds the campaign ({text}); try again when it ends")
        return StoreError(f"{self.path}: the campaign file is damaged ({text}); restore it from a copy")

    def _run(self, method: Any, sql: str, args: Any) -> sqlite3.Cursor:
        try:
            return method(sql, args)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise self._named(exc) from exc

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self._run(self.raw.execute, sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._run(self.raw.executemany, sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def close(self) -> None:
        self.raw.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class CampaignStore:
    """A campaign's SQLite file. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = _NamedConnection(path, conn)
        self.notices: list[str] = []  # what the user should know about this store (the CLI prints them)
        # a clean exit folds the write-ahead log into the main file, even if nobody calls close()
        self._finalizer = weakref.finalize(self, _checkpoint_and_close, conn)

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
            conn.execute(_ASKS_TABLE)
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
        wal_found = path.with_name(path.name + "-wal").exists()  # before opening makes an empty one
        try:
            conn = cls._connect(path)
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a matscreen campaign file ({exc})") from exc
        if rows.get("schema") != SCHEMA_VERSION:
            raise StoreError(f"{path}: campaign schema {rows.get('schema')!r}, this version reads {SCHEMA_VERSION!r}")
        store = cls(path, conn)
        if not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
            store.notices.append(f"{path} is read-only here: status and reports work, ask and tell cannot record")
        store._check_ledger(wal_found)
        return store

    def close(self) -> None:
        """Fold the write-ahead log into the main file (so nothing lives only there) and close."""
        self._finalizer()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    def _meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: meta entry {key!r} is missing")
        return self._json(key, row[0])

    def _json(self, key: str, text: Any) -> Any:
        try:
            return json.loads(text)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"{self.path}: the campaign's {key} is damaged ({exc}); restore the campaign from a copy"
            ) from exc

    @property
    def config(self) -> dict:
        return self._meta("config")

    @property
    def pool_ref(self) -> dict | None:
        return self._meta("pool_ref")

    def observations(self) -> list[ObservationRecord]:
        """Every told observation in tell order; a damaged row raises :class:`StoreError` naming it."""
        rows = self._conn.execute(
            "SELECT seq, key, x, y, loss, error, source, told_at FROM observations ORDER BY seq"
        ).fetchall()
        return [self._observation(*row) for row in rows]

    def _observation(self, seq, k, x, y, loss, err, src, t) -> ObservationRecord:
        def damaged(what: str) -> StoreError:
            return StoreError(
                f"{self.path}: observation {seq} ({k!r}) is damaged: {what}; restore the campaign from a copy"
            )

        try:
            xv = json.loads(x) if x else None
            yv = json.loads(y) if y is not None else None
        except (TypeError, ValueError) as exc:
            raise damaged(f"its point or value is not readable ({exc})") from exc
        if not isinstance(k, str) or not isinstance(src, str):
            raise damaged("its key or source is not text")
        if xv is not None and not (isinstance(xv, list) and all(_is_number(v) for v in xv)):
            raise damaged(f"its point {_short(x)} is not a list of numbers")
        if yv is not None and not _is_numeric(yv):
            raise damaged(f"its value {_short(y)} is not a number or (nested) lists of numbers")
        if loss is not None and not _is_number(loss):
            raise damaged(f"its loss {loss!r} is not a number")
        if err is None and (yv is None or loss is None):
            raise damaged("it has neither a value and a loss nor an error")
        return ObservationRecord(key=k, x=xv, y=yv, loss=loss, error=err, source=src, seq=seq, told_at=t)

    def check(self) -> None:
        """Read everything a tell depends on (config, pool reference, every observation and
        pending point) and raise :class:`StoreError` naming the first damaged part, so a tell on
        a damaged store commits nothing instead of committing and failing afterwards."""
        if not isinstance(self.config, dict):
            raise StoreError(f"{self.path}: the campaign's config is damaged (not a mapping); restore it from a copy")
        _ = self.pool_ref
        self.observations()
        self.pending()

    def pending(self) -> list[PendingRecord]:
        rows = self._conn.execute("SELECT key, x, asked_at FROM pending ORDER BY rowid").fetchall()
        return [PendingRecord(k, self._json(f"pending point {k!r}", x) if x else None, t) for k, x, t in rows]

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
        self._write_ledger()

    # ---------------------------------------------------------------- the told ledger
    # A committed tell may live only in `campaign.sqlite-wal` until SQLite copies it into the main
    # file; deleting that file after a crash loses it with no trace inside the database. So each
    # tell also records, outside SQLite, how many observations the campaign has; a store that
    # opens with fewer says so (:attr:`notices`).

    @property
    def ledger_path(self) -> Path:
        return self.path.with_name(self.path.name + ".told")

    def _created(self) -> str | None:
        """When the campaign was created (stored as plain text, not JSON): tells campaigns apart."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()
        return None if row is None else str(row[0])

    def _write_ledger(self) -> None:
        n = self._conn.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
        text = json.dumps({"created": self._created(), "observations": int(n)})
        tmp = self.ledger_path.with_name(f".tmp-{os.getpid()}-{self.ledger_path.name}")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.ledger_path)
        except OSError:  # the tell is committed; the ledger only helps to notice a loss later
            tmp.unlink(missing_ok=True)

    def _check_ledger(self, wal_found: bool) -> None:
        try:
            ledger = json.loads(self.ledger_path.read_text(encoding="utf-8"))
            created, told = ledger["created"], int(ledger["observations"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # none yet (a new campaign, or one made before the ledger)
        if created != self._created():
            return  # left by an earlier campaign in this folder
        n = self._conn.execute("SELECT COUNT(*) FROM observations").fetchone()[0]
        if n < told:
            self.notices.append(
                f"{self.path} holds {n} observations but {told} were told"
                + (" and its write-ahead log is missing" if not wal_found else "")
                + ": results told since the last clean close are lost (was campaign.sqlite-wal deleted?);"
                " tell those results again"
            )

    def snapshot(self) -> tuple:
        """What a suggestion depends on in the store: the observations told and the points
        pending. :meth:`claim` records a batch only if this has not changed since it was read."""
        told = self._conn.execute("SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM observations").fetchone()
        pending = tuple(r[0] for r in self._conn.execute("SELECT key FROM pending ORDER BY rowid"))
        return (tuple(told), pending)

    def claim(
        self,
        items: list[tuple[str, list[float] | None]],
        expect: tuple | None,
        file: str | None = None,
    ) -> int | None:
        """Record ``items`` as pending, in one transaction with the check that the store is still
        at ``expect`` (:meth:`snapshot`; None: no check); with ``file`` the ask is recorded too.

        Returns the ask's batch number (0 without ``file``), or None when another process told or
        asked in the meantime — the caller then suggests again from the new state, so two
        concurrent asks never hand out the same point. ``file``: the ask file it will write,
        renamed by :meth:`_free_name` where an earlier ask file of that name still lists pending
        points (read the name back with :meth:`ask_file`)."""
        now = _now()
        with _transaction(self._conn):
            if expect is not None and self.snapshot() != expect:
                return None
            rows = [(k, json.dumps(x) if x is not None else None, now) for k, x in items]
            self._conn.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?, ?)", rows)
            if file is None:
                return 0
            self._conn.execute(_ASKS_TABLE)
            name = self._free_name(file)
            cur = self._conn.execute(
                "INSERT INTO asks (keys, file, pid, host, asked_at) VALUES (?, ?, ?, ?, ?)",
                (json.dumps([k for k, _ in items]), name, os.getpid(), socket.gethostname(), now),
            )
            return int(cur.lastrowid or 0)

    def _free_name(self, file: str) -> str:
        """``file``, or ``file`` with ``-2``, ``-3``, ... before its suffix when an earlier ask
        file of that name still lists pending points (replacing it would leave them in no file)."""
        pending = {r[0] for r in self._conn.execute("SELECT key FROM pending")}
        used = {f for f, keys in self._conn.execute("SELECT file, keys FROM asks") if set(json.loads(keys)) & pending}
        path = Path(file)
        k = 1
        while True:
            name = str(path if k == 1 else path.with_name(f"{path.stem}-{k}{path.suffix}"))
            if name not in used and (k == 1 or not Path(name).exists()):  # the caller checked ``file``
                return name
            k += 1

    def asks(self) -> list[AskRecord]:
        """Every recorded ask, oldest first (none for a campaign made before asks were recorded)."""
        if not self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'asks'").fetchone():
            return []
        rows = self._conn.execute(
            "SELECT batch, keys, file, pid, host, asked_at, written FROM asks ORDER BY batch"
        ).fetchall()
        return [AskRecord(b, json.loads(k), f, p, h, t, bool(w)) for b, k, f, p, h, t, w in rows]

    def ask_file(self, batch: int) -> str:
        """The file name recorded for ask ``batch``."""
        return next(a.file for a in self.asks() if a.batch == batch)

    def mark_written(self, batch: int) -> None:
        with _transaction(self._conn):
            self._conn.execute("UPDATE asks SET written = 1 WHERE batch = ?", (batch,))

    def interrupted_ask(self) -> AskRecord | None:
        """The latest ask whose file was never written, whose points are all still pending and
        whose process is gone (killed): the next ask finishes it instead of suggesting anew.

        An ask whose process still runs (on this host, or any ask from another host) is not
        interrupted: a concurrent ask must not hand out its points a second time."""
        pending = {p.key for p in self.pending()}
        for a in reversed(self.asks()):
            if a.written or not set(a.keys) <= pending:
                continue
            if a.host == socket.gethostname() and not _process_alive(a.pid, a.asked_at):
                return a
        return None

    def set_meta(self, key: str, value: Any) -> None:
        with _transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else self._json(key, row[0])


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> Any:
        self.nested = self.conn.in_transaction  # inside another: part of it, committed with it
        if not self.nested:
            self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.nested:
            return
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def _process_alive(pid: int, since: str) -> bool:
    """Whether process ``pid`` on this host still runs and started before ``since`` (so a
    recycled pid of a later process does not count)."""
    if pid == os.getpid():
        return True
    try:
        import psutil  # type: ignore[import-untyped, import-not-found, unused-ignore]

        proc = psutil.Process(pid)
        started = datetime.fromtimestamp(proc.create_time(), tz=timezone.utc)
        return started <= datetime.fromisoformat(since) and proc.status() != psutil.STATUS_ZOMBIE
    except ImportError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    except Exception as exc:  # no such process, or another user's (access denied: it runs)
        return type(exc).__name__ == "AccessDenied"


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _checkpoint_and_close(conn: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the main file and truncate it, then close (the store's
    finalizer: runs at :meth:`CampaignStore.close`, on garbage collection or at exit)."""
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:  # read-only, or another process holds the campaign: it checkpoints later
        pass
    conn.close()


def _is_numeric(v: Any) -> bool:
    """A number, or (nested) lists of numbers: a value, a spectrum, replicate spectra."""
    return _is_number(v) or (isinstance(v, list) and all(_is_numeric(u) for u in v))


def _short(text: Any, width: int = 60) -> str:
    r = repr(text)
    return r if len(r) <= width else r[: width - 3] + "..."
