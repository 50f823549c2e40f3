"""Databases as record streams, cut into numbered chunks: the units of work and of resumption.

A chunk's number depends only on the stream (see :func:`split_into_chunks`), so a resumed run, or
one with another number of workers, finds the same chunks and skips the ones already committed.
:class:`ScreenError` lives here, in the module every other part of a screening run imports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from screening.errors import MatscreenError, RecordError


class ScreenError(MatscreenError):
    """A screening run cannot start or continue (bad options, a work folder of another run)."""


class RecordSource(Protocol):
    """A database as a re-readable stream: same records in the same order on every read.

    ``key`` identifies the content (a changed database must change it) so a resumed run can
    tell it is reading what it read before; ``count()`` (may be ``None``) sizes progress bars.
    """

    key: str

    def __iter__(self) -> Iterator[Any]: ...

    def count(self) -> int | None: ...


class PathSource:
    """A database on disk: a folder from ``matscreen fetch-mp`` or any source ``iter_records`` reads."""

    def __init__(self, path: str | Path) -> None:
        from screening.io.materials_project import is_mp_database
        from screening.io.sources import source_kind

        self.path = Path(path)
        if not self.path.exists():
            raise ScreenError(f"database not found: {self.path}")
        self.is_mp_db = is_mp_database(self.path)
        if not self.is_mp_db:
            source_kind(self.path)  # raises a clear MatscreenError for unknown kinds
        self.key = f"{self.path.resolve()}|{_content_stamp(self.path)}"

    def __iter__(self) -> Iterator[Any]:
        if self.is_mp_db:
            from screening.io.materials_project import iter_database_records

            return iter_database_records(self.path)
        from screening.io.sources import iter_records

        return iter_records(self.path)

    def count(self) -> int | None:
        try:
            if self.is_mp_db:
                from screening.io.materials_project import count_database_records

                return count_database_records(self.path)
            from screening.io.sources import count_records

            return count_records(self.path)
        except Exception:  # noqa: BLE001 - a progress bar without a total is fine
            return None


def _content_stamp(path: Path) -> str:
    """Size and modification time of a file, or of every file in a folder (hashed)."""
    if path.is_file():
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.blake2b(digest_size=12)
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        try:  # a symlink loop raises here; such entries become error records, not a crash
            if not entry.is_file():
                continue
            st = entry.stat()
        except OSError:
            continue
        # surrogateescape: a file name that is not UTF-8 must not stop the run (issue 12)
        h.update(f"{entry.name}:{st.st_size}:{st.st_mtime_ns};".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def open_database(db: str | Path | RecordSource) -> RecordSource:
    """A path becomes a :class:`PathSource`; anything with ``key`` and ``__iter__`` is used as is."""
    if isinstance(db, (str, Path)):
        return PathSource(db)
    if not hasattr(db, "key") or not hasattr(db, "__iter__"):
        raise ScreenError(f"not a database: {db!r} (give a path or an object with .key and __iter__)")
    return db


@dataclass
class Chunk:
    """Records ``index * size`` … ``(index + 1) * size - 1`` of the stream and the bad ones read among them."""

    index: int
    records: list[Any]
    errors: list[RecordError] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return len(self.records) + len(self.errors)


def split_into_chunks(
    items: Iterable[Any], chunk_size: int, skip: Iterable[int] = (), stats: dict[str, int] | None = None
) -> Iterator[Chunk]:
    """Cut a record stream into numbered chunks; chunks in ``skip`` are read past, not kept.

    Chunk k holds good records k·size … (k+1)·size − 1; an error item belongs to the chunk of
    the next good record (errors after the last record form a final chunk of their own), so the
    numbering depends only on the stream and is the same on every read. When the stream ends,
    ``stats["n_chunks"]`` is set to the number of chunks the stream has.
    """
    if chunk_size < 1:
        raise ScreenError(f"chunk size must be at least 1, got {chunk_size}")
    skip = set(skip)
    index, n_in_chunk, errors_in_chunk = 0, 0, 0
    records: list[Any] = []
    errors: list[RecordError] = []
    for item in items:
        if isinstance(item, RecordError):
            errors_in_chunk += 1
            if index not in skip:
                errors.append(item)
            continue
        n_in_chunk += 1
        if index not in skip:
            records.append(item)
        if n_in_chunk == chunk_size:
            if index not in skip:
                yield Chunk(index, records, errors)
            index, n_in_chunk, errors_in_chunk, records, errors = index + 1, 0, 0, [], []
    has_tail = n_in_chunk > 0 or errors_in_chunk > 0
    if stats is not None:
        stats["n_chunks"] = index + (1 if has_tail else 0)
    if has_tail and index not in skip:
        yield Chunk(index, records, errors)


__all__ = ["Chunk", "PathSource", "RecordSource", "ScreenError", "open_database", "split_into_chunks"]
