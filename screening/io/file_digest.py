"""A file's SHA-256, read in 1 MiB blocks: how a campaign recognises its pool and known-data
files, and how an output names the error report beside it; and a file's stamp, which says
whether that digest has to be computed again.

Why stamps: a campaign checked its 0.55 GiB pool file by SHA-256 in every command (1 s or more
at 10^6 candidates). :func:`file_stamp` is what the file system changes with any change of the
bytes: the size, the modification time, the status-change time (set by every write, truncation,
``utime`` and copy, and not settable by a user) and the inode (a file replaced by a rename is a
new inode). :func:`check_sha256` hashes the file again only when its stamp differs from the one
recorded when its digest was last seen to match.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

#: A stamp is kept for a file the user names (the pool, the known data) only once the file has not
#: changed for this long (ns): a write in the same clock tick as the stamp would not move it (git's
#: "racily clean" files), so a younger file is hashed again next time instead.
SETTLE_NS = 2_000_000_000


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_stamp(path: str | Path) -> list[int]:
    """``[size, mtime_ns, ctime_ns, inode, device]`` of ``path`` (JSON-able, for a store)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def check_sha256(path: str | Path, sha256: str, stamp: list[int] | None) -> tuple[bool, list[int]]:
    """Whether ``path`` still holds the bytes whose SHA-256 is ``sha256``, and its stamp now.

    ``stamp``: the file's :func:`file_stamp` when it last matched ``sha256`` (None: never
    recorded). An equal stamp answers without reading the file; any other stamp costs one full
    SHA-256. The caller records the returned stamp when it differs from ``stamp`` and the digest
    matched, so the next check is cheap again. The stamp is taken before the bytes are read: a
    file changed while it is hashed has another stamp next time, and is hashed again."""
    now = file_stamp(path)
    if stamp is not None and list(stamp) == now:
        return True, now
    return file_sha256(path) == sha256, now


def settled(stamp: list[int] | None) -> list[int] | None:
    """``stamp`` when its file's modification and status-change times are :data:`SETTLE_NS` or
    more in the past, else None (record nothing: the next check hashes the file)."""
    if stamp is None or time.time_ns() - max(stamp[1], stamp[2]) < SETTLE_NS:
        return None
    return stamp
