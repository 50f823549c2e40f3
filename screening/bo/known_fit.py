"""The part of the neighbour model that depends on the known data alone, fitted once per table.

Why: with the Materials Project's 33,064 labelled crystals as ``--known``, most of a first
suggestion's minute went into work that depends on the known table only — the projection, the
hyper-parameter fit on the known residuals and the label-match mixture — and every campaign and
search naming the same table did it again. :class:`KnownFit` is that part; :func:`obtain` keeps
it in the user cache (``~/.cache/matscreen/known_fits``, safe to delete) under a key of the known
table's content and the settings, and checks a file's contents before trusting it.

The projection is fitted on the known crystals alone (not the pool), and residuals are measured
in units of the known crystals' median network std, so the fit is the same for every pool.

The known data themselves (:class:`KnownData`) are defined here too; :mod:`screening.bo.neighbour_search`
builds its pool state on this module and is never imported by it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from screening.bo import label_match as lm
from screening.bo.neighbour_gp import NeighbourGP, NeighbourGPParams, NeighbourSettings, Projection
from screening.errors import MatscreenError

FORMAT = 1


class KnownDataError(MatscreenError):
    """Known (labelled, non-candidate) data are unusable with the pool given."""


@dataclass
class KnownData:
    """Labelled crystals that are not candidates: embeddings, values and (optionally) predictions."""

    ids: list[str]
    embedding: np.ndarray
    values: np.ndarray
    prior_mean: np.ndarray | None = None
    prior_std: np.ndarray | None = None  # the network's per-crystal std of prior_mean
    # False: the values are another quantity than the campaign measures (DFT gaps as known data,
    # a lab as the oracle: ``--known-label``); they shape the base prediction and the campaign's
    # results teach the map from it to what is measured (measured_search.py).
    same_quantity: bool = True

    def __post_init__(self) -> None:
        self.embedding = np.atleast_2d(np.asarray(self.embedding, dtype=np.float64))
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if self.embedding.shape[0] != self.values.shape[0] or len(self.ids) != self.values.shape[0]:
            raise KnownDataError(
                f"{len(self.ids)} ids, {self.embedding.shape[0]} embeddings and "
                f"{self.values.shape[0]} values in the known data"
            )
        if self.prior_mean is not None:
            self.prior_mean = np.asarray(self.prior_mean, dtype=np.float64).reshape(-1)
        if self.prior_std is not None:
            self.prior_std = np.asarray(self.prior_std, dtype=np.float64).reshape(-1)
            if self.prior_std.shape[0] != self.values.shape[0] or not np.all(
                np.isfinite(self.prior_std) & (self.prior_std > 0)
            ):
                raise KnownDataError("the known data's prior_std needs one positive value per crystal")

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass
class KnownFit:
    """Projection, known crystals' points and residuals, hyper-parameters and label-match mixture."""

    projection: Projection
    points: np.ndarray  # the known crystals in the projection
    residuals: np.ndarray  # (value - prior) / scale
    params: NeighbourGPParams
    label_match: lm.LabelMatchParams | None
    unit: float | None  # eV of one residual unit (the known crystals' median network std); None: 1


@dataclass
class KnownFitCache:
    """Where fits are kept, and the lines to show the user (a damaged file that was refitted)."""

    directory: Path
    notices: list[str] = field(default_factory=list)


def uses_scales(known: KnownData, has_prior: bool, has_prior_std: bool) -> bool:
    """Residuals in units of the network's per-crystal std: only when pool and known data both carry it."""
    return has_prior and has_prior_std and known.prior_std is not None


def prior_of_known(known: KnownData, has_prior: bool) -> np.ndarray:
    """The base prediction the known residuals are taken from: the network's, or their mean."""
    if known.prior_mean is not None and has_prior:
        return np.asarray(known.prior_mean, dtype=np.float64)
    return np.full(len(known), float(np.mean(known.values)) if len(known) else 0.0)


def fit_known(settings: NeighbourSettings, known: KnownData, has_prior: bool, scaled: bool, seed: int) -> KnownFit:
    """Fit the known-data part from scratch (the minute :func:`obtain` saves)."""
    projection = Projection(settings.n_components, seed=seed).fit(known.embedding)
    points = projection.transform(known.embedding)
    unit = float(np.median(known.prior_std)) if scaled and known.prior_std is not None else None
    k_scale = known.prior_std / unit if unit is not None and known.prior_std is not None else None
    k_prior = prior_of_known(known, has_prior)
    residuals = (known.values - k_prior) / (k_scale if k_scale is not None else 1.0)
    gp = NeighbourGP(settings.n_neighbours, settings.fit_sample, seed, settings.min_labelled)
    if points.shape[0] >= 3:
        gp.fit(points, residuals)
    else:  # too little to fit: a broad prior around the network (or the labelled mean)
        spread = max(float(np.std(residuals)) if residuals.size > 1 else 1.0, 0.3)
        gp.fit(points, residuals, params=NeighbourGPParams(0.5 * spread, 1.0, 0.3 * spread, 0.5 * spread))
    assert gp.params is not None
    match = None
    if settings.label_match_tolerance > 0:
        match = fit_label_match(
            gp,
            np.asarray(known.values, dtype=np.float64),
            k_prior,
            k_scale,
            settings,
            seed,
        )
    return KnownFit(projection, points, residuals, gp.params, match, unit)


