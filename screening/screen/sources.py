"""Databases as record streams, cut into chunks of consecutive items: the units of work and of resumption.

A chunk is a range of stream positions (see :func:`split_into_chunks`), so a resumed run, one with
another number of workers or one whose chunks have another size skips the ranges already committed
and cuts only the rest.
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
from screening.screen.chunk_sizing import ChunkSizer


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
    """Stream items ``start`` … ``end - 1`` (records and the bad ones read among them).

    ``index`` numbers the chunk in stream order, chunks saved by earlier runs included; a chunk
    is identified by its range, since chunk sizes may differ between runs.
    """

    index: int
    records: list[Any]
    errors: list[RecordError] = field(default_factory=list)
    start: int = 0
    end: int = 0

    @property
    def n_items(self) -> int:
        return len(self.records) + len(self.errors)


def split_into_chunks(
    items: Iterable[Any],
    chunk_size: int | ChunkSizer,
    done: Iterable[tuple[int, int]] = (),
    stats: dict[str, int] | None = None,
) -> Iterator[Chunk]:
    """Cut a record stream into chunks of consecutive items; items in ``done`` ranges are read past.

    An item is a record or a :class:`RecordError` (a record that could not be read), and its
    position in the stream is its identity: the source yields the same items in the same order
    on every read. ``done`` holds the ``[start, end)`` ranges saved by earlier runs; a new chunk
    never reaches into one, so chunks of different sizes (another run's, or a sizer's that grew)
    tile the stream without overlap. ``chunk_size`` is a fixed size or a :class:`ChunkSizer`,
    asked for the size of each chunk when the chunk is started. When the stream ends,
    ``stats["n_items"]`` is the number of items it held and ``stats["n_chunks"]`` the number of
    chunks, the done ones included.
    """
    if isinstance(chunk_size, ChunkSizer):
        sizer = chunk_size
    else:
        if chunk_size < 1:
            raise ScreenError(f"chunk size must be at least 1, got {chunk_size}")
        sizer = ChunkSizer.fixed(chunk_size)
    saved = sorted((int(a), int(b)) for a, b in done)
    d = 0  # the first saved range that does not end at or before the current position
    index, pos = 0, 0
    current: Chunk | None = None
    limit = 0
    for item in items:
        while d < len(saved) and pos >= saved[d][1]:
            d += 1
        if d < len(saved) and saved[d][0] <= pos:  # inside a saved range: read past
            if pos == saved[d][0]:
                index += 1
            pos += 1
            continue
        if current is None:
            room = saved[d][0] - pos if d < len(saved) else None
            size = sizer.next_size()
            limit = size if room is None else min(size, room)
            current = Chunk(index, [], [], start=pos, end=pos)
        if isinstance(item, RecordError):
            current.errors.append(item)
        else:
            current.records.append(item)
        pos += 1
        current.end = pos
        if pos - current.start == limit:
            yield current
            index, current = index + 1, None
    if current is not None:
        yield current
        index += 1
    if stats is not None:
        stats["n_items"] = pos
        stats["n_chunks"] = index


__all__ = ["Chunk", "PathSource", "RecordSource", "ScreenError", "open_database", "split_into_chunks"]
