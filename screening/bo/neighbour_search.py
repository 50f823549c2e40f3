"""Choosing pool candidates with the nearest-neighbour GP (:mod:`screening.bo.neighbour_gp`).

The predictive distribution of a candidate's value is ``N(p(x) + m(x), s(x)²)``: the network's
prediction ``p`` (the pool's ``prior_mean``; the labelled mean without one), corrected by the
local GP over known data and campaign observations. Acquisitions on it:

- ``window``: probability that the value lands in ``target ± tolerance``; a candidate with a
  close labelled sibling and a prediction on target wins over a lone one — the ranking by
  ``|p - target|`` ignores exactly that. With known data the distribution is a mixture
  (:mod:`screening.bo.label_match`): the Gaussian above plus sharp components at the nearest
  labelled crystals' values, because near duplicates and polymorphs often share a gap to 0.01 eV;
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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from screening.bo import acquisition as acq
from screening.bo import known_fit as kf
from screening.bo import label_match as lm
from screening.bo.known_fit import KnownData, KnownFitCache
from screening.bo.neighbour_gp import NeighbourGP, NeighbourGPParams, NeighbourSettings, Projection
from screening.io.array_file import content_digest, hash_array

if TYPE_CHECKING:
    from screening.bo.pending_effect import PendingEffect

# eV, added in quadrature to the network's std where that is the predictive std (predictive).
NETWORK_STD_FLOOR = 0.05


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
    known_res: np.ndarray  # known values minus their prior, over their scale
    told_rows: list[int] = field(default_factory=list)
    has_known: bool = False
    # Residuals are modelled in units of the network's own per-crystal uncertainty (ones
    # without one): y = prior + scale * z, with the local GP over z.
    pool_scale: np.ndarray | None = None
    # Which saved base file (the arrays fixed at build) this state's fixed arrays are in; None
    # until first saved. Saving again after an observation then rewrites only the changing part.
    base_token: str | None = None
    # The known crystals' values (labels of label-match neighbours) and the mixture's parameters,
    # fitted once at the build from the known data; None: the GP alone.
    known_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    label_match: lm.LabelMatchParams | None = None
    # The network's own std per candidate (pred_band_gap_std), set by the caller for every use (it
    # is not saved): while no local structure is fitted, predictive's std (floored); None: the std
    # fitted to the labelled residuals, one value for all.
    network_std: np.ndarray | None = field(default=None, repr=False, compare=False)
    # The mixture's share of each candidate's window probability for one target (prepared_match;
    # saved with the state, refreshed where an observation changes a neighbour list).
    match_prepared: lm.Prepared | None = field(default=None, repr=False, compare=False)
    # The values told at ``told_rows``: a state is extended only by observations that start with
    # the ones it holds, values included (a campaign re-created with corrected values rebuilds).
    told_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    base_digest: str | None = field(default=None, repr=False, compare=False)  # the base file's, for the seal
    base_stamp: list[int] | None = field(default=None, repr=False, compare=False)  # and its file stamp
    # the state file's stamp when it was read and found to be what the seal says (load_checked)
    state_stamp: list[int] | None = field(default=None, repr=False, compare=False)
    # whether the base file's float arrays were found finite (when written or read): save_state's
    # seal vouches for both files only then (Seal.finite)
    base_finite: bool = field(default=False, repr=False, compare=False)

    def scale(self, rows: np.ndarray | list[int] | slice) -> np.ndarray:
        if self.pool_scale is None:
            return np.ones(len(self.pool_prior))[rows]
        return self.pool_scale[rows]

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
    prior_std: np.ndarray | None = None,
    known_cache: KnownFitCache | None = None,
) -> NeighbourState:
    """Fit the projection and hyper-parameters, index the pool, condition on every observation.

    With ``prior_std`` (the network's per-crystal std; used only when the known data carry it
    too) the residuals are divided by it, so the same local correction is larger where the
    network is less sure and the predictive std keeps the network's crystal-to-crystal spread:
    with no local structure the window acquisition then prefers, among predictions equally near
    the target, the crystals the network is surer of — the ranking by the prediction cannot.

    With known data, their part of the model (projection, residuals, hyper-parameters, label
    match) is :mod:`screening.bo.known_fit`'s, read from ``known_cache`` when it holds it.
    """
    has_known = known is not None and len(known) > 0
    m = refit_count(len(told_rows), has_known)
    told_y = np.asarray(told_y, dtype=np.float64)
    if has_known:
        assert known is not None
        scaled = kf.uses_scales(known, prior is not None, prior_std is not None)
        fit = kf.obtain(settings, known, prior is not None, scaled, seed, known_cache)
        base = _prior_base(known, told_y[:m])
        projection, k_points, k_res = fit.projection, fit.points, fit.residuals
        pool_scale = np.asarray(prior_std, dtype=np.float64) / fit.unit if fit.unit is not None else None
    else:
        base = _prior_base(None, told_y[:m])
        projection = Projection(settings.n_components, seed=seed).fit(embedding)
        k_points = np.zeros((0, projection.components_.shape[0]))
        k_res = np.zeros(0)
        pool_scale, _ = _scales(prior, prior_std, None)
    pool_prior = prior if prior is not None else np.full(embedding.shape[0], base)
    pool_points = projection.transform(embedding)
    state = NeighbourState(
        settings,
        projection,
        NeighbourGP(settings.n_neighbours, settings.fit_sample, seed, settings.min_labelled),
        m,
        pool_points,
        pool_prior,
        k_points,
        k_res,
        [],
        has_known,
        pool_scale,
    )
    chain = fit_chain(m, has_known)
    gp = state.gp
    if has_known:  # the known data carry the first fit (chain[0] is 0)
        assert known is not None
        gp.fit(k_points, k_res, params=fit.params)
        state.known_values = np.asarray(known.values, dtype=np.float64).copy()
        state.label_match = fit.label_match
    else:
        fit_points, fit_res, weights = _fit_data(state, list(told_rows)[: chain[0]], told_y[: chain[0]])
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


def labelled_values(state: NeighbourState) -> np.ndarray:
    """Values of the GP's labelled set: the known crystals', then the campaign's observations."""
    told = np.asarray(state.told_rows, dtype=np.int64)
    res = state.gp._lab_res[len(state.known_values) :]
    return np.concatenate([state.known_values, state.pool_prior[told] + state.scale(told) * res])


