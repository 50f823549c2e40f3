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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from screening.bo.domain import DiscretePool
from screening.bo.objective import Evaluation
from screening.columns import PRED_BAND_GAP, PRED_BAND_GAP_STD, PRED_FORMATION_ENERGY
from screening.errors import MatscreenError, RecordError
from screening.io.file_digest import file_sha256
from screening.io.tables import read_table, row_label
from screening.reduce import PCAReducer, embedding_columns


class PoolFileError(MatscreenError):
    """A pool file is missing, unreadable or lacks the columns a search needs."""


MAX_BAND_GAP_EV = 100.0  # far above any known material (LiF ~14 eV): a larger value is a typo or a unit error


def check_band_gap(value: float) -> None:
    """Raise ``ValueError`` with the reason when ``value`` (eV) cannot be a measured band gap.

    Refused: NaN or infinite, negative, and above :data:`MAX_BAND_GAP_EV` (1e308 is a corrupted
    cell, not a measurement).
    """
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"band gap {value!r} is NaN or infinite")
    if v < 0:
        raise ValueError(f"band gap {v:g} eV is negative: a band gap cannot be below 0 eV")
    if v > MAX_BAND_GAP_EV:
        raise ValueError(f"band gap {v:g} eV is above {MAX_BAND_GAP_EV:g} eV: not a plausible band gap")


def refuse_first(ids: pd.Series, bad: np.ndarray, reason: str, source: str) -> None:
    """Raise :class:`RecordError` for the first row where the mask ``bad`` is set, naming its id:
    the one way every table check here reports a row."""
    if bad.any():
        raise RecordError(str(ids.iloc[int(np.flatnonzero(bad)[0])]), reason, source)


def check_target(target: float, tolerance: float) -> None:
    """Refuse a target or tolerance no search can use: NaN or infinite, or a tolerance of 0 or less
    (a hit is |gap - target| <= tolerance; with 0 every window probability is 0 and the order is
    arbitrary)."""
    if not (np.isfinite(target) and 0 <= target <= MAX_BAND_GAP_EV):
        raise MatscreenError(
            f"the target band gap must be a number of eV from 0 to {MAX_BAND_GAP_EV:g} (no band gap lies "
            f"outside), got {target!r}"
        )
    if not (np.isfinite(tolerance) and tolerance > 0):
        raise MatscreenError(
            f"the tolerance must be a positive, finite number of eV (a hit is |gap - target| <= tolerance), "
            f"got {tolerance!r}"
        )


def id_problem(candidate_id: str) -> str | None:
    """Why ``candidate_id`` cannot be a candidate id, or None.

    Blank ids, ids with leading or trailing whitespace and ids with control characters (CR, LF,
    tab …) can be proposed but never told back through a CSV (readers strip or split them).
    """
    if candidate_id.isprintable() and candidate_id.strip() == candidate_id and candidate_id:
        return None  # the usual id, at the cost of two C calls (a pool of 10^6 checks each on every command)
    if not candidate_id.strip():
        return "blank id"
    if candidate_id != candidate_id.strip():
        return "id has leading or trailing whitespace"
    bad = sorted({c for c in candidate_id if ord(c) < 32 or ord(c) == 127})
    if bad:
        return "id contains control character(s) " + ", ".join(repr(c) for c in bad)
    return None


def check_pool_ids(ids: pd.Series, source: str, what: str = "pool") -> None:
    """Refuse a pool (or known data: ``what``) whose ids are missing, unusable (:func:`id_problem`)
    or repeated, naming the file and where the row is (a CSV's line, a Parquet file's 1-based row:
    ``row_label``)."""
    values = ids.to_numpy(dtype=object)
    seen: dict[str, int] = {}
    for i, raw in enumerate(values):
        if raw is None or (isinstance(raw, float) and not np.isfinite(raw)):
            raise RecordError(row_label(source, i), "missing id", source)
        cid = str(raw)
        problem = id_problem(cid)
        if problem is not None:
            raise RecordError(cid, f"{row_label(source, i)}: {problem}", source)
        if cid in seen:
            where, first = row_label(source, i), row_label(source, seen[cid])
            raise RecordError(cid, f"{where}: duplicate id in the {what} (first at {first})", source)
        seen[cid] = i


