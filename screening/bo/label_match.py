"""Label match: a candidate's value may simply *be* a close labelled neighbour's value.

Why this exists. The local GP (:mod:`screening.bo.neighbour_gp`) corrects the network smoothly:
a Gaussian around a shifted mean, a few tenths of an eV wide. But a band-gap search asks for a
window of ±0.01 eV, and there the data are not smooth: near-duplicate entries, polymorphs and
substitutional siblings often have *the same* gap to a few hundredths of an eV. On the test
pool, when a candidate's nearest labelled crystal lies within 0.25 (standardised embedding
units), that crystal's gap is within 0.02 eV of the candidate's in 34 % of cases, against 9 %
for the network's prediction; the advantage fades with distance (7 % against 5 % at 1–2). A
Gaussian predictive cannot say "most likely near 0.4, but with a sharp chance of exactly
2.53": a mixture can.

The predictive distribution of a candidate with labelled neighbours at distances ``d_j`` and
labels ``l_j`` is

    (1 / (1 + A)) · N(μ, σ²)  +  Σ_j (a_j / (1 + A)) · Laplace(l_j, b_j),
    a_j = w · exp(-d_j / ℓ),   A = Σ_j a_j,   b_j = b0 + b1 · d_j,

with N(μ, σ²) the local GP's predictive. The four parameters (w, ℓ, b0, b1) maximise the
leave-one-out probability that each labelled crystal's own value falls within ± the search
tolerance of itself — the very event the window acquisition scores — given its own neighbours.

Point masses (a value shared exactly by many labelled crystals: metals at 0 eV) are left out of
that fit: a metal's metal neighbours "match" it at any distance, which says nothing about how a
continuous value varies, and fitted with them the mixture learned a distance-free spike that
made the test-pool ordering worse than the GP alone (0.91x the ranking against 1.69x).

Pure numerics: arrays in, arrays out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from screening.bo.acquisition import log_probability_in_window

POINT_MASS_SHARE = 0.01  # a value held exactly by this share of the labelled rows is a point mass
MIN_FIT_ROWS = 1000  # fewer continuous labelled rows than this: no label match (too little to fit)
FIT_ROWS = 8000  # labelled rows sampled for the fit (the fit is over 4 parameters)
MIN_GAIN = 0.02  # nats per row the mixture must gain over the GP alone to be used


@dataclass(frozen=True)
class LabelMatchParams:
    weight: float  # w: prior odds of a neighbour at distance 0 against the GP
    lengthscale: float  # ℓ: how fast that weight fades with distance
    width: float  # b0: the Laplace width of a match at distance 0
    width_slope: float  # b1: its growth with distance

    def to_list(self) -> list[float]:
        return [self.weight, self.lengthscale, self.width, self.width_slope]

    @classmethod
    def from_vector(cls, v: np.ndarray) -> LabelMatchParams:
        a = np.exp(np.clip(np.asarray(v, dtype=np.float64), -12.0, 8.0))
        return cls(float(a[0]), float(a[1]), float(a[2]), float(a[3]))


def component_weights(dist: np.ndarray, params: LabelMatchParams) -> tuple[np.ndarray, np.ndarray]:
    """(GP weight per candidate, neighbour weights per candidate and neighbour); they sum to 1."""
    a = params.weight * np.exp(-np.asarray(dist, dtype=np.float64) / params.lengthscale)
    total = 1.0 + a.sum(axis=1)
    return 1.0 / total, a / total[:, None]


def _widths(dist: np.ndarray, params: LabelMatchParams) -> np.ndarray:
    return params.width + params.width_slope * np.asarray(dist, dtype=np.float64)


def _log_laplace_window(centre: np.ndarray, width: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log P(lo <= Z <= hi) for Z ~ Laplace(centre, width), without underflow in the tails."""
    u, v = (lo - centre) / width, (hi - centre) / width
    inside = (u <= 0) & (v >= 0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        # window right of the centre: 0.5 (e^-u - e^-v); left: 0.5 (e^v - e^u); straddling: 1 - ...
        right = math.log(0.5) - u + np.log1p(-np.exp(-(v - u)))
        left = math.log(0.5) + v + np.log1p(-np.exp(-(v - u)))
        straddle = np.log1p(-0.5 * (np.exp(u) + np.exp(-v)))
    return np.where(inside, straddle, np.where(u > 0, right, left))


def _log_window_exact(
    mean: np.ndarray,
    std: np.ndarray,
    dist: np.ndarray,
    labels: np.ndarray,
    params: LabelMatchParams,
    target: np.ndarray,
    tolerance: np.ndarray,
) -> np.ndarray:
    """The log-domain computation (no underflow anywhere); used for rows the fast path underflows.
    ``target``/``tolerance``: one per row."""
    w0, w = component_weights(dist, params)
    terms = [np.log(w0) + log_probability_in_window(mean, std, target, tolerance)]
    if w.shape[1]:
        with np.errstate(divide="ignore"):
            lw = np.log(w)
        lo, hi = (target - tolerance)[:, None], (target + tolerance)[:, None]
        terms.append(lw + _log_laplace_window(labels, _widths(dist, params), lo, hi))
    stacked = np.concatenate([terms[0][:, None]] + ([terms[1]] if len(terms) > 1 else []), axis=1)
    top = np.max(stacked, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return top + np.log(np.sum(np.exp(stacked - top[:, None]), axis=1))


def log_window_probability(
    mean: np.ndarray,
    std: np.ndarray,
    dist: np.ndarray,
    labels: np.ndarray,
    params: LabelMatchParams,
    target: np.ndarray | float,
    tolerance: np.ndarray | float,
) -> np.ndarray:
    """log P(|Y - target| <= tolerance) per candidate under the mixture (``dist``/``labels``:
    (n, k); ``target``/``tolerance``: one value, or one per candidate).

    Why two paths: a suggestion scores every candidate (10^6 x 8 neighbours), so the sum is
    taken in linear space with two exponentials per neighbour (the log-domain form costs about
    ten times more); the few rows whose probability underflows to 0 there (far from the
    window on every component) are redone in the log domain, so their order is kept too."""
    mean = np.asarray(mean, dtype=np.float64)
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    dist = np.asarray(dist, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    t = np.broadcast_to(np.asarray(target, dtype=np.float64), mean.shape)
    tol = np.broadcast_to(np.asarray(tolerance, dtype=np.float64), mean.shape)
    w0, part = _label_part(dist, labels, params, t[:, None], tol[:, None])  # type: ignore[arg-type]
    total = w0 * np.exp(log_probability_in_window(mean, std, t, tol)) + part
    with np.errstate(divide="ignore"):
        out = np.log(total)
    low = ~(total > 1e-280)
    if low.any():
        out[low] = _log_window_exact(mean[low], std[low], dist[low], labels[low], params, t[low], tol[low])
    return out


@dataclass
class Prepared:
    """A campaign's label-match scores that do not change between suggestions.

    Why: the sharp components depend only on a candidate's neighbour list, the target and the
    tolerance — all fixed in a campaign until an observation enters that candidate's list. So
    their part of the window probability is computed once per candidate (10^6 x 8 neighbours:
    about a second) and refreshed for the few rows an observation changes (:func:`refresh`);
    a suggestion then costs what the plain Gaussian window costs."""

    target: float
    tolerance: float
    gp_weight: np.ndarray  # (n,) the GP component's weight
    label_part: np.ndarray  # (n,) sum over neighbours of weight x P(value in window | that neighbour)


def _label_part(
    dist: np.ndarray, labels: np.ndarray, params: LabelMatchParams, target: float, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """(GP weight, Σ_j w_j P_j(window)) per row: the linear-space sum, two exponentials per neighbour."""
    w0, w = component_weights(dist, params)
    if not w.shape[1]:
        return w0, np.zeros(w0.shape[0])
    inv_b = 1.0 / _widths(dist, params)
    a = np.abs(np.asarray(labels, dtype=np.float64) - target) * inv_b  # label's distance from the target, in widths
    c = tolerance * inv_b  # the window's half-width, in widths
    p = 0.5 * np.exp(np.minimum(c - a, 0.0)) * -np.expm1(-2.0 * c)  # label outside the window
    inside = a < c
    if inside.any():
        p[inside] = 1.0 - np.exp(-c[inside]) * np.cosh(a[inside])
    return w0, np.einsum("ij,ij->i", w, p)


def prepare(
    dist: np.ndarray, labels: np.ndarray, params: LabelMatchParams, target: float, tolerance: float
) -> Prepared:
    w0, part = _label_part(dist, labels, params, target, tolerance)
    return Prepared(float(target), float(tolerance), w0, part)


def refresh(prep: Prepared, rows: np.ndarray, dist: np.ndarray, labels: np.ndarray, params: LabelMatchParams) -> None:
    """Recompute ``rows`` (their neighbour lists changed) in place; ``dist``/``labels``: those rows'."""
    if len(rows):
        prep.gp_weight[rows], prep.label_part[rows] = _label_part(dist, labels, params, prep.target, prep.tolerance)


def log_window_prepared(
    prep: Prepared,
    mean: np.ndarray,
    std: np.ndarray,
    dist: np.ndarray,
    labels_of: Callable[[np.ndarray], np.ndarray],
    params: LabelMatchParams,
) -> np.ndarray:
    """:func:`log_window_probability` for every candidate over ``prep.target ± prep.tolerance``;
    ``labels_of(rows)`` gives those rows' neighbour values, read only for rows that underflow."""
    t, tol = prep.target, prep.tolerance
    mean, std = np.asarray(mean, dtype=np.float64), np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    total = prep.gp_weight * np.exp(log_probability_in_window(mean, std, t, tol)) + prep.label_part
    with np.errstate(divide="ignore"):
        out = np.log(total)
    low = np.flatnonzero(~(total > 1e-280))
    if low.size:
        out[low] = _log_window_exact(
            mean[low], std[low], dist[low], labels_of(low), params, np.full(low.size, t), np.full(low.size, tol)
        )
    return out


def cdf(
    y: np.ndarray, mean: np.ndarray, std: np.ndarray, dist: np.ndarray, labels: np.ndarray, params: LabelMatchParams
) -> np.ndarray:
    """P(Y <= y) per candidate under the mixture (probability integral transform, calibration)."""
    y = np.asarray(y, dtype=np.float64)
    w0, w = component_weights(dist, params)
    z = (y[:, None] - np.asarray(labels, dtype=np.float64)) / _widths(dist, params)
    lap = np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0.0)), 1.0 - 0.5 * np.exp(-np.maximum(z, 0.0)))
    return w0 * ndtr((y - mean) / np.maximum(std, 1e-12)) + np.sum(w * lap, axis=1)


def moments(
    mean: np.ndarray, std: np.ndarray, dist: np.ndarray, labels: np.ndarray, params: LabelMatchParams
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the mixture per candidate (a Laplace(l, b) has variance 2b²)."""
    w0, w = component_weights(dist, params)
    labels = np.asarray(labels, dtype=np.float64)
    m = w0 * mean + np.sum(w * labels, axis=1)
    second = w0 * (std**2 + mean**2) + np.sum(w * (2.0 * _widths(dist, params) ** 2 + labels**2), axis=1)
    return m, np.sqrt(np.maximum(second - m**2, 0.0))


def sample(
    mean: np.ndarray,
    std: np.ndarray,
    dist: np.ndarray,
    labels: np.ndarray,
    params: LabelMatchParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """One draw per candidate from the mixture (Thompson sampling)."""
    w0, w = component_weights(dist, params)
    probs = np.concatenate([w0[:, None], w], axis=1)
    u = np.asarray(rng.random(int(probs.shape[0])), dtype=np.float64)
    comp = np.minimum((np.cumsum(probs, axis=1) < u[:, None]).sum(axis=1), probs.shape[1] - 1)
    gauss = rng.normal(mean, std)
    if not w.shape[1]:
        return gauss
    rows = np.arange(probs.shape[0])
    j = np.maximum(comp - 1, 0)
    lap = rng.laplace(labels[rows, j], _widths(dist, params)[rows, j])
    return np.where(comp == 0, gauss, lap)


def continuous_rows(values: np.ndarray) -> np.ndarray:
    """Rows whose value is not a point mass (held exactly by >= POINT_MASS_SHARE of the rows)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return np.zeros(0, dtype=bool)
    uniq, counts = np.unique(v, return_counts=True)
    mass = uniq[counts >= max(2, POINT_MASS_SHARE * v.size)]
    return ~np.isin(v, mass)


def fit(
    values: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    dist: np.ndarray,
    labels: np.ndarray,
    tolerance: float,
) -> LabelMatchParams | None:
    """Parameters maximising the leave-one-out window likelihood of ``values`` (rows: labelled
    crystals; ``mean``/``std``: their leave-one-out GP predictive; ``dist``/``labels``: their
    own nearest *other* labelled crystals), or None when the mixture does not gain
    :data:`MIN_GAIN` nats per row over the GP alone or there are too few rows to tell."""
    from scipy.optimize import minimize

    keep = continuous_rows(values)
    if int(keep.sum()) < MIN_FIT_ROWS:
        return None
    y, m, s = (np.asarray(a, dtype=np.float64)[keep] for a in (values, mean, std))
    d, lab = np.asarray(dist, dtype=np.float64)[keep], np.asarray(labels, dtype=np.float64)[keep]
    tol = max(float(tolerance), 1e-6)
    gp_only = -float(np.mean(log_probability_in_window(m, s, y, tol)))

    def nll(v: np.ndarray) -> float:
        return -float(np.mean(log_window_probability(m, s, d, lab, LabelMatchParams.from_vector(v), y, tol)))

    best = None
    for start in ([0.0, 0.0, math.log(0.02), math.log(0.05)], [3.0, -0.7, math.log(0.03), math.log(0.1)]):
        res = minimize(
            nll, np.array(start), method="Nelder-Mead", options={"maxiter": 2000, "xatol": 1e-4, "fatol": 1e-7}
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    if not np.isfinite(best.fun) or gp_only - float(best.fun) < MIN_GAIN:
        return None
    return LabelMatchParams.from_vector(best.x)
