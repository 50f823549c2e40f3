"""Searching on the measured scale: the learned map (:mod:`screening.bo.measured_map`) over a pool.

The neighbour model (:mod:`screening.bo.neighbour_search`) gives every candidate a base
prediction ``g`` and std ``s`` on the scale the network (and any known data) speak: the
network's prediction, corrected by the local GP over known data where there is local structure.
Here that base becomes the mean of an exact GP over the campaign's own results
(:class:`~screening.bo.measured_map.MeasuredGP`), which learns the map from ``g`` to what is
measured, and a residual over a few principal components of the embedding. It applies:

- whenever the known data are another quantity (``KnownData.same_quantity`` false: e.g. DFT
  gaps as known data, a lab as the oracle): the known data fix ``g``, the results the map;
- whenever the base has no local structure (fewer labelled crystals than ``min_labelled``):
  the told results, and same-quantity known data, are what the model learns from, instead of
  being ignored by a null model (the "freeze" that made a few-label search a frozen ranking,
  and a pool without a network prediction a random search).

With same-quantity known data and local structure the base model already holds every result
(as a labelled neighbour) and nothing here applies.

Deterministic: the hyper-parameters are a function of the first :func:`fit_count` results
(fitted from a fixed start), so a resumed campaign makes the same choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from screening.bo import acquisition as acq
from screening.bo.measured_map import (
    IdentityMap,
    MapPrior,
    MapSummary,
    MeasuredGP,
    MeasuredParams,
)

# Same-quantity known crystals the exact GP holds at most (a deterministic sample beyond): known
# data larger than this have local structure at the default min_labelled, and an exact solve
# over more would cost seconds per suggestion.
MAX_KNOWN_ROWS = 1500


@dataclass
class MeasuredInputs:
    """Per-candidate inputs of the measured model: base prediction ``g`` and std ``s`` (None
    without a network prediction), residual coordinates ``z``; and the same for the
    same-quantity known crystals it learns from (``known_*``, empty when none)."""

    g: np.ndarray
    s: np.ndarray | None
    z: np.ndarray
    g0: float
    z_scale: float
    known_g: np.ndarray
    known_s: np.ndarray | None
    known_z: np.ndarray
    known_y: np.ndarray


def applies(state, known) -> bool:
    """Whether the measured model decides (see the module notes); ``state``: a NeighbourState."""
    from screening.bo.neighbour_search import has_local_structure

    other = known is not None and len(known) > 0 and not known.same_quantity
    return other or not has_local_structure(state)


def fit_count(n: int) -> int:
    """How many results the hyper-parameters are fitted on, given ``n``: every count to 30, then
    30 x 1.25^j (a pure function of ``n``: a resumed campaign fits the same)."""
    if n <= 30:
        return n
    m = 30.0
    while m * 1.25 <= n:
        m *= 1.25
    return int(m)


def _z_scale(z: np.ndarray) -> float:
    """A typical short distance in ``z`` (the residual lengthscale's prior median): a quarter of
    the median distance between candidates (a fixed sample)."""
    if z.shape[1] == 0 or z.shape[0] < 2:
        return 1.0
    rows = np.random.default_rng(0).choice(z.shape[0], size=min(500, z.shape[0]), replace=False)
    zs = z[rows]
    d2 = (zs * zs).sum(1)[:, None] + (zs * zs).sum(1)[None, :] - 2 * zs @ zs.T
    d = np.sqrt(np.maximum(d2[np.triu_indices(len(rows), 1)], 0.0))
    med = float(np.median(d)) if d.size else 1.0
    return 0.25 * med if med > 0 else 1.0


def _principal_axes(X: np.ndarray, k: int, max_rows: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` principal axes of ``X`` (unstandardised: the embedding's own geometry, as
    the PCA the user sees) from a fixed sample: ``(centre, axes)`` with ``z = X @ axes.T - centre``.

    Why unstandardised: on setting d' (no network prediction) the residual GP over the first
    3 axes of the raw embedding reached a best |gap - t| of 0.003 eV by trial 30 (8 seeds),
    over the first 3 of the standardised one 0.023 eV (docs/benchmarks.md)."""
    X = np.asarray(X, dtype=np.float64)
    rows = X
    if X.shape[0] > max_rows:
        rows = X[np.sort(np.random.default_rng(0).choice(X.shape[0], max_rows, replace=False))]
    mean = rows.mean(axis=0)
    k = min(k, X.shape[1], max(rows.shape[0] - 1, 0))
    if k == 0:
        return np.zeros(0), np.zeros((0, X.shape[1]))
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    axes = vt[:k]
    return mean @ axes.T, axes


@dataclass
class ResidualCoords:
    """The residual field's coordinates, fixed for a pool: its principal ``axes`` (``centre``
    subtracted), every candidate's ``z`` and the lengthscale prior's ``z_scale``."""

    centre: np.ndarray
    axes: np.ndarray
    z: np.ndarray
    z_scale: float


def residual_coords(pool, n_components: int) -> ResidualCoords:
    """:class:`ResidualCoords` of ``pool`` (a DiscretePool): computed once per pool, as they do
    not change with the results."""
    X = pool.embedding if pool.embedding is not None else pool.features
    centre, axes = _principal_axes(X, n_components)
    z = X @ axes.T - centre
    return ResidualCoords(centre, axes, z, _z_scale(z))


def inputs(state, pool, coords: ResidualCoords, has_prediction: bool) -> MeasuredInputs:
    """The measured model's inputs from a neighbour ``state`` over ``pool`` (a DiscretePool)."""
    from screening.bo.neighbour_search import reported_predictive

    g, s = reported_predictive(state)
    centre, axes, z = coords.centre, coords.axes, coords.z
    known = pool.known
    kg = np.zeros(0)
    ks: np.ndarray | None = np.zeros(0) if has_prediction else None
    kz = np.zeros((0, z.shape[1]))
    ky = np.zeros(0)
    if known is not None and len(known) and known.same_quantity:
        rows = np.arange(len(known))
        if rows.size > MAX_KNOWN_ROWS:
            rows = np.sort(np.random.default_rng(0).choice(rows.size, MAX_KNOWN_ROWS, replace=False))
        if has_prediction and known.prior_mean is not None:
            kg = known.prior_mean[rows]
        else:
            kg = np.full(rows.size, float(np.median(g)))
        if ks is not None:
            ks = known.prior_std[rows] if known.prior_std is not None else np.full(rows.size, float(np.median(s)))
        kz = known.embedding[rows] @ axes.T - centre
        ky = known.values[rows]
    return MeasuredInputs(
        g,
        s if has_prediction else None,
        z,
        float(np.median(g)),
        coords.z_scale,
        kg,
        ks,
        kz,
        ky,
    )


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha1(usedforsecurity=False)
    for a in arrays:
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def model(
    inp: MeasuredInputs, told_rows: Sequence[int], told_y: np.ndarray, cache: dict | None = None
) -> MeasuredModel:
    """The measured model conditioned on the known rows (same quantity) and the results at pool
    ``told_rows``; hyper-parameters fitted on the first :func:`fit_count` of them (kept in
    ``cache`` under the data they were fitted on)."""
    rows = np.asarray(told_rows, dtype=np.int64)
    g = np.concatenate([inp.known_g, inp.g[rows]])
    s = None if inp.s is None else np.concatenate([inp.known_s if inp.known_s is not None else [], inp.s[rows]])
    z = np.vstack([inp.known_z, inp.z[rows]])
    y = np.concatenate([inp.known_y, np.asarray(told_y, dtype=np.float64)])
    m = len(inp.known_y) + fit_count(len(rows))
    gp = MeasuredGP(MapPrior(), inp.g0, inp.z_scale, residual_needs_evidence=inp.s is not None)
    key = _digest(g[:m], None if s is None else s[:m], z[:m], y[:m], np.array([inp.g0, inp.z_scale]))
    params: MeasuredParams | None = None
    if cache is not None and cache.get("measured_params_key") == key:
        params = cache["measured_params"]
    gp.fit(g, s, z, y, params=params, fit_rows=_fit_rows(len(inp.known_y), m))
    if cache is not None:
        cache["measured_params_key"], cache["measured_params"] = key, gp.params
    if s is None:
        return gp
    identity, nll0 = IdentityMap.fit(g, s, y)
    weight = map_weight(nll0 + identity.hyper_penalty(), gp.negative_log_likelihood() + gp.hyper_penalty(), len(y))
    if weight < MIN_WEIGHT:
        return identity
    if weight > 1.0 - MIN_WEIGHT:
        return gp
    return MapAverage(gp, identity, weight)


# The learned map's prior odds against the identity: MAP_EVIDENCE x ln n nats (BIC's price of
# 2 x MAP_EVIDENCE parameters). 1.0, chosen on subsets of settings b and e: with 2.0 the same
# look-ups on b (1.72x against 1.69x the ranking) and more on e (4.7x against 5.1x random).
MAP_EVIDENCE = 1.0
MIN_WEIGHT = 1e-3  # below it, a model's share of the average is dropped (its picks would not change)


def map_weight(identity_cost: float, map_cost: float, n: int) -> float:
    """The posterior probability of the learned map against the identity, from each model's cost
    (negative log marginal likelihood plus :meth:`hyper_penalty`) and the prior odds.

    Why the penalties: each model fits its own noise, and the identity, with two noise parameters
    free, explains a lab's 1.6 eV offset as 1.6 eV of noise at almost the map's likelihood; the
    hyper-parameters' prior makes it pay for that (setting e with known DFT data: 0.91x the
    look-ups; docs/benchmarks.md). Why a probability, not a switch: near even odds the search
    hedges between the two scales instead of betting on one."""
    log_odds = identity_cost - map_cost - MAP_EVIDENCE * math.log(max(n, 2))
    return 1.0 / (1.0 + math.exp(-min(max(log_odds, -50.0), 50.0)))


class MapAverage:
    """The learned map and the identity averaged by their posterior probabilities (``weight`` on
    the map): a mixture of two Gaussians per candidate. It reads as either model does
    (``predict`` gives the mixture's moments); :func:`select` and :func:`window_probability`
    score the window by the mixture itself (:func:`_components`)."""

    def __init__(self, gp: MeasuredGP, identity: IdentityMap, weight: float) -> None:
        self.gp, self.identity, self.weight = gp, identity, float(weight)
        self.params = gp.params

    def components(
        self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray
    ) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(weight, mean, std) of each model at each query."""
        return [(self.weight, *self.gp.predict(g, s, z)), (1.0 - self.weight, *self.identity.predict(g, s, z))]

    def predict(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _moments(self.components(g, s, z))

    def sample(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One draw per query: a model by its weight, then its Gaussian."""
        return _draw(self.components(g, s, z), rng)

    def with_fantasies(self, g: np.ndarray, s: np.ndarray | None, z: np.ndarray, y: np.ndarray) -> MapAverage:
        return MapAverage(self.gp.with_fantasies(g, s, z, y), self.identity, self.weight)

    def map_posterior(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _moments(
            [(self.weight, *self.gp.map_posterior(grid)), (1.0 - self.weight, *self.identity.map_posterior(grid))]
        )

    def summary(self, g_range: tuple[float, float] | None = None, points: int = 41) -> MapSummary:
        """The learned map's summary with the average's line and band, and its weight."""
        own = self.gp.summary(g_range, points)
        mean, std = self.map_posterior(own.grid)
        slope, intercept = np.polyfit(own.grid, mean, 1)
        return dataclasses.replace(
            own,
            intercept=float(intercept),
            slope=float(slope),
            band=float(np.mean(std)),
            mean=mean,
            std=std,
            weight=self.weight,
        )


# what the search reads: the learned map, the null model, or the two averaged
MeasuredModel = MeasuredGP | IdentityMap | MapAverage


def _moments(parts: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of a mixture of Gaussians given as (weight, mean, std)."""
    mean = sum(w * m for w, m, _ in parts)
    var = sum(w * (sd * sd + (m - mean) ** 2) for w, m, sd in parts)
    return np.asarray(mean), np.sqrt(np.asarray(var))


MAX_FIT_ROWS = 400  # rows the hyper-parameters are fitted on at most (each likelihood is an n^3 solve)


def _fit_rows(n_known: int, m: int) -> np.ndarray:
    """The first ``m`` rows (known first, then results), or, past :data:`MAX_FIT_ROWS`, every
    result among them and a fixed sample of the known rows."""
    if m <= MAX_FIT_ROWS:
        return np.arange(m)
    told = np.arange(n_known, m)[-MAX_FIT_ROWS:]
    room = MAX_FIT_ROWS - told.size
    known = np.zeros(0, dtype=np.int64)
    if room > 0:
        known = np.sort(np.random.default_rng(1).choice(n_known, size=min(room, n_known), replace=False))
    return np.concatenate([known.astype(np.int64), told])


def predictive(gp: MeasuredModel, inp: MeasuredInputs, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of a new measurement at every candidate (or at pool ``rows``)."""
    return gp.predict(*_rows_of(inp, slice(None) if rows is None else rows))


def window_probability(
    gp: MeasuredModel, inp: MeasuredInputs, target: float, tolerance: float, rows: np.ndarray | None = None
) -> np.ndarray:
    parts = _components(gp, *_rows_of(inp, slice(None) if rows is None else rows))
    return np.exp(_log_window(parts, target, tolerance))


def _components(
    gp: MeasuredModel, g: np.ndarray, s: np.ndarray | None, z: np.ndarray
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(weight, mean, std) of each Gaussian of the model's predictive: one, or a MapAverage's two."""
    if isinstance(gp, MapAverage):
        return gp.components(g, s, z)
    return [(1.0, *gp.predict(g, s, z))]


def _log_window(
    parts: list[tuple[float, np.ndarray, np.ndarray]], target: float, tolerance: float, shift: np.ndarray | None = None
) -> np.ndarray:
    """log P(|measured - target| <= tolerance) under the mixture ``parts`` (``shift``: each
    Gaussian's mean moved by ``shift`` of its own std, the seeded tie-break)."""
    terms = [
        math.log(w) + acq.log_probability_in_window(m if shift is None else m + shift * sd, sd, target, tolerance)
        for w, m, sd in parts
    ]
    return terms[0] if len(terms) == 1 else np.logaddexp.reduce(terms)


def _draw(parts: list[tuple[float, np.ndarray, np.ndarray]], rng: np.random.Generator) -> np.ndarray:
    """One draw per query from the mixture ``parts``: a Gaussian by its weight, then its value."""
    if len(parts) == 1:
        _, m, sd = parts[0]
        return rng.normal(m, sd)
    (w, m1, s1), (_, m0, s0) = parts
    on_first = rng.random(m1.shape[0]) < w
    return np.where(on_first, rng.normal(m1, s1), rng.normal(m0, s0))


def summary(gp: MeasuredModel) -> MapSummary:
    return gp.summary()


def select(
    gp: MeasuredModel,
    inp: MeasuredInputs,
    free: np.ndarray,
    q: int,
    acquisition: str,
    target: float,
    tolerance: float,
    rng: np.random.Generator,
    pending_rows: Sequence[int] = (),
    tie_break: float = 0.0,
) -> list[int]:
    """``q`` rows of ``free`` to measure next. ``window``: the probability that the measured value
    lands in ``target ± tolerance`` (with ``tie_break`` as in the neighbour search); ``thompson``:
    one draw per candidate from its marginal, the draw closest to the target wins. Pending rows
    and earlier picks of the batch are believed at their predicted mean before the next pick."""
    free = np.asarray(free, dtype=np.int64)
    believed = [int(r) for r in pending_rows]
    model_now = _believe(gp, inp, believed)
    rows = _rows_of(inp, free)
    shift = tie_break * rng.standard_normal(free.size) if tie_break > 0 and acquisition == "window" else None
    available = np.ones(free.size, dtype=bool)
    picks: list[int] = []
    for _ in range(min(q, free.size)):
        parts = _components(model_now, *rows)
        if acquisition == "thompson":
            score = -np.abs(_draw(parts, rng) - target)
        else:
            score = _log_window(parts, target, tolerance, shift)
        score = np.where(available, score, -np.inf)
        j = int(np.argmax(score))
        picks.append(int(free[j]))
        available[j] = False
        if len(picks) < q:
            believed.append(int(free[j]))
            model_now = _believe(gp, inp, believed)
    return picks


def _rows_of(inp: MeasuredInputs, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The model's inputs (base prediction, its std, residual coordinates) at pool ``rows``."""
    return inp.g[rows], None if inp.s is None else inp.s[rows], inp.z[rows]


def _believe(gp: MeasuredModel, inp: MeasuredInputs, rows: list[int]) -> MeasuredModel:
    if not rows:
        return gp
    r = np.asarray(rows, dtype=np.int64)
    mean, _ = predictive(gp, inp, r)
    return gp.with_fantasies(*_rows_of(inp, r), mean)