@dataclass(frozen=True)
class LeftOutRow:
    """A row of a pool or known-data table that a run leaves out, and why.

    ``row`` is where a user finds it (a CSV's line, a Parquet file's 1-based row: ``row_label``),
    ``column`` and ``value`` the first bad cell, ``kind`` a short reason for the one-line summary
    (``negative band_gap``) and ``reason`` the full one."""

    row: str
    id: str
    column: str
    value: str
    kind: str
    reason: str


LEFT_OUT_COLUMNS = ["row", "id", "column", "value", "reason"]


def left_out_summary(rows: Sequence[LeftOutRow]) -> str:
    """``negative band_gap`` for one kind of problem, ``3 negative band_gap, 1 duplicate id`` for several."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def left_out_frame(rows: Sequence[LeftOutRow]) -> pd.DataFrame:
    """The rows as the errors file holds them: row, id, column, value, reason."""
    return pd.DataFrame([[getattr(r, c) for c in LEFT_OUT_COLUMNS] for r in rows], columns=LEFT_OUT_COLUMNS)


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def invalid_rows(
    frame: pd.DataFrame,
    source: str,
    what: str = "pool",
    label: str = "band_gap",
    require_label: bool = True,
    shown_label: str | None = None,
    check_std: bool = True,
) -> list[LeftOutRow]:
    """Every row of a pool or known-data ``frame`` that a search cannot use, the first problem of
    each: a missing, unusable (:func:`id_problem`) or repeated id (the first row with an id is
    kept), a non-numeric or non-finite embedding, a ``label`` (eV) that is missing (when
    ``require_label``), not a number, or no band gap (:func:`check_band_gap`: negative, infinite,
    above 100 eV), a missing ``pred_band_gap``, and a ``pred_band_gap_std`` that is not positive.
    ``shown_label`` is the label's name in the user's file (``--label target``)."""
    shown = shown_label or label
    n = len(frame)
    found: dict[int, LeftOutRow] = {}

    def note(i: int, column: str, value: object, kind: str, reason: str) -> None:
        if i not in found:
            text = "" if _is_blank(value) else str(value)
            found[i] = LeftOutRow(row_label(source, i), ids[i], column, text, kind, reason)

    raw_ids = frame["id"].to_numpy(dtype=object)
    ids = ["" if _is_blank(v) and not isinstance(v, str) else str(v) for v in raw_ids]
    first: dict[str, int] = {}
    for i, raw in enumerate(raw_ids):
        if raw is None or (isinstance(raw, float) and not np.isfinite(raw)):
            note(i, "id", raw, "missing id", "missing id")
            continue
        problem = id_problem(ids[i])
        if problem is not None:
            note(i, "id", ids[i], problem, problem)
        elif ids[i] in first:
            note(
                i,
                "id",
                ids[i],
                "duplicate id",
                f"duplicate id in the {what} (first at {row_label(source, first[ids[i]])}, kept)",
            )
        else:
            first[ids[i]] = i
    for col in embedding_columns(frame.columns):
        values = _numbers(frame[col])
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            note(i, col, frame[col].iloc[i], "non-finite embedding", f"{col} is not a finite number")
    if label in frame.columns:
        raw = frame[label]
        gaps = _numbers(raw)
        for i in np.flatnonzero(~np.isfinite(gaps)).tolist():
            value = raw.iloc[i]
            if _is_blank(value):
                if require_label:
                    note(i, shown, value, f"missing {shown}", f"{shown} is missing")
            elif np.isnan(gaps[i]):
                note(i, shown, value, f"{shown} not a number", f"{shown} {str(value)!r} is not a number of eV")
        for i in np.flatnonzero(np.isfinite(gaps) | np.isinf(gaps)).tolist():
            try:
                check_band_gap(gaps[i])
            except ValueError as exc:
                kind = "negative" if gaps[i] < 0 else "infinite" if np.isinf(gaps[i]) else "implausible"
                note(i, shown, raw.iloc[i], f"{kind} {shown}", str(exc).replace("band gap", shown, 1))
    elif require_label:
        raise PoolFileError(f"{source}: no {shown} column")
    if PRED_BAND_GAP in frame.columns:
        pred = _numbers(frame[PRED_BAND_GAP])
        for i in np.flatnonzero(~np.isfinite(pred)).tolist():
            note(i, PRED_BAND_GAP, frame[PRED_BAND_GAP].iloc[i], f"missing {PRED_BAND_GAP}",
                 f"{PRED_BAND_GAP} is missing or not a number (featurize this crystal again)")  # fmt: skip
        if check_std and PRED_BAND_GAP_STD in frame.columns:
            std = _numbers(frame[PRED_BAND_GAP_STD])
            for i in np.flatnonzero(~(np.isfinite(std) & (std > 0))).tolist():
                note(i, PRED_BAND_GAP_STD, frame[PRED_BAND_GAP_STD].iloc[i], f"bad {PRED_BAND_GAP_STD}",
                     f"{PRED_BAND_GAP_STD} is not a positive number")  # fmt: skip
    return [found[i] for i in sorted(found)] if n else []


def leave_out_rows(
    frame: pd.DataFrame, rows: Sequence[LeftOutRow], numeric: Sequence[str], source: str, what: str
) -> pd.DataFrame:
    """``frame`` without the positions of ``rows`` (which :func:`invalid_rows` found), its
    ``numeric`` columns as numbers. A table with no valid row is an error naming the first."""
    if not rows:
        return frame
    if len(rows) >= len(frame):
        r = rows[0]
        raise PoolFileError(
            f"{source}: none of its {len(frame)} {what} rows is valid ({left_out_summary(rows)}; "
            f"first at {r.row}, id {r.id!r}: {r.reason})"
        )
    bad = {row_position(r.row) for r in rows}
    kept = frame.iloc[[i for i in range(len(frame)) if i not in bad]].reset_index(drop=True).copy()
    for col in numeric:
        if col in kept.columns:
            kept[col] = pd.to_numeric(kept[col], errors="coerce")
    return kept


def row_position(label: str) -> int:
    """The 0-based data row of a :func:`~screening.io.tables.row_label` (``line 5`` -> 3, ``row 5`` -> 4)."""
    kind, number = label.split()
    return int(number) - (2 if kind == "line" else 1)


@dataclass
class BandGapPool:
    """A loaded pool: the candidates' frame, their PCA features, and the fitted reducer."""

    frame: pd.DataFrame
    features: np.ndarray
    reducer: PCAReducer
    source: str
    file_hash: str
    embedding: np.ndarray | None  # the full embeddings (n, d) the PCA features come from
    left_out: list[LeftOutRow] = field(default_factory=list)  # invalid rows of the file, not candidates
    n_rows: int = 0  # rows of the file, left-out ones included
    # A pool read from a campaign's snapshot (pool_snapshot.py) has no embedding in memory: this
    # reads it from the pool file when the search model needs it, and ``embedding_dim`` says its width.
    load_embedding: Callable[[], np.ndarray] | None = None
    embedding_dim: int | None = None
    # What vouches for the arrays (DiscretePool.content_token); set by the campaign that checked them.
    content_token: str | None = None
    # The rows in the order of their ids, from a snapshot (DiscretePool's ``id_order``); None: hashed.
    id_order: np.ndarray | None = None

    @property
    def ids(self) -> list[str]:
        return self.frame["id"].astype(str).tolist()

    def domain(self, use_prior: bool = False, pred_as_feature: bool = False, known=None) -> DiscretePool:
        """The candidates as a DiscretePool: PCA features, optionally with the CGCNN-predicted gap
        (eV) as the prior-mean covariate and/or as one more input feature of the GP; the full
        embeddings and any ``known`` data (:class:`~screening.bo.known_fit.KnownData`)
        ride along for the neighbour surrogate."""
        pred = None
        if use_prior or pred_as_feature:
            if "pred_band_gap" not in self.frame.columns:
                raise PoolFileError(f"{self.source}: no pred_band_gap column")
            pred = self.frame["pred_band_gap"].to_numpy(dtype=np.float64)
        feats = (
            np.hstack([self.features, pred.reshape(-1, 1)]) if pred is not None and pred_as_feature else self.features
        )
        std = _prediction_std(self.frame, self.source) if use_prior else None
        domain = DiscretePool(
            self.ids,
            feats,
            prior_mean=pred if use_prior else None,
            embedding=self.embedding,
            known=known,
            prior_std=std,
            embedding_loader=self.load_embedding,
            embedding_dim=self.embedding_dim,
            id_order=self.id_order,
        )
        domain.content_token = self.content_token
        return domain


