"""The checked pool a campaign reads in every command, kept in its folder: a pool snapshot.

Why: each ``campaign ask`` and ``tell`` read the pool file again, checked every row, projected
every embedding with the PCA and hashed the file: 35-50 % of a later ``ask`` at 10^6 candidates
(docs/benchmarks.md). What a command needs of the pool after the first check is small: the ids,
the descriptive columns (formula, predictions, known gaps), and the PCA coordinates; the 128-d
embeddings matter only when the search model is built (once per campaign). So the campaign keeps,
beside its store:

- ``pool_snapshot.parquet``: the checked pool frame without its embedding columns, plus the PCA
  coordinates as :data:`FEATURE_PREFIX` columns (float64, exact);
- ``known_snapshot.parquet``: the checked known data (ids, values, predictions, embeddings).

Trust: the store records each snapshot file's SHA-256 and :func:`~screening.io.file_digest.file_stamp`
(:data:`META_KEY`); a file whose stamp changed is hashed again, and one whose digest differs (edited,
copied in, half written) is not read: the campaign reads the pool file again and writes a new
snapshot. The pool and known files themselves stay checked against the SHA-256 recorded at
``campaign new`` (by stamp, then by digest): a changed pool is refused as before. The embeddings
are read from the pool file (checked again) only when the model needs them
(:attr:`BandGapPool.load_embedding`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from screening.io.atomic import atomic_path
from screening.io.file_digest import check_sha256, file_sha256, file_stamp

POOL_SNAPSHOT_NAME = "pool_snapshot.parquet"
KNOWN_SNAPSHOT_NAME = "known_snapshot.parquet"
#: The store's meta entry: ``{"format", "files": {name: {"sha256", "stamp"}}, "inputs": {"pool"|"known": stamp}}``.
META_KEY = "pool_snapshot"
FORMAT = 1
#: Columns of the pool snapshot that hold the PCA coordinates (the pool's own columns never start so).
FEATURE_PREFIX = "__pca_"
_KNOWN_COLUMNS = ("__id", "__value", "__pred", "__std")


class SnapshotUnusable(Exception):
    """A snapshot file is missing, changed or unreadable: the caller reads the pool file instead."""


def write_pool_snapshot(folder: Path, frame: pd.DataFrame, features: np.ndarray, emb_columns: list[str]) -> dict:
    """Write the checked pool ``frame`` without ``emb_columns``, with ``features`` (n, d) as
    :data:`FEATURE_PREFIX` columns; return its record (``{"sha256", "stamp"}``).

    Raises :class:`SnapshotUnusable` when the frame cannot round-trip through Parquet (a column
    of mixed types) or uses the reserved names: the campaign then reads the pool file each time."""
    light = frame.drop(columns=list(emb_columns))
    if any(str(c).startswith(FEATURE_PREFIX) for c in light.columns):
        raise SnapshotUnusable(f"the pool has a column named {FEATURE_PREFIX}*")
    coords = pd.DataFrame(np.asarray(features, dtype=np.float64), columns=_feature_names(features.shape[1]))
    return _write(folder / POOL_SNAPSHOT_NAME, pd.concat([light.reset_index(drop=True), coords], axis=1))


def read_pool_snapshot(folder: Path, record: dict | None) -> tuple[pd.DataFrame, np.ndarray]:
    """``(frame, features)`` from the pool snapshot that ``record`` vouches for.

    Raises :class:`SnapshotUnusable` (with the reason) when it does not, or when it cannot be read."""
    data = _read(folder / POOL_SNAPSHOT_NAME, record)
    names = [c for c in data.columns if str(c).startswith(FEATURE_PREFIX)]
    if not names or names != _feature_names(len(names)):
        raise SnapshotUnusable(f"{POOL_SNAPSHOT_NAME} has no PCA coordinates")
    return data.drop(columns=names), data[names].to_numpy(dtype=np.float64)


def write_known_snapshot(folder: Path, known: Any) -> dict:
    """Write the checked known data (a :class:`~screening.bo.known_fit.KnownData`); its record."""
    n, d = known.embedding.shape
    data = pd.DataFrame(
        {
            "__id": list(known.ids),
            "__value": np.asarray(known.values, dtype=np.float64),
            "__pred": known.prior_mean if known.prior_mean is not None else np.full(n, np.nan),
            "__std": known.prior_std if known.prior_std is not None else np.full(n, np.nan),
        }
    )
    emb = pd.DataFrame(np.asarray(known.embedding, dtype=np.float64), columns=[f"e{i}" for i in range(d)])
    data = pd.concat([data, emb], axis=1)
    record = _write(folder / KNOWN_SNAPSHOT_NAME, data)
    record["has_pred"], record["has_std"] = known.prior_mean is not None, known.prior_std is not None
    record["same_quantity"] = bool(known.same_quantity)
    return record


def read_known_snapshot(folder: Path, record: dict | None) -> Any:
    """The :class:`~screening.bo.known_fit.KnownData` that ``record`` vouches for (or
    :class:`SnapshotUnusable`)."""
    from screening.bo.known_fit import KnownData

    data = _read(folder / KNOWN_SNAPSHOT_NAME, record)
    assert record is not None  # _read refused None
    if list(data.columns[: len(_KNOWN_COLUMNS)]) != list(_KNOWN_COLUMNS):
        raise SnapshotUnusable(f"{KNOWN_SNAPSHOT_NAME} lacks its columns")
    emb = data.drop(columns=list(_KNOWN_COLUMNS)).to_numpy(dtype=np.float64)
    pred = data["__pred"].to_numpy(dtype=np.float64) if record.get("has_pred") else None
    std = data["__std"].to_numpy(dtype=np.float64) if record.get("has_std") else None
    return KnownData(
        data["__id"].astype(str).tolist(),
        emb,
        data["__value"].to_numpy(dtype=np.float64),
        pred,
        std,
        same_quantity=bool(record.get("same_quantity", True)),
    )


def _feature_names(d: int) -> list[str]:
    return [f"{FEATURE_PREFIX}{i}" for i in range(d)]


def _write(path: Path, data: pd.DataFrame) -> dict:
    """Write ``data`` as Parquet atomically; ``{"sha256", "stamp"}`` of the file written."""
    try:
        with atomic_path(path) as tmp:
            data.to_parquet(tmp, index=False)
            sha = file_sha256(tmp)
    except (ValueError, TypeError, ImportError) as exc:  # pyarrow's type errors are ValueErrors / TypeErrors
        raise SnapshotUnusable(f"the table cannot be kept as Parquet ({exc})") from exc
    return {"sha256": sha, "stamp": file_stamp(path)}


def _read(path: Path, record: dict | None) -> pd.DataFrame:
    """The Parquet file at ``path`` when ``record`` vouches for its bytes."""
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        raise SnapshotUnusable(f"{path.name} was not recorded by this campaign")
    if not path.is_file():
        raise SnapshotUnusable(f"{path.name} is missing")
    ok, stamp = check_sha256(path, record["sha256"], record.get("stamp"))
    if not ok:
        raise SnapshotUnusable(f"{path.name} is not what this campaign wrote")
    record["stamp"] = stamp  # the caller saves the record again when the stamp moved
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise SnapshotUnusable(f"{path.name} could not be read ({exc})") from exc
