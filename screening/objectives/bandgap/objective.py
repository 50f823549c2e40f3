"""Band-gap target search over a pool of featurised crystals, with the pool as the oracle.

The seed's setting: every crystal in the pool already has a known (DFT) band gap, and we pretend
that looking one up is an experiment. The campaign sees only PCA coordinates of the crystals'
CGCNN embeddings (and optionally the network's predicted gap as a prior mean) and must find a
crystal whose gap is within ``tolerance`` of ``target`` (both in eV) in as few look-ups as
possible.

Pool files are the Parquet tables that ``matscreen featurize`` writes: columns ``id``,
``formula``, ``emb_0`` … ``emb_{d-1}``, ``pred_band_gap`` (eV, optional) and ``band_gap`` (eV, the
oracle's answers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from screening.bo.domain import DiscretePool
from screening.bo.objective import Evaluation
from screening.errors import MatscreenError, RecordError
from screening.reduce import PCAReducer, embedding_columns


class PoolFileError(MatscreenError):
    """A pool file is missing, unreadable or lacks the columns a search needs."""


@dataclass
class BandGapPool:
    """A loaded pool: the candidates' frame, their PCA features, and the fitted reducer."""

    frame: pd.DataFrame
    features: np.ndarray
    reducer: PCAReducer
    source: str
    file_hash: str
    embedding: np.ndarray  # the full embeddings (n, d) the PCA features come from

    @property
    def ids(self) -> list[str]:
        return self.frame["id"].astype(str).tolist()

    def domain(self, use_prior: bool = False, pred_as_feature: bool = False, known=None) -> DiscretePool:
        """The candidates as a DiscretePool: PCA features, optionally with the CGCNN-predicted gap
        (eV) as the prior-mean covariate and/or as one more input feature of the GP; the full
        embeddings and any ``known`` data (:class:`~screening.bo.neighbour_search.KnownData`)
        ride along for the neighbour surrogate."""
        pred = None
        if use_prior or pred_as_feature:
            if "pred_band_gap" not in self.frame.columns:
                raise PoolFileError(f"{self.source}: no pred_band_gap column")
            pred = self.frame["pred_band_gap"].to_numpy(dtype=np.float64)
        feats = np.hstack([self.features, pred.reshape(-1, 1)]) if pred_as_feature else self.features  # type: ignore[union-attr]
        return DiscretePool(
            self.ids, feats, prior_mean=pred if use_prior else None, embedding=self.embedding, known=known
        )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pool_from_frame(
    frame: pd.DataFrame,
    n_components: int = 3,
    reducer: PCAReducer | None = None,
    source: str = "<frame>",
    require_band_gap: bool = True,
) -> BandGapPool:
    """Validate a featurised frame and project its embeddings with PCA (fitted here unless given).

    Rows with a missing id, a duplicate id, non-finite embeddings or (when the gap is required)
    a missing band gap raise :class:`RecordError` naming the row, so a broken pool is not
    silently searched.
    """
    emb = embedding_columns(frame.columns)
    missing = [c for c in ("id",) if c not in frame.columns]
    if require_band_gap and "band_gap" not in frame.columns:
        missing.append("band_gap")
    if missing or not emb:
        raise PoolFileError(f"{source}: missing columns {missing + ([] if emb else ['emb_0...'])}")
    frame = frame.reset_index(drop=True).copy()
    frame["id"] = frame["id"].astype(str)
    dup = frame["id"].duplicated()
    if dup.any():
        raise RecordError(frame.loc[dup.idxmax(), "id"], "duplicate id in the pool", source)
    E = frame[emb].to_numpy(dtype=np.float64)
    bad = ~np.all(np.isfinite(E), axis=1)
    if bad.any():
        raise RecordError(frame.loc[int(np.flatnonzero(bad)[0]), "id"], "non-finite embedding value", source)
    if require_band_gap:
        gaps = pd.to_numeric(frame["band_gap"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(gaps)
        if bad.any():
            raise RecordError(
                frame.loc[int(np.flatnonzero(bad)[0]), "id"], "band_gap is missing or not a number", source
            )
    if reducer is None:
        reducer = PCAReducer(n_components=n_components).fit(E)
    features = reducer.transform(E)
    return BandGapPool(frame, features, reducer, source, "", E)


def load_pool(
    path: str | Path, n_components: int = 3, reducer: PCAReducer | None = None, require_band_gap: bool = True
) -> BandGapPool:
    """Read a featurised Parquet pool and project it (see :func:`pool_from_frame`)."""
    path = Path(path)
    if not path.is_file():
        raise PoolFileError(f"{path}: pool file not found")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise PoolFileError(f"{path}: cannot read as Parquet ({exc})") from exc
    pool = pool_from_frame(frame, n_components, reducer, str(path), require_band_gap)
    pool.file_hash = file_sha256(path)
    return pool


class BandGapPoolObjective:
    """Find a crystal with band gap ``target`` ± ``tolerance`` (eV); the pool's gaps are the oracle.

    ``loss(y) = |y - target|`` in eV; ``is_hit(y)`` when that is within ``tolerance``.
    """

    def __init__(self, domain: DiscretePool, band_gaps: Sequence[float], target: float, tolerance: float) -> None:
        gaps = np.asarray(band_gaps, dtype=np.float64).reshape(-1)
        if gaps.shape[0] != len(domain):
            raise PoolFileError(f"{gaps.shape[0]} band gaps for {len(domain)} candidates")
        if tolerance < 0:
            raise MatscreenError("tolerance must be non-negative (eV)")
        self.domain = domain
        self.band_gaps = gaps
        self.target = float(target)
        self.tolerance = float(tolerance)

    @classmethod
    def from_pool(
        cls, pool: BandGapPool, target: float, tolerance: float, use_prior: bool = False, pred_as_feature: bool = False
    ) -> BandGapPoolObjective:
        return cls(
            pool.domain(use_prior, pred_as_feature),
            pool.frame["band_gap"].to_numpy(dtype=np.float64),
            target,
            tolerance,
        )

    def evaluate(self, points: Sequence[str]) -> list[Evaluation]:
        out = []
        for p in points:
            if not self.domain.contains(p):
                out.append(Evaluation(p, None, "unknown candidate: not in the pool"))
                continue
            gap = float(self.band_gaps[self.domain.index_of(p)])
            out.append(Evaluation(p, gap) if np.isfinite(gap) else Evaluation(p, None, "no known band gap"))
        return out

    def loss(self, y: float) -> float:
        return abs(float(y) - self.target)

    def is_hit(self, y: float) -> bool:
        return abs(float(y) - self.target) <= self.tolerance + 1e-12

    def n_hits(self) -> int:
        """How many pool candidates are hits: what random search is up against."""
        return int(np.sum(np.abs(self.band_gaps - self.target) <= self.tolerance + 1e-12))


def load_known(path: str | Path, pool: BandGapPool, label: str = "band_gap"):
    """Known data for a pool: a featurised table (Parquet or CSV) of labelled crystals that are
    not candidates, as :class:`~screening.bo.neighbour_search.KnownData`.

    Refused, naming the file and row: an unreadable file, missing ``id`` / ``label`` / embedding
    columns, embedding columns other than the pool's, a missing, non-finite or negative label, a
    non-finite embedding, duplicate ids, and ids that are also candidates (their labels would
    leak the answer into the search).
    """
    from screening.bo.neighbour_search import KnownData

    path = Path(path)
    if not path.is_file():
        raise PoolFileError(f"{path}: known-data file not found")
    try:
        frame = (
            pd.read_parquet(path)
            if path.suffix.lower() in (".parquet", ".pq")
            else pd.read_csv(path, dtype={"id": str})
        )
    except Exception as exc:  # noqa: BLE001 - parquet/csv readers raise many types
        raise PoolFileError(f"{path}: cannot read known data ({exc})") from exc
    emb = embedding_columns(frame.columns)
    pool_emb = embedding_columns(pool.frame.columns)
    missing = [c for c in ("id", label) if c not in frame.columns] + ([] if emb else ["emb_0..."])
    if missing:
        raise PoolFileError(
            f"{path}: known data need columns {missing} (the output of `matscreen featurize` with labels)"
        )
    if list(emb) != list(pool_emb):
        raise PoolFileError(
            f"{path}: known data have {len(emb)} embedding columns, the pool {len(pool_emb)}: "
            "featurise both with the same model"
        )
    frame = frame.reset_index(drop=True)
    ids = frame["id"].astype(str)
    values = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        line = row + 2 if path.suffix.lower() == ".csv" else row  # CSV: the file's line (after the header)
        raise RecordError(
            ids.iloc[row],
            f"row {line}: {label} {str(frame[label].iloc[row])!r} is not a finite, non-negative number",
            str(path),
        )
    E = frame[emb].to_numpy(dtype=np.float64)
    bad = ~np.all(np.isfinite(E), axis=1)
    if bad.any():
        raise RecordError(ids.iloc[int(np.flatnonzero(bad)[0])], "non-finite embedding value", str(path))
    dup = ids.duplicated()
    if dup.any():
        raise RecordError(ids[dup].iloc[0], "duplicate id in the known data", str(path))
    clash = ids[ids.isin(set(pool.ids))]
    if len(clash):
        raise RecordError(
            clash.iloc[0],
            f"{len(clash)} known crystal(s) are also candidates of the pool "
            "(their labels would give the answer away): remove them from one file",
            str(path),
        )
    pred = frame["pred_band_gap"].to_numpy(dtype=np.float64) if "pred_band_gap" in frame.columns else None
    if pred is not None and not np.all(np.isfinite(pred)):
        row = int(np.flatnonzero(~np.isfinite(pred))[0])
        raise RecordError(ids.iloc[row], "non-finite pred_band_gap", str(path))
    return KnownData(ids.tolist(), E, values, pred)