def pool_from_frame(
    frame: pd.DataFrame,
    n_components: int = 3,
    reducer: PCAReducer | None = None,
    source: str = "<frame>",
    require_band_gap: bool = True,
    max_formation_energy: float | None = None,
    strict: bool = True,
    shown_label: str = "band_gap",
) -> BandGapPool:
    """Validate a featurised frame and project its embeddings with PCA (fitted here unless given).

    ``strict=False`` leaves invalid rows out instead (:func:`invalid_rows`; ``pool.left_out``
    lists them, ``shown_label`` names the label column in their reasons); a frame with no valid
    row is still an error.

    Rows with a missing, blank, padded, control-character or duplicate id (:func:`check_pool_ids`),
    non-finite embeddings or (when the gap is required) a missing band gap raise
    :class:`RecordError` naming the row, so a broken pool is not silently searched. ``max_formation_energy`` (eV/atom) keeps only the crystals whose
    ``pred_formation_energy_per_atom`` is at most that: the search then runs among crystals the
    network predicts stable enough, before the PCA is fitted.
    """
    emb = embedding_columns(frame.columns)
    missing = [c for c in ("id",) if c not in frame.columns]
    if require_band_gap and "band_gap" not in frame.columns:
        missing.append("band_gap")
    if missing or not emb:
        present = [str(c) for c in frame.columns if not str(c).startswith("emb_")]
        hint = ""
        if "band_gap" in missing:
            numeric = [c for c in present if c not in ("id", "formula") and not c.startswith("pred_")]
            hint = (
                f"; name the column of measured gaps with --label (e.g. --label {numeric[0]})"
                if numeric
                else "; name the column of measured gaps with --label"
            )
        raise PoolFileError(
            f"{source}: missing columns {missing + ([] if emb else ['emb_0...'])}; it has "
            f"{', '.join(present[:12]) or 'no other columns'}{' (and emb_*)' if emb else ''}{hint}"
        )
    n_rows = len(frame)
    left_out: list[LeftOutRow] = []
    if not strict:
        left_out = invalid_rows(frame.reset_index(drop=True), source, "pool", "band_gap", require_band_gap, shown_label)
        numeric = [*emb, "band_gap", PRED_BAND_GAP, PRED_BAND_GAP_STD]
        frame = leave_out_rows(frame.reset_index(drop=True), left_out, numeric, source, "pool")
    check_pool_ids(frame["id"], source)  # on the file's rows, before any filter renumbers them
    if max_formation_energy is not None:
        frame = keep_predicted_stable(frame, max_formation_energy, source)
    frame = frame.reset_index(drop=True).copy()
    frame["id"] = frame["id"].astype(str)
    dup = frame["id"].duplicated()
    if dup.any():
        raise RecordError(str(frame["id"][dup].iloc[0]), "duplicate id in the pool", source)
    E = frame[emb].to_numpy(dtype=np.float64)
    refuse_first(frame["id"], ~np.all(np.isfinite(E), axis=1), "non-finite embedding value", source)
    if len(frame) < 2:
        raise PoolFileError(f"{source}: {len(frame)} candidate crystal(s); a search needs at least 2")
    if require_band_gap:
        gaps = pd.to_numeric(frame["band_gap"], errors="coerce").to_numpy(dtype=np.float64)
        refuse_first(frame["id"], ~np.isfinite(gaps), "band_gap is missing or not a number", source)
    check_known_gaps(frame, source)
    if PRED_BAND_GAP in frame.columns:
        pred = pd.to_numeric(frame[PRED_BAND_GAP], errors="coerce").to_numpy(dtype=np.float64)
        refuse_first(
            frame["id"],
            ~np.isfinite(pred),
            f"{PRED_BAND_GAP} is missing or not a number (featurize this crystal again, or drop the row)",
            source,
        )
    if reducer is None:
        reducer = PCAReducer(n_components=n_components).fit(E)
    features = reducer.transform(E)
    return BandGapPool(frame, features, reducer, source, "", E, left_out, n_rows)


