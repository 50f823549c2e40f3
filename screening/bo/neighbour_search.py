"""Choosing pool candidates with the nearest-neighbour GP (:mod:`screening.bo.neighbour_gp`).

The predictive distribution of a candidate's value is ``N(p(x) + m(x), s(x)²)``: the network's
prediction ``p`` (the pool's ``prior_mean``; the labelled mean without one), corrected by the
local GP over known data and campaign observations. Acquisitions on it:

- ``window``: probability that the value lands in ``target ± tolerance``; a candidate with a
  close labelled sibling and a prediction on target wins over a lone one — the ranking by
  ``|p - target|`` ignores exactly that;
- ``thompson``: one draw per candidate from its marginal, the draw closest to the target wins
  (seeded: different seeds give different trajectories, the same seed the same one).

Batches (and pending points) condition on each pick at its predicted value before the next
("kriging believer"), so a batch spreads over distinct neighbourhoods.

State: the fitted model is kept in the campaign's cache between asks and extended with each new
observation; it is rebuilt from the data alone (deterministically) after a restart.
Hyper-parameters are refitted when the campaign's observations reach 10, 20, 40, ... — a pure
function of their number, so a resumed campaign makes the same choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from screening.bo import acquisition as acq
from screening.bo.neighbour_gp import NeighbourGP, NeighbourGPParams, Projection
from screening.errors import MatscreenError


class KnownDataError(MatscreenError):
    """Known (labelled, non-candidate) data are unusable with the pool given."""


@dataclass
class KnownData:
    """Labelled crystals that are not candidates: embeddings, values and (optionally) predictions."""

    ids: list[str]
    embedding: np.ndarray
    values: np.ndarray
    prior_mean: np.ndarray | None = None

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

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class NeighbourSettings:
    n_neighbours: int = 16
    n_components: int = 16
    fit_sample: int = 5000


def refit_count(n_told: int, has_known: bool) -> int:
    """How many campaign observations the hyper-parameters are fitted with, given ``n_told``.

    With known data: 0 until 10, then 10, 20, 40, ... (the known data carry the first fit).
    Without: every count below 10 (tiny fits are cheap), then 10, 20, 40, ...
    """
    if n_told < 10:
        return 0 if has_known else n_told
    m = 10
    while m * 2 <= n_told:
        m *= 2
    return m


def fit_chain(m: int, has_known: bool) -> list[int]:
    """The observation counts whose fits lead to the hyper-parameters at count ``m``.

    The first is fitted from a fixed start, each next one warm-started from the previous, so
    a campaign rebuilt after a restart replays the same sequence and gets the same values.
    """
    if not has_known and m < 10:
        return [m]
    chain = [0] if has_known else []
    c = 10
    while c <= m:
        chain.append(c)
        c *= 2
    return chain


@dataclass
class NeighbourState:
    """A fitted neighbour GP over a pool, and which observations it already holds."""

    settings: NeighbourSettings
    projection: Projection
    gp: NeighbourGP
    fit_count: int
    pool_points: np.ndarray  # candidates in the projection
    pool_prior: np.ndarray  # the network's prediction (or the labelled mean) per candidate
    known_points: np.ndarray
    known_res: np.ndarray  # known values minus their prior
    told_rows: list[int] = field(default_factory=list)
    has_known: bool = False

    @property
    def params(self) -> NeighbourGPParams:
        assert self.gp.params is not None
        return self.gp.params


def build_state(
    settings: NeighbourSettings,
    embedding: np.ndarray,
    prior: np.ndarray | None,
    known: KnownData | None,
    told_rows: Sequence[int],
    told_y: np.ndarray,
    seed: int,
) -> NeighbourState:
    """Fit the projection and hyper-parameters, index the pool, condition on every observation."""
    has_known = known is not None and len(known) > 0
    m = refit_count(len(told_rows), has_known)
    told_y = np.asarray(told_y, dtype=np.float64)
    base = _prior_base(known, told_y[:m])
    pool_prior = prior if prior is not None else np.full(embedding.shape[0], base)
    if has_known:
        assert known is not None
        projection = Projection(settings.n_components, seed=seed).fit(np.vstack([known.embedding, embedding]))
        k_points = projection.transform(known.embedding)
        k_prior = known.prior_mean if known.prior_mean is not None and prior is not None else np.full(len(known), base)
        k_res = known.values - k_prior
    else:
        projection = Projection(settings.n_components, seed=seed).fit(embedding)
        k_points = np.zeros((0, projection.components_.shape[0]))
        k_res = np.zeros(0)
    pool_points = projection.transform(embedding)
    state = NeighbourState(
        settings,
        projection,
        NeighbourGP(settings.n_neighbours, settings.fit_sample, seed),
        m,
        pool_points,
        pool_prior,
        k_points,
        k_res,
        [],
        has_known,
    )
    chain = fit_chain(m, has_known)
    fit_points, fit_res, weights = _fit_data(state, list(told_rows)[: chain[0]], told_y[: chain[0]])
    gp = state.gp
    if fit_points.shape[0] >= 3:
        gp.fit(fit_points, fit_res, weights)
    else:  # too little to fit: a broad prior around the network (or the labelled mean)
        spread = max(float(np.std(fit_res)) if fit_res.size > 1 else 1.0, 0.3)
        gp.fit(
            fit_points.reshape(-1, pool_points.shape[1]),
            fit_res,
            params=NeighbourGPParams(0.5 * spread, 1.0, 0.3 * spread, 0.5 * spread),
        )
    gp.fit(k_points, k_res, params=gp.params)
    gp.index(pool_points)
    state.fit_count = chain[0]
    _advance(state, list(told_rows), told_y, m)
    return state


def _advance(state: NeighbourState, told_rows: list[int], told_y: np.ndarray, m: int) -> None:
    """Refit along the chain up to count ``m`` (warm starts), then condition on every observation."""
    for c in fit_chain(m, state.has_known):
        if c > state.fit_count:
            _add_told(state, told_rows[:c], told_y[:c])
            state.gp.refit(*_fit_data(state, told_rows[:c], told_y[:c]))
            state.fit_count = c
    _add_told(state, told_rows, told_y)


def _fit_data(
    state: NeighbourState, rows: list[int], values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Points, residuals and weights the hyper-parameters are fitted on: known data plus the
    first campaign observations (half the weight once there are 10: they are crystals of the
    pool, which the network did not train on)."""
    k_points, k_res = state.known_points, state.known_res
    t_points = state.pool_points[rows]
    t_res = np.asarray(values, dtype=np.float64) - state.pool_prior[rows]
    weights = None
    if len(k_res) and len(rows) >= 10:
        weights = np.concatenate([np.full(len(k_res), 0.5 / len(k_res)), np.full(len(rows), 0.5 / len(rows))])
    return np.vstack([k_points, t_points]), np.concatenate([k_res, t_res]), weights