def fit_label_match(
    gp: NeighbourGP,
    values: np.ndarray,
    k_prior: np.ndarray,
    k_scale: np.ndarray | None,
    settings: NeighbourSettings,
    seed: int,
) -> lm.LabelMatchParams | None:
    """The label-match mixture fitted on known crystals (``gp``'s labelled set, with ``values``)
    left out one at a time (a sample); not below the labelled count the local GP needs (with
    fewer labels both fits find noise)."""
    from screening.bo.neighbour_gp import _loo_neighbours_np

    n = gp.n_labelled
    if n < max(settings.min_labelled, lm.MIN_FIT_ROWS) or gp.params is None:
        return None
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(lm.FIT_ROWS, n), replace=False))
    d, i = _loo_neighbours_np(gp._lab_points, rows, gp.k)
    m, s = gp.loo_predict(rows)
    scale = k_scale[rows] if k_scale is not None else 1.0
    return lm.fit(values[rows], k_prior[rows] + scale * m, scale * s, d, values[i], settings.label_match_tolerance)


def cache_key(settings: NeighbourSettings, known: KnownData, has_prior: bool, scaled: bool, seed: int) -> str:
    """Hash of everything :func:`fit_known` reads: the known arrays, the settings, the flags."""
    from screening.io.array_file import hash_array

    h = hashlib.sha1(usedforsecurity=False)
    fields = (settings.n_neighbours, settings.n_components, settings.fit_sample, settings.min_labelled)
    h.update(f"{FORMAT}|{fields}|{settings.label_match_tolerance!r}|{has_prior}|{scaled}|{seed}".encode())
    for arr in (known.embedding, known.values, known.prior_mean, known.prior_std):
        hash_array(h, arr)
    return h.hexdigest()


def obtain(
    settings: NeighbourSettings,
    known: KnownData,
    has_prior: bool,
    scaled: bool,
    seed: int,
    cache: KnownFitCache | None,
) -> KnownFit:
    """The fit for ``known``: read from ``cache`` when a file there has this key and passes its
    checks, else fitted (and saved there). A file that fails its checks is refitted and the
    reason added to ``cache.notices``."""
    if cache is None:
        return fit_known(settings, known, has_prior, scaled, seed)
    key = cache_key(settings, known, has_prior, scaled, seed)
    path = Path(cache.directory) / f"known-{key[:20]}.arrays"
    if path.exists():
        fit, why = load(path, key, settings, len(known))
        if fit is not None:
            return fit
        cache.notices.append(f"refitted the known data: the cached fit {path} {why}")
    fit = fit_known(settings, known, has_prior, scaled, seed)
    try:
        save(fit, path, key)
    except OSError as exc:  # a read-only or full cache costs time, not results
        cache.notices.append(f"could not keep the known-data fit in {path.parent} ({exc})")
    return fit


def _arrays(fit: KnownFit) -> dict[str, np.ndarray]:
    p = fit.projection
    return {
        "proj_mean": p.mean_,
        "proj_scale": p.scale_,
        "proj_centre": p.centre_,
        "proj_components": p.components_,
        "points": fit.points,
        "residuals": fit.residuals,
    }


def save(fit: KnownFit, path: Path, key: str) -> None:
    """Write ``fit`` (an array file, atomically) with its key and its content digest."""
    from screening.io.array_file import content_digest, write_arrays

    arrays = _arrays(fit)
    meta = {
        "format": FORMAT,
        "key": key,
        "params": list(fit.params.to_dict().values()),
        "label_match": fit.label_match.to_list() if fit.label_match is not None else None,
        "unit": fit.unit,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_arrays(path, arrays, {**meta, "digest": content_digest(meta, arrays)})


def load(path: Path, key: str, settings: NeighbourSettings, n_known: int) -> tuple[KnownFit | None, str | None]:
    """``(fit, None)`` from ``path``, or ``(None, why)`` when its key, digest, shapes or values are off."""
    from screening.io.array_file import content_digest, open_arrays

    try:
        meta, arrays = open_arrays(path)
    except (OSError, ValueError) as exc:
        return None, f"could not be read ({exc})"
    digest = meta.pop("digest", None)
    if meta.get("format") != FORMAT or meta.get("key") != key:
        return None, "was made from other inputs"
    if digest != content_digest(meta, arrays):
        return None, "is not what was written (content digest differs)"
    try:
        params = NeighbourGPParams(*[float(v) for v in meta["params"]])
        match = meta.get("label_match")
        unit = meta.get("unit")
        projection = Projection(settings.n_components)
        projection.mean_, projection.scale_ = arrays["proj_mean"], arrays["proj_scale"]
        projection.centre_, projection.components_ = arrays["proj_centre"], arrays["proj_components"]
        fit = KnownFit(
            projection,
            arrays["points"],
            arrays["residuals"],
            params,
            lm.LabelMatchParams(*[float(v) for v in match]) if match is not None else None,
            float(unit) if unit is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"is damaged ({exc})"
    if fit.points.shape[0] != n_known or fit.residuals.shape != (n_known,):
        return None, f"holds {fit.points.shape[0]} known crystals, not {n_known}"
    if not all(np.all(np.isfinite(a)) for a in _arrays(fit).values()):
        return None, "holds values that are not finite"
    if not all(np.isfinite(v) and v > 0 for v in fit.params.to_dict().values()):
        return None, "holds hyper-parameters that are not finite and positive"
    return fit, None