def check_known_gaps(frame: pd.DataFrame, source: str) -> None:
    """Every band gap the pool states must be one a measurement could give (:func:`check_band_gap`).

    Why here: the pool is the oracle of a simulated campaign, and a negative or absurd gap found
    only when the search reaches it stopped the run halfway and left that crystal pending for
    ever. Blank gaps pass (a pool for ask/tell need not know them); text such as "2.5 eV" does not."""
    if "band_gap" not in frame.columns:
        return
    raw = frame["band_gap"]
    gaps = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    text = np.flatnonzero(np.isnan(gaps) & raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy())
    if text.size:  # "2.5 eV" is neither a gap nor a blank: read as unknown, it would fail as a measurement
        i = int(text[0])
        raise RecordError(str(frame["id"].iloc[i]), f"band_gap {raw.iloc[i]!r} is not a number of eV", source)
    bad = np.flatnonzero(np.isinf(gaps) | (gaps < 0) | (gaps > MAX_BAND_GAP_EV))
    if bad.size:
        i = int(bad[0])
        try:
            check_band_gap(gaps[i])
        except ValueError as exc:
            more = f" ({bad.size - 1} more rows like it)" if bad.size > 1 else ""
            raise RecordError(str(frame["id"].iloc[i]), f"{exc}{more}", source) from None