def _add_told(state: NeighbourState, told_rows: list[int], told_y: np.ndarray) -> None:
    new = told_rows[len(state.told_rows) :]
    if new:
        y_new = np.asarray(told_y, dtype=np.float64)[len(state.told_rows) :]
        state.gp.add(state.pool_points[new], y_new - state.pool_prior[new])
    state.told_rows = list(told_rows)


def _prior_base(known: KnownData | None, fit_y: np.ndarray) -> float:
    """Constant prior mean when the pool has no network prediction: the mean of the labelled
    data the hyper-parameters were fitted on (fixed between refits, so updates stay incremental)."""
    vals = fit_y if known is None or len(known) == 0 else known.values
    return float(np.mean(vals)) if len(vals) else 0.0


def update_state(
    state: NeighbourState | None,
    settings: NeighbourSettings,
    embedding: np.ndarray,
    prior: np.ndarray | None,
    known: KnownData | None,
    told_rows: Sequence[int],
    told_y: np.ndarray,
    seed: int,
) -> NeighbourState:
    """The state for these observations: extended incrementally when it can be, rebuilt otherwise.

    Extending gives the same model as a rebuild: the same labelled set, and hyper-parameters
    refitted at the same observation counts (warm-started, so a rebuilt campaign can differ in
    the last digits of a hyper-parameter, not in its data).
    """
    told_rows = list(told_rows)
    has_known = known is not None and len(known) > 0
    m = refit_count(len(told_rows), has_known)
    chain = fit_chain(m, has_known)
    if (
        state is None
        or state.settings != settings
        or told_rows[: len(state.told_rows)] != state.told_rows
        or m < state.fit_count
        or state.fit_count not in chain
        or (prior is None and m != state.fit_count)
    ):
        return build_state(settings, embedding, prior, known, told_rows, told_y, seed)
    _advance(state, told_rows, np.asarray(told_y, dtype=np.float64), m)
    return state


def predictive(state: NeighbourState) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of a new observation at every pool candidate."""
    m, s = state.gp.predict()
    return state.pool_prior + m, s


def select(
    state: NeighbourState,
    free: np.ndarray,
    q: int,
    acquisition: str,
    target: float,
    tolerance: float,
    rng: np.random.Generator,
    pending_rows: Sequence[int] = (),
) -> list[int]:
    """``q`` rows of ``free`` (pool rows) to evaluate next; pending rows are believed at their mean."""
    mean, std = predictive(state)
    mean, std = mean.copy(), std.copy()
    believed: list[int] = list(pending_rows)
    if believed:
        _believe(state, believed, mean, std)
    picks: list[int] = []
    available = np.zeros(mean.shape[0], dtype=bool)
    available[free] = True
    for _ in range(q):
        rows = np.flatnonzero(available)
        if rows.size == 0:
            break
        if acquisition == "thompson":
            draw = rng.normal(mean[rows], std[rows])
            score = -np.abs(draw - target)
        else:
            score = acq.log_probability_in_window(mean[rows], std[rows], target, tolerance)
        pick = int(rows[int(np.argmax(score))])
        picks.append(pick)
        available[pick] = False
        believed.append(pick)
        if len(picks) < q:
            mean, std = (a.copy() for a in predictive(state))
            _believe(state, believed, mean, std)
    return picks


def _believe(state: NeighbourState, rows: list[int], mean: np.ndarray, std: np.ndarray) -> None:
    """Condition (in place, on copies) on ``rows`` taking their current predicted means."""
    pts = state.pool_points[rows]
    res = mean[rows] - state.pool_prior[rows]
    changed, m, s = state.gp.preview_add(pts, res)
    mean[changed] = state.pool_prior[changed] + m
    std[changed] = s


def calibration(state: NeighbourState, rows: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Share of ``values`` at pool ``rows`` inside the 68 % and 95 % predictive intervals."""
    mean, std = predictive(state)
    z = np.abs(np.asarray(values, dtype=np.float64) - mean[rows]) / std[rows]
    return {
        "coverage_68": float(np.mean(z <= 1.0)),
        "coverage_95": float(np.mean(z <= 1.96)),
        "mae": float(np.mean(np.abs(np.asarray(values) - mean[rows]))),
        "n": int(len(rows)),
    }