def neighbour_labels(state: NeighbourState, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates' nearest labelled crystals (all, or ``rows``): distances and values, (n, k) each."""
    sel = slice(None) if rows is None else rows
    idx, dist = state.gp._nbr_idx[sel], state.gp._nbr_dist[sel]
    return dist, labelled_values(state)[idx] if idx.size else np.zeros(idx.shape)


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
    t_res = (np.asarray(values, dtype=np.float64) - state.pool_prior[rows]) / state.scale(rows)
    weights = None
    if len(k_res) and len(rows) >= 10:
        weights = np.concatenate([np.full(len(k_res), 0.5 / len(k_res)), np.full(len(rows), 0.5 / len(rows))])
    return np.vstack([k_points, t_points]), np.concatenate([k_res, t_res]), weights


def _add_told(state: NeighbourState, told_rows: list[int], told_y: np.ndarray) -> None:
    new = told_rows[len(state.told_rows) :]
    changed = np.zeros(0, dtype=np.int64)
    if new:
        y_new = np.asarray(told_y, dtype=np.float64)[len(state.told_rows) :]
        changed = state.gp.add(state.pool_points[new], (y_new - state.pool_prior[new]) / state.scale(new))
    state.told_rows = list(told_rows)
    state.told_y = np.asarray(told_y, dtype=np.float64)[: len(told_rows)].copy()
    if state.match_prepared is not None and state.label_match is not None and len(changed):
        dist, labels = neighbour_labels(state, changed)
        lm.refresh(state.match_prepared, changed, dist, labels, state.label_match)


def prepared_match(state: NeighbourState, target: float, tolerance: float | None = None) -> lm.Prepared | None:
    """The label match's prepared scores for ``target`` and ``tolerance`` (default: the one it was
    fitted for); made on first use, and again only if either changes."""
    if state.label_match is None:
        return None
    tol = state.settings.label_match_tolerance if tolerance is None else float(tolerance)
    prep = state.match_prepared
    if prep is None or prep.target != target or prep.tolerance != tol:
        dist, labels = neighbour_labels(state)
        prep = lm.prepare(dist, labels, state.label_match, target, tol)
        state.match_prepared = prep
    return prep


def _scales(
    prior: np.ndarray | None, prior_std: np.ndarray | None, known: KnownData | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-crystal residual scales for the pool and the known data, in units of the pool's median
    network std (so the fitted kernel stays in eV-like units); ``(None, None)`` when the network's
    std is missing for either, as residuals in mixed units would mislead the local GP."""
    if prior is None or prior_std is None or (known is not None and known.prior_std is None):
        return None, None
    unit = float(np.median(prior_std))
    pool_scale = np.asarray(prior_std, dtype=np.float64) / unit
    known_scale = None if known is None or known.prior_std is None else known.prior_std / unit
    return pool_scale, known_scale


def _prior_base(known: KnownData | None, fit_y: np.ndarray) -> float:
    """Constant prior mean when the pool has no network prediction: the mean of the labelled
    data the hyper-parameters were fitted on (fixed between refits, so updates stay incremental)."""
    vals = fit_y if known is None or len(known) == 0 else known.values
    return float(np.mean(vals)) if len(vals) else 0.0


def update_state(
    state: NeighbourState | None,
    settings: NeighbourSettings,
    embedding: np.ndarray | Callable[[], np.ndarray],
    prior: np.ndarray | None,
    known: KnownData | None,
    told_rows: Sequence[int],
    told_y: np.ndarray,
    seed: int,
    prior_std: np.ndarray | None = None,
    known_cache: KnownFitCache | None = None,
) -> NeighbourState:
    """The state for these observations: extended incrementally when it can be, rebuilt otherwise.

    Extending gives the same model as a rebuild: the same labelled set, and hyper-parameters
    refitted at the same observation counts (warm-started, so a rebuilt campaign can differ in
    the last digits of a hyper-parameter, not in its data). ``embedding`` may be a function that
    returns it: it is then called only for a rebuild (a large pool's embedding is read on demand).
    """
    told_rows = list(told_rows)
    if state is None or not extends(state, settings, prior, prior_std, known, told_rows, told_y):
        emb = embedding() if callable(embedding) else embedding
        return build_state(settings, emb, prior, known, told_rows, told_y, seed, prior_std, known_cache)
    has_known = known is not None and len(known) > 0
    _advance(state, told_rows, np.asarray(told_y, dtype=np.float64), refit_count(len(told_rows), has_known))
    return state


def extends(
    state: NeighbourState,
    settings: NeighbourSettings,
    prior: np.ndarray | None,
    prior_std: np.ndarray | None,
    known: KnownData | None,
    told_rows: Sequence[int],
    told_y: np.ndarray,
) -> bool:
    """Whether :func:`update_state` extends ``state`` to these observations (rather than
    rebuilding): the same settings and inputs, observations that start with the ones it holds,
    and a refit count on the chain it was fitted along.

    Why apart: ``campaign tell`` extends a saved model with its results so the next ``ask`` only
    reads it, but must never start a build (minutes at 10^6 candidates) to do so."""
    has_known = known is not None and len(known) > 0
    m = refit_count(len(told_rows), has_known)
    return not (
        state.settings != settings
        or not holds_prefix(state, told_rows, told_y)
        or m < state.fit_count
        or state.fit_count not in fit_chain(m, has_known)
        or (prior is None and m != state.fit_count)
        or (state.pool_scale is None) != (_scales(prior, prior_std, known if has_known else None)[0] is None)
    )


def holds_prefix(state: NeighbourState, told_rows: Sequence[int], told_y: np.ndarray) -> bool:
    """Whether the observations ``(told_rows, told_y)`` start with the ones ``state`` holds, rows
    and values alike (bit for bit: a value told again differently is another observation)."""
    k = len(state.told_rows)
    if list(told_rows[:k]) != list(state.told_rows) or len(told_y) < k:
        return False
    return bool(np.array_equal(np.asarray(told_y[:k], dtype=np.float64), state.told_y[:k]))


def has_local_structure(state: NeighbourState) -> bool:
    """Whether the hyper-parameters were fitted on enough labelled crystals (known data and the
    campaign's first results) for local structure; below ``min_labelled`` the fit is the null
    model (``neighbour_gp.fit_params``), residuals independent around the network."""
    return len(state.known_res) + state.fit_count >= state.settings.min_labelled


def predictive(state: NeighbourState, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of a new observation at every pool candidate (or at ``rows``).

    Without local structure the mean is the network's prediction and, when the state carries
    ``network_std``, the std is the network's own per-crystal one: among predictions equally near
    the target the window acquisition then takes first the crystals the network is surer of (on
    validation crystals with a gap > 0, 15 % of its surest fifth are within 0.05 eV of their DFT
    gap, 10-12 % of the other fifths). The null model's one fitted std ranks by the prediction
    alone.
    """
    m, s = state.gp.predict(rows)
    sel = slice(None) if rows is None else rows
    scale = state.scale(sel)
    std = scale * s
    if state.network_std is not None and not has_local_structure(state):
        # floored in quadrature: a crystal the network is all but sure of cannot outrank every
        # candidate whose prediction is nearer the target (computed here, for the rows asked)
        std = np.sqrt(np.asarray(state.network_std[sel], dtype=np.float64) ** 2 + NETWORK_STD_FLOOR**2)
    return state.pool_prior[sel] + scale * m, std


def select(
    state: NeighbourState,
    free: np.ndarray,
    q: int,
    acquisition: str,
    target: float,
    tolerance: float,
    rng: np.random.Generator,
    pending_rows: Sequence[int] = (),
    tie_break: float = 0.0,
    pending_effect: PendingEffect | None = None,
) -> list[int]:
    """``q`` rows of ``free`` (pool rows) to evaluate next; pending rows are believed at their mean.

    ``tie_break`` > 0 (window only): each free candidate's mean is shifted by ``tie_break`` times
    its predictive std times a standard normal drawn from ``rng`` before scoring (``Strategy.tie_break``
    says why). ``pending_effect``: the pending rows' effect on this very model, computed before
    (:mod:`screening.bo.pending_effect`); read instead of computed where it believes exactly
    ``pending_rows`` at exactly their means here."""
    mean, std = predictive(state)
    mean, std = mean.copy(), std.copy()
    believed: list[int] = list(pending_rows)
    if believed and pending_effect is not None and pending_effect.applies(believed, mean[believed]):
        mean[pending_effect.changed], std[pending_effect.changed] = pending_effect.mean, pending_effect.std
    elif believed:
        _believe(state, believed, mean, std)
    picks: list[int] = []
    available = np.zeros(mean.shape[0], dtype=bool)
    available[free] = True
    shift = None  # the tie-breaks' draws, in predictive stds (window only)
    if tie_break > 0 and acquisition == "window":
        shift = np.zeros(mean.shape[0])
        shift[available] = tie_break * rng.standard_normal(int(available.sum()))
    match = state.label_match
    prep = prepared_match(state, target, tolerance)
    for _ in range(q):
        rows = np.flatnonzero(available)
        if rows.size == 0:
            break
        centre = mean if shift is None else mean + shift * std  # where the window scores each candidate
        if match is not None and prep is not None and acquisition == "thompson":
            dist, labels = neighbour_labels(state, rows)
            draw = lm.sample(mean[rows], std[rows], dist, labels, match, rng)
            score = -np.abs(draw - target)
        elif match is not None and prep is not None:
            score = lm.log_window_prepared(
                prep, centre, std, state.gp._nbr_dist, lambda r: neighbour_labels(state, r)[1], match
            )[rows]
        elif acquisition == "thompson":
            draw = rng.normal(mean[rows], std[rows])
            score = -np.abs(draw - target)
        else:
            score = acq.log_probability_in_window(centre[rows], std[rows], target, tolerance)
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
    changed, m, s = believed_effect(state, rows, mean[rows])
    mean[changed], std[changed] = m, s


def believed_effect(
    state: NeighbourState, rows: Sequence[int], believed_mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(changed, mean, std)``: the candidates whose prediction changes when pool ``rows`` are
    observed at ``believed_mean`` (a "kriging believer"), and their new mean and std."""
    rows = list(rows)
    pts = state.pool_points[rows]
    res = (np.asarray(believed_mean, dtype=np.float64) - state.pool_prior[rows]) / state.scale(rows)
    changed, m, s = state.gp.preview_add(pts, res)
    scale = state.scale(changed)
    return changed, state.pool_prior[changed] + scale * m, scale * s


def calibration(state: NeighbourState, rows: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Share of ``values`` at pool ``rows`` inside the central 68 % and 95 % predictive intervals
    (of the label-match mixture when there is one: by its probability integral transform)."""
    mean, std = predictive(state)
    values = np.asarray(values, dtype=np.float64)
    if state.label_match is not None:
        dist, labels = neighbour_labels(state, rows)
        u = lm.cdf(values, mean[rows], std[rows], dist, labels, state.label_match)
        within = np.abs(u - 0.5)
        c68, c95 = float(np.mean(within <= 0.34)), float(np.mean(within <= 0.475))
    else:
        z = np.abs(values - mean[rows]) / std[rows]
        c68, c95 = float(np.mean(z <= 1.0)), float(np.mean(z <= 1.96))
    return {
        "coverage_68": c68,
        "coverage_95": c95,
        "mae": float(np.mean(np.abs(np.asarray(values) - mean[rows]))),
        "n": int(len(rows)),
    }


def reported_predictive(state: NeighbourState, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the value of every candidate (or of pool ``rows``) as the
    search sees it: the label-match mixture's moments when there is one, else the local GP's."""
    mean, std = predictive(state, rows)
    if state.label_match is None:
        return mean, std
    dist, labels = neighbour_labels(state, rows)
    return lm.moments(mean, std, dist, labels, state.label_match)


def window_scores(state: NeighbourState, target: float, tolerance: float, rows: np.ndarray | None = None) -> np.ndarray:
    """log P(|value - target| <= tolerance) for every pool candidate (or for ``rows``): what
    ``window`` maximises."""
    mean, std = predictive(state, rows)
    if state.label_match is None:
        return acq.log_probability_in_window(mean, std, target, tolerance)
    dist, labels = neighbour_labels(state, rows)
    return lm.log_window_probability(mean, std, dist, labels, state.label_match, target, tolerance)


def window_calibration(
    state: NeighbourState,
    rows: np.ndarray,
    values: np.ndarray,
    targets: Sequence[float],
    tolerance: float,
    top: int = 20,
) -> dict[str, float]:
    """Predicted against observed hits of ``target ± tolerance`` among pool ``rows``, summed over
    ``targets``: over all the rows, and over each target's ``top`` rows by window probability.

    Why: the window acquisition reads these probabilities, not interval widths, and what it
    reads matters most at the top of its ordering; a ratio near 1 there means its bets are
    priced right."""
    rows = np.asarray(rows)
    values = np.asarray(values, dtype=np.float64)
    pred_all = obs_all = pred_top = obs_top = 0.0
    for t in targets:
        p = np.exp(window_scores(state, float(t), tolerance, rows))
        hit = np.abs(values - t) <= tolerance + 1e-12
        best = np.argsort(-p, kind="stable")[:top]
        pred_all += float(p.sum())
        obs_all += float(hit.sum())
        pred_top += float(p[best].sum())
        obs_top += float(hit[best].sum())
    return {"predicted_hits": pred_all, "observed_hits": obs_all, "predicted_top": pred_top, "observed_top": obs_top}


# --------------------------------------------------------------------------- on-disk state
# A campaign driven from the command line starts a new process for every `ask`; rebuilding the
# model (projection, hyper-parameter fit, every candidate's neighbour list among tens of
# thousands of known crystals) costs seconds to minutes for large pools. The state is saved as
# plain arrays (no pickle: a campaign folder may come from someone else) under a key that names
# its inputs, and reloaded only when the key matches.

# 4: + the told values; 3: + the label match; 2: two memory-mapped array files (base + state); 1: one .npz
STATE_FORMAT = 4


def state_key(
    settings: NeighbourSettings,
    embedding: np.ndarray,
    prior: np.ndarray | None,
    prior_std: np.ndarray | None,
    known: KnownData | None,
) -> str:
    """Hash of everything the fitted model depends on except the campaign's observations.

    Every `campaign ask` pays this over the whole embedding (1 GB for 10^6 candidates), so the
    arrays are hashed in place (no ``tobytes`` copy), in parallel blocks, with SHA-1, which runs
    2-3x faster here than BLAKE2b; the key detects changed inputs, it guards nothing against an
    adversary."""
    import hashlib

    h = hashlib.sha1(usedforsecurity=False)
    h.update(f"{STATE_FORMAT}|{settings}".encode())
    for arr in (embedding, prior, prior_std):
        hash_array(h, arr)
    if known is not None and len(known):
        for arr in (known.embedding, known.values, known.prior_mean, known.prior_std):
            hash_array(h, arr)
        h.update("\x1f".join(known.ids).encode())
        h.update(b"same" if known.same_quantity else b"other")
    return h.hexdigest()


def base_path(path) -> Path:
    """The file beside ``path`` that holds the arrays fixed when the model is built."""
    path = Path(path)
    return path.with_name(f"{path.stem}_base{path.suffix}")


@dataclass(frozen=True)
class Seal:
    """What a campaign records of the state files it wrote: the inputs' key and both files'
    content digests. A state file is used only when it matches the seal of the campaign reading
    it, so a campaign re-created in the same folder never reads the previous one's model.

    ``state_stamp`` / ``base_stamp``: each file's :func:`~screening.io.file_digest.file_stamp`
    when its digest was last known to hold. Why: hashing both files (680 MiB at 10^6 candidates)
    cost every ``ask``; a file whose stamp is unchanged has not been written since, and only a
    file with another stamp (edited, replaced, copied in) is hashed again.

    ``finite``: :func:`save_state` found every float array of both files finite before writing
    them. Why: scanning the 690 MiB of a 10^6-candidate model for NaN and infinity cost every
    ``ask`` 0.1-0.16 s and half a GiB of memory, although the file had not changed since this code
    wrote it; :func:`load_checked` skips that scan only for files whose stamps both equal the ones
    recorded here (the very bytes that were checked), and scans any other file in full."""

    key: str
    state: str
    base: str
    state_stamp: list[int] | None = None
    base_stamp: list[int] | None = None
    finite: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "state": self.state, "base": self.base}
        if self.state_stamp is not None:
            out["state_stamp"] = list(self.state_stamp)
        if self.base_stamp is not None:
            out["base_stamp"] = list(self.base_stamp)
        if self.finite:
            out["finite"] = True
        return out

    @classmethod
    def from_dict(cls, d: object) -> Seal | None:
        if not isinstance(d, dict) or not all(isinstance(d.get(k), str) for k in ("key", "state", "base")):
            return None
        stamps = _stamp(d.get("state_stamp")), _stamp(d.get("base_stamp"))
        return cls(d["key"], d["state"], d["base"], *stamps, finite=d.get("finite") is True)

    def vouches_finite(self, state_stamp: list[int] | None, base_stamp: list[int] | None) -> bool:
        """Whether files with these stamps are the ones found finite when they were written."""
        return (
            self.finite
            and self.state_stamp is not None
            and self.base_stamp is not None
            and ([self.state_stamp, self.base_stamp] == [state_stamp, base_stamp])
        )


def _stamp(value: object) -> list[int] | None:
    """A stamp read back from JSON, or None when it is not one (a damaged seal hashes the files)."""
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def save_state(state: NeighbourState, path, key: str) -> Seal:
    """Write ``state`` to ``path`` and its build-time arrays to :func:`base_path` (array files);
    return the :class:`Seal` a campaign keeps to trust them later.

    Why two files: most of the bytes (every candidate's projected point) are fixed when the model
    is built, while an observation changes only the neighbour lists and predictions; the base
    is written once per build, so a command-line ask after a tell rewrites only the part an
    observation changes. Each file is written atomically, the base first, and the state names its
    base by a token: a crash between the two leaves a pair that does not match, which
    :func:`load_state` treats as absent (the model is rebuilt), never as a mixed model.

    The float arrays written are checked for NaN and infinity first (a base not written now was
    checked when it was written or read); the seal says whether all were finite
    (:attr:`Seal.finite`), so a later read of the unchanged files need not scan them again.
    """
    import uuid

    from screening.io.array_file import write_arrays
    from screening.io.file_digest import file_stamp

    gp = state.gp
    assert gp.params is not None and gp._cand_points is not None
    if state.base_token is None or _base_token(base_path(path), key) != state.base_token:
        token = uuid.uuid4().hex
        base = {
            "pool_points": state.pool_points,
            "pool_prior": state.pool_prior,
            "pool_scale": state.pool_scale if state.pool_scale is not None else np.zeros(0),
            "known_points": state.known_points,
            "known_res": state.known_res,
            "known_values": state.known_values,
            "proj_mean": state.projection.mean_,
            "proj_scale": state.projection.scale_,
            "proj_centre": state.projection.centre_,
            "proj_components": state.projection.components_,
            # what each new observation's neighbour search reads (neighbour_gp.nearest_np): kept,
            # so that a later command need not square every candidate again
            "pool_sq": gp.candidate_sq_norms(),
        }
        base_meta = {"format": STATE_FORMAT, "key": key, "token": token}
        state.base_finite = _not_finite(base) is None
        write_arrays(base_path(path), base, base_meta)
        state.base_token, state.base_digest = token, content_digest(base_meta, base)
        state.base_stamp = file_stamp(base_path(path))
    meta = {
        "format": STATE_FORMAT,
        "key": key,
        "base_token": state.base_token,
        "settings": _settings_tuple(state.settings),
        "params": [gp.params.local_signal, gp.params.lengthscale, gp.params.offset_signal, gp.params.noise],
        "fit_count": int(state.fit_count),
        "has_known": bool(state.has_known),
        "label_match": state.label_match.to_list() if state.label_match is not None else None,
        "match_prepared": (
            [state.match_prepared.target, state.match_prepared.tolerance] if state.match_prepared is not None else None
        ),
    }
    arrays = {
        "told_rows": np.asarray(state.told_rows, dtype=np.int64),
        "told_y": np.asarray(state.told_y, dtype=np.float64),
        "gp_points": gp._lab_points,
        "gp_res": gp._lab_res,
        "gp_nd": gp._nbr_dist,
        "gp_ni": gp._nbr_idx,
        "gp_mean": gp._pred_mean,
        "gp_var": gp._pred_var,
    }
    if state.match_prepared is not None:  # so a new process need not recompute them (~1 s at 10^6)
        arrays["match_gp_weight"] = state.match_prepared.gp_weight
        arrays["match_label_part"] = state.match_prepared.label_part
    finite = state.base_finite and _not_finite(arrays) is None
    write_arrays(path, arrays, meta)
    state_stamp = file_stamp(path)
    if state.base_digest is None:  # a state loaded without a seal: its base file, read once
        from screening.io.array_file import open_arrays

        state.base_stamp = file_stamp(base_path(path))
        state.base_digest = content_digest(*open_arrays(base_path(path)))
    return Seal(key, content_digest(meta, arrays), state.base_digest, state_stamp, state.base_stamp, finite)


def _base_token(path: Path, key: str) -> str | None:
    """The token of the base file at ``path`` when it was made from inputs ``key``, else None."""
    from screening.io.array_file import read_meta

    try:
        meta = read_meta(path)
    except (OSError, ValueError):
        return None
    if meta.get("format") != STATE_FORMAT or meta.get("key") != key:
        return None
    token = meta.get("token")
    return token if isinstance(token, str) else None


def _settings_tuple(settings: NeighbourSettings) -> list[float]:
    return [
        settings.n_neighbours,
        settings.n_components,
        settings.fit_sample,
        settings.min_labelled,
        settings.label_match_tolerance,
    ]


def save_deferred_state(cache: dict) -> None:
    """Write the state an in-process loop kept unsaved (``neighbour_defer_save`` in the cache).

    Why: a loop that asks, evaluates and tells in one process (``Campaign.run``) never reloads the
    file, so writing it at every step (tens of MiB for large pools) would be pure overhead; one
    write at the end serves the next process. A loop killed before it leaves an older file, which
    the next process extends with the observations told since.
    """
    if cache.pop("neighbour_unsaved", False):
        seal = save_state(cache["neighbour"], cache["neighbour_state_path"], cache["neighbour_key"])
        if cache.get("neighbour_seal") is not None:
            cache["neighbour_seal"].write(seal)


def load_state(path, key: str, settings: NeighbourSettings, seal: Seal | None = None) -> NeighbourState | None:
    """The state saved at ``path`` if it was made from the same inputs (``key``) and passes
    :func:`check_state`, else None (see :func:`load_checked` for why)."""
    return load_checked(path, key, settings, seal, sealed=seal is not None)[0]


def load_checked(
    path,
    key: str,
    settings: NeighbourSettings,
    seal: Seal | None,
    *,
    sealed: bool = True,
    n_pool: int | None = None,
) -> tuple[NeighbourState | None, str | None]:
    """``(state, None)`` for the state saved at ``path``, or ``(None, why)`` when it is not used.

    ``why`` is None when there is nothing to say (no file yet); otherwise one line for the user.
    With ``sealed`` (a campaign reading its own files) the files' content digests must equal
    ``seal``'s — a campaign with no seal trusts no file. The arrays are memory-mapped
    (:mod:`screening.io.array_file`): a suggestion reads only the pages it needs, the digest reads
    each once. Every state is checked for finite values and consistent shapes
    (:func:`check_state`), against a pool of ``n_pool`` candidates when the caller knows it;
    the scan for finite values is skipped only where ``seal`` vouches for both files' present
    stamps (:meth:`Seal.vouches_finite`: the bytes :func:`save_state` checked before writing).
    """
    from screening.io.array_file import open_arrays
    from screening.io.file_digest import file_stamp

    path = Path(path)
    if not path.exists():
        return None, None
    if sealed and seal is None:
        return None, f"{path.name} was not written by this campaign"
    if sealed and seal is not None and seal.key != key:
        return None, f"{path.name} was made from other inputs (pool, known data or settings)"
    try:
        # stamped before reading: a file written while it is checked has another stamp next time
        stamps = file_stamp(path), file_stamp(base_path(path))
        meta, data = open_arrays(path)
        base_meta, base = open_arrays(base_path(path))
    except (OSError, ValueError) as exc:
        return None, f"{path.name} could not be read ({exc})"
    if sealed and seal is not None:
        same_state = seal.state_stamp == stamps[0] or content_digest(meta, data) == seal.state
        if not same_state or not (seal.base_stamp == stamps[1] or content_digest(base_meta, base) == seal.base):
            return None, f"{path.name} is not what this campaign wrote (edited, copied in, or its save was interrupted)"
    if (
        meta.get("format") != STATE_FORMAT
        or meta.get("key") != key
        or meta.get("settings") != _settings_tuple(settings)
    ):
        return None, f"{path.name} was made from other inputs (pool, known data or settings)"
    if base_meta.get("key") != key or base_meta.get("token") != meta.get("base_token"):
        return None, f"{path.name} and {base_path(path).name} are from different builds"
    try:
        state = _state_from(meta, {**base, **data}, settings)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{path.name} is damaged ({exc})"
    if sealed and seal is not None:
        state.base_digest, state.base_stamp, state.state_stamp = seal.base, stamps[1], stamps[0]
    if gp_without_norms(state):  # a base written before it kept them: written again at the next save
        state.base_token = None
    vouched = sealed and seal is not None and seal.vouches_finite(*stamps)
    state.base_finite = True  # checked below, or when it was written (vouched)
    problem = check_state(state, len(state.pool_prior) if n_pool is None else n_pool, scan_finite=not vouched)
    return (None, f"{path.name}: {problem}") if problem else (state, None)


def _all_finite(a: np.ndarray) -> bool:
    """Whether every value of ``a`` is finite. A NaN or infinity makes the sum NaN or infinite, so a
    finite sum answers in one pass without a boolean temporary (the 10^6 x 64 projected pool is
    0.5 GiB); only a sum that overflowed is checked value by value."""
    if a.dtype.kind in "iub":
        return True
    if np.isfinite(np.sum(a, dtype=np.float64)):
        return True
    return bool(np.all(np.isfinite(a)))


def _not_finite(arrays: Mapping[str, np.ndarray | None]) -> str | None:
    """The name of the first of ``arrays`` that holds a NaN or an infinity, or None."""
    for name, arr in arrays.items():
        if arr is not None and np.asarray(arr).size and not _all_finite(np.asarray(arr)):
            return name
    return None


def gp_without_norms(state: NeighbourState) -> bool:
    """Whether the state's base file lacked the candidates' squared norms (``pool_sq``)."""
    return state.gp._cand_sq is None


def check_state(state: NeighbourState, n_pool: int, *, scan_finite: bool = True) -> str | None:
    """What is wrong with ``state`` for a pool of ``n_pool`` candidates, or None: every array the
    suggestions read has the pool's (or the labelled set's) length and only finite values, every
    variance is non-negative and every neighbour index points into the labelled set.

    ``scan_finite=False``: the values are known finite (files :func:`save_state` checked before
    writing them, unchanged since: :meth:`Seal.vouches_finite`); every other check still runs."""
    gp = state.gp
    n_lab = len(gp._lab_res) if gp._lab_res is not None else 0
    k = len(state.told_rows)
    per_pool = {
        "pool_points": state.pool_points,
        "pool_prior": state.pool_prior,
        "gp_mean": gp._pred_mean,
        "gp_var": gp._pred_var,
        "gp_nd": gp._nbr_dist,
        "gp_ni": gp._nbr_idx,
    }
    if state.pool_scale is not None:
        per_pool["pool_scale"] = state.pool_scale
    if gp._cand_sq is not None:
        per_pool["pool_sq"] = gp._cand_sq
    for name, arr in per_pool.items():
        if arr is None or len(arr) != n_pool:
            return f"{name} has {0 if arr is None else len(arr)} rows for {n_pool} candidates"
    finite_read = {
        **per_pool,
        "gp_res": gp._lab_res,
        "gp_points": gp._lab_points,
        "known_res": state.known_res,
        "told_y": state.told_y,
    }
    not_finite = _not_finite(finite_read) if scan_finite else None
    if not_finite is not None:
        return f"{not_finite} holds values that are not finite"
    if np.any(np.asarray(gp._pred_var) < 0) or (state.pool_scale is not None and np.any(state.pool_scale <= 0)):
        return "a variance or scale is negative"
    if len(state.told_y) != k or (k and (min(state.told_rows) < 0 or max(state.told_rows) >= n_pool)):
        return "its observations do not fit the pool"
    if np.asarray(gp._nbr_idx).size and (np.min(gp._nbr_idx) < 0 or np.max(gp._nbr_idx) >= max(n_lab, 1)):
        return "a neighbour index points outside the labelled set"
    values = [] if gp.params is None else list(gp.params.to_dict().values())
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        return "its hyper-parameters are not finite and positive"
    return None


def _state_from(meta: dict, data: dict[str, np.ndarray], settings: NeighbourSettings) -> NeighbourState:
    """The :class:`NeighbourState` whose arrays are ``data`` (base and state merged)."""
    params = [float(v) for v in meta["params"]]
    fit_count, has_known = int(meta["fit_count"]), bool(meta["has_known"])
    told_rows = [int(r) for r in data["told_rows"]]
    projection = Projection(settings.n_components)
    projection.mean_, projection.scale_ = data["proj_mean"], data["proj_scale"]
    projection.centre_, projection.components_ = data["proj_centre"], data["proj_components"]
    gp = NeighbourGP(settings.n_neighbours, settings.fit_sample, 0, settings.min_labelled)
    gp.params = NeighbourGPParams(*params)
    gp._lab_points, gp._lab_res = data["gp_points"], data["gp_res"]
    gp._cand_points = data["pool_points"]
    gp._cand_sq = data.get("pool_sq")  # absent from files written before it was kept: computed on use
    gp._nbr_dist, gp._nbr_idx = data["gp_nd"], data["gp_ni"]
    gp._pred_mean, gp._pred_var = data["gp_mean"], data["gp_var"]
    match = meta.get("label_match")
    prepared = meta.get("match_prepared")
    state = NeighbourState(
        settings,
        projection,
        gp,
        fit_count,
        data["pool_points"],
        data["pool_prior"],
        data["known_points"],
        data["known_res"],
        told_rows,
        has_known,
        data["pool_scale"] if data["pool_scale"].size else None,
        str(meta["base_token"]),
        data["known_values"],
        lm.LabelMatchParams(*[float(v) for v in match]) if match is not None else None,
    )
    state.told_y = np.asarray(data["told_y"], dtype=np.float64)
    if prepared is not None and match is not None:
        state.match_prepared = lm.Prepared(
            float(prepared[0]), float(prepared[1]), data["match_gp_weight"], data["match_label_part"]
        )
    return state