FORMATION_ENERGY_COLUMN = PRED_FORMATION_ENERGY


def keep_predicted_stable(frame: pd.DataFrame, max_formation_energy: float, source: str) -> pd.DataFrame:
    """Rows whose predicted formation energy (eV/atom) is at most ``max_formation_energy``.

    A missing column (a table featurised by a single-output model) or a filter that leaves
    nothing is an error rather than a silently unfiltered or empty search.
    """
    if FORMATION_ENERGY_COLUMN not in frame.columns:
        raise PoolFileError(
            f"{source}: no {FORMATION_ENERGY_COLUMN} column to filter on; featurize with a model that predicts "
            "formation energy (the default model does)"
        )
    if not np.isfinite(max_formation_energy):
        raise PoolFileError(f"{source}: the formation-energy limit must be a finite number, got {max_formation_energy}")
    ef = pd.to_numeric(frame[FORMATION_ENERGY_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
    kept = frame[ef <= max_formation_energy]
    if kept.empty:
        raise PoolFileError(
            f"{source}: no crystal has {FORMATION_ENERGY_COLUMN} <= {max_formation_energy} eV/atom "
            f"(lowest {np.nanmin(ef):.3f})"
        )
    return kept


def relabel(frame: pd.DataFrame, label: str, source: str) -> pd.DataFrame:
    """The frame with column ``label`` as ``band_gap`` (a ``band_gap`` column it had is dropped, so
    exactly one column is the oracle)."""
    if label == "band_gap":
        return frame
    if label not in frame.columns:
        raise PoolFileError(
            f"{source}: no column {label!r} for --label (columns: {', '.join(map(str, frame.columns[:12]))}, ...)"
        )
    return frame.drop(columns=["band_gap"], errors="ignore").rename(columns={label: "band_gap"})


def load_pool(
    path: str | Path,
    n_components: int = 3,
    reducer: PCAReducer | None = None,
    require_band_gap: bool = True,
    max_formation_energy: float | None = None,
    label: str = "band_gap",
    strict: bool = True,
) -> BandGapPool:
    """Read a featurised pool (Parquet, or CSV named .csv / .csv.gz) and project it (see :func:`pool_from_frame`).

    ``label`` names the column holding the oracle's band gaps (eV), e.g. ``target`` for labels
    from a CGCNN ``id_prop.csv``; it is read as ``band_gap`` from here on. ``strict=False``
    leaves invalid rows out (``pool.left_out``) instead of refusing the file.
    """
    path = Path(path)
    frame = read_table(path, "pool", PoolFileError)
    frame = relabel(frame, label, str(path))
    pool = pool_from_frame(
        frame, n_components, reducer, str(path), require_band_gap, max_formation_energy, strict, shown_label=label
    )
    pool.file_hash = file_sha256(path)
    return pool


class BandGapPoolObjective:
    """Find a crystal with band gap ``target`` ± ``tolerance`` (eV); the pool's gaps are the oracle.

    ``loss(y) = |y - target|`` in eV; ``is_hit(y)`` when that is within ``tolerance``.
    """

    def __init__(
        self, domain: DiscretePool, band_gaps: Sequence[float] | np.ndarray, target: float, tolerance: float
    ) -> None:
        gaps = np.asarray(band_gaps, dtype=np.float64).reshape(-1)
        if gaps.shape[0] != len(domain):
            raise PoolFileError(f"{gaps.shape[0]} band gaps for {len(domain)} candidates")
        check_target(target, tolerance)
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

    def check_y(self, y: float) -> None:
        """Refuse an impossible measured gap (negative, non-finite, > 100 eV): :func:`check_band_gap`."""
        check_band_gap(y)

    def n_hits(self) -> int:
        """How many pool candidates are hits: what random search is up against."""
        return int(np.sum(np.abs(self.band_gaps - self.target) <= self.tolerance + 1e-12))


def load_known(
    path: str | Path,
    pool: BandGapPool,
    label: str = "band_gap",
    same_quantity: bool = True,
    strict: bool = True,
    left_out: list[LeftOutRow] | None = None,
):
    """Known data for a pool: a featurised table (Parquet or CSV) of labelled crystals that are
    not candidates, as :class:`~screening.bo.known_fit.KnownData`.

    Refused, naming the file and row: an unreadable file, missing ``id`` / ``label`` / embedding
    columns, embedding columns other than the pool's, ids the pool would refuse (missing, blank,
    padded, repeated: :func:`check_pool_ids`), a label that is missing, not finite, negative or
    above 100 eV, a non-finite embedding, and ids that are also candidates (their labels would
    leak the answer into the search).

    ``same_quantity`` False: ``label`` is another quantity than the campaign measures (``--known-label``).
    ``strict=False`` leaves invalid rows out instead (:func:`invalid_rows`), appending them to
    ``left_out``; a table with no valid row, and known crystals that are candidates, still refuse.
    """
    from screening.bo.known_fit import KnownData

    path = Path(path)
    frame = read_table(path, "known-data", PoolFileError)
    emb = embedding_columns(frame.columns)
    pool_emb = embedding_columns(pool.frame.columns)
    missing = [c for c in ("id", label) if c not in frame.columns] + ([] if emb else ["emb_0..."])
    if missing:
        present = ", ".join(map(str, [c for c in frame.columns if not str(c).startswith("emb_")][:12]))
        flag = "--label" if same_quantity else "--known-label"
        raise PoolFileError(
            f"{path}: known data need columns {missing} (the output of `matscreen featurize` with labels); "
            f"it has {present}: name the label column with {flag}"
        )
    if list(emb) != list(pool_emb):
        raise PoolFileError(
            f"{path}: known data have {len(emb)} embedding columns, the pool {len(pool_emb)}: "
            "featurise both with the same model"
        )
    frame = frame.reset_index(drop=True)
    if not strict:
        bad = invalid_rows(frame, str(path), "known data", label, True, check_std="pred_band_gap" in frame.columns)
        frame = leave_out_rows(frame, bad, [*emb, label, PRED_BAND_GAP, STD_COLUMN], str(path), "known-data")
        if left_out is not None:
            left_out.extend(bad)
    # The ids the pool accepts, so a padded ' mp-1 ' cannot pass the candidate check below.
    check_pool_ids(frame["id"], str(path), "known data")
    ids = frame["id"].astype(str)
    values = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > MAX_BAND_GAP_EV)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RecordError(
            ids.iloc[row],
            f"{row_label(path, row)}: {label} {str(frame[label].iloc[row])!r} is not a band gap "
            f"(a finite number of eV, 0 to {MAX_BAND_GAP_EV:g})",
            str(path),
        )
    E = frame[emb].to_numpy(dtype=np.float64)
    refuse_first(ids, ~np.all(np.isfinite(E), axis=1), "non-finite embedding value", str(path))
    clash = ids[ids.isin(set(pool.ids))]
    if len(clash):
        raise RecordError(
            clash.iloc[0],
            f"{len(clash)} known crystal(s) are also candidates of the pool "
            "(their labels would give the answer away): remove them from one file",
            str(path),
        )
    pred = frame["pred_band_gap"].to_numpy(dtype=np.float64) if "pred_band_gap" in frame.columns else None
    if pred is not None:
        refuse_first(ids, ~np.isfinite(pred), "non-finite pred_band_gap", str(path))
    std = _prediction_std(frame, str(path)) if pred is not None else None
    return KnownData(ids.tolist(), E, values, pred, std, same_quantity=same_quantity)


STD_COLUMN = PRED_BAND_GAP_STD


def _prediction_std(frame: pd.DataFrame, source: str) -> np.ndarray | None:
    """The network's per-crystal std of ``pred_band_gap`` when the table has it (a model with an
    uncertainty head wrote it); a non-positive or non-finite value is refused, naming the row."""
    if STD_COLUMN not in frame.columns:
        return None
    std = pd.to_numeric(frame[STD_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
    refuse_first(frame["id"], ~(np.isfinite(std) & (std > 0)), f"{STD_COLUMN} is not a positive number", source)
    return std
