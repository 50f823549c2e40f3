"""Choosing the next batch: a :class:`Strategy` applied to a domain and the data so far.

This is the glue between the surrogate (which knows nothing of candidates) and the acquisition
functions (which know nothing of models): it fits the GP on what the strategy models (the loss,
or the property itself), scores the candidates, and picks ``q`` distinct points by local
penalisation, sequential-greedy qLogEI, or Thompson sampling.

- :func:`suggest_pool` — a :class:`~screening.bo.domain.DiscretePool`; evaluated and pending
  candidates are never proposed.
- :func:`suggest_box` — a :class:`~screening.bo.domain.Box` with linear constraints; candidates
  are a dense feasible random design, and each pick is refined by a constrained local search.

Everything is deterministic for a given ``seed`` and data, which is what lets a campaign resume
after a crash with the same next suggestion.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.optimize import minimize

from screening.bo import acquisition as acq
from screening.bo.domain import Box, DiscretePool
from screening.bo.surrogate import GPSurrogate
from screening.errors import MatscreenError


class StrategyError(MatscreenError):
    """A strategy is inconsistent with the objective or domain it is applied to."""


@dataclass(frozen=True)
class Strategy:
    """How a campaign chooses points.

    ``model``: "loss" fits the GP on the loss (the seed's way); "value" fits it on y and needs a
    scalar target (``TargetSpec``). ``acquisition``: for "loss" one of logei, ei, ucb, pi,
    thompson; for "value" one of window, folded-ei, thompson. ``batch``: "lp" (local
    penalisation) or "qlogei" (sequential-greedy Monte-Carlo qLogEI). ``beta`` is UCB's
    exploration weight. ``use_prior`` puts a per-candidate prior covariate (the pool's
    ``prior_mean``, e.g. the CGCNN prediction) into the GP mean as ``c + b * prior``; with
    ``fixed_prior_slope`` b stays 1 (trust the covariate, fit only its offset). ``n_init`` random (pool) or
    Latin-hypercube (box) points start a campaign that has fewer observations.

    Cost controls: hyper-parameters are re-optimised at every step below ``refit_all_below``
    observations and then each time the data grow by the factor ``refit_growth`` (in between,
    the GP conditions on all data with the last fitted values — see :func:`refit_size`); when
    free candidates x observations exceed ``screen_above_pairs`` the pool is screened first
    (posterior at the centroids of leaves of ``leaf_size`` points, first-order extrapolation to
    each candidate) and only the ``screen_keep`` best candidates are scored exactly.
    """

    model: str = "value"
    acquisition: str = "window"
    batch: str = "lp"
    beta: float = 4.0
    use_prior: bool = False
    n_init: int = 5
    shortlist: int = 1024
    box_raw_samples: int = 2048
    mc_samples: int = 256
    fixed_prior_slope: bool = False
    refit_all_below: int = 100
    refit_growth: float = 1.1
    screen_above_pairs: int = 20_000_000
    screen_keep: int = 4096
    leaf_size: int = 512
    surrogate: str = "gp"
    n_neighbours: int = 16
    neighbour_components: int = 16
    use_prior_std: bool = True  # neighbour surrogate: scale residuals by the network's own std

    def __post_init__(self) -> None:
        if self.model not in ("loss", "value"):
            raise StrategyError(f"model must be 'loss' or 'value', got {self.model!r}")
        allowed = acq.LOSS_ACQUISITIONS if self.model == "loss" else acq.VALUE_ACQUISITIONS
        if self.acquisition not in allowed:
            raise StrategyError(
                f"acquisition {self.acquisition!r} does not fit model {self.model!r}; choose one of {allowed}"
            )
        if self.batch not in ("lp", "qlogei"):
            raise StrategyError(f"batch must be 'lp' or 'qlogei', got {self.batch!r}")
        if self.beta <= 0:
            raise StrategyError("beta must be positive")
        if self.surrogate not in ("gp", "neighbour"):
            raise StrategyError(f"surrogate must be 'gp' or 'neighbour', got {self.surrogate!r}")
        if self.surrogate == "neighbour" and (self.model != "value" or self.acquisition not in ("window", "thompson")):
            raise StrategyError(
                "the neighbour surrogate models the value itself: use model 'value' with "
                "acquisition 'window' or 'thompson'"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Strategy:
        return cls(**d)  # campaigns stored before a field existed get its default


@dataclass(frozen=True)
class Target:
    """Target value and tolerance (units of y) for the value model."""

    target: float
    tolerance: float


# ------------------------------------------------------------------ shared scoring


def refit_size(n: int, all_below: int = 100, growth: float = 1.1) -> int:
    """How many of the first observations the hyper-parameters are fitted on when there are n.

    n itself below ``all_below``; beyond, the largest floor(all_below * growth**j) <= n. A pure
    function of n, so a resumed campaign reproduces the same hyper-parameters.
    """
    if n < all_below or growth <= 1.0:
        return n
    m = float(all_below)
    last = all_below
    while int(m * growth) <= n:
        m *= growth
        if int(m) > last:
            last = int(m)
    return last


def _fit(
    strategy: Strategy,
    bounds: np.ndarray,
    X: np.ndarray,
    told_y: np.ndarray,
    told_loss: np.ndarray,
    prior: np.ndarray | None,
    target: Target | None,
    seed: int,
    hyper_cache: dict | None = None,
) -> tuple[GPSurrogate, np.ndarray | None]:
    """Fit the GP on what the strategy models; returns it and the prior covariate it used (None: no prior).

    Hyper-parameters come from a fit on the first :func:`refit_size` observations (memoised in
    ``hyper_cache`` when given), so most steps only condition on the data.
    """
    if strategy.model == "value":
        if target is None:
            raise StrategyError("the value model needs a target value and tolerance")
        values = np.asarray(told_y, dtype=np.float64).reshape(-1)
        prior_cov = prior
    else:
        values = np.asarray(told_loss, dtype=np.float64).reshape(-1)
        prior_cov = None if prior is None or target is None else np.abs(prior - target.target)
    use_prior = strategy.use_prior and prior is not None
    p = prior_cov if use_prior else None
    n = values.shape[0]
    m = refit_size(n, strategy.refit_all_below, strategy.refit_growth)
    hp = None
    if m < n:
        key = (strategy.model, use_prior, m)
        if hyper_cache is not None and key in hyper_cache:
            hp = hyper_cache[key]
        else:
            head = GPSurrogate(bounds, use_prior=use_prior, fixed_prior_slope=strategy.fixed_prior_slope).fit(
                X[:m], values[:m], prior=None if p is None else p[:m], seed=seed
            )
            hp = head.hyperparameters()
            if hyper_cache is not None:
                hyper_cache[key] = hp
    surrogate = GPSurrogate(bounds, use_prior=use_prior, fixed_prior_slope=strategy.fixed_prior_slope)
    surrogate.fit(X, values, prior=p, seed=seed, hyperparameters=hp)
    if hp is None and hyper_cache is not None and m >= strategy.refit_all_below:
        hyper_cache[(strategy.model, use_prior, m)] = surrogate.hyperparameters()  # the next steps reuse this fit
    return surrogate, p


@dataclass
class _Scores:
    log_score: np.ndarray  # log acquisition, higher is better
    f_mean: np.ndarray  # posterior mean of the minimised function (loss or |y - t|)
    f_std: np.ndarray
    mean: np.ndarray  # posterior of the modelled quantity
    std: np.ndarray


def _score(strategy: Strategy, mean: np.ndarray, std: np.ndarray, best: float, target: Target | None) -> _Scores:
    a = strategy.acquisition
    if strategy.model == "loss":
        f_mean, f_std = mean, std
        if a in ("logei", "thompson"):
            log_score = acq.log_expected_improvement(mean, std, best)
        elif a == "ei":
            log_score = np.log(np.maximum(acq.expected_improvement(mean, std, best), 1e-300))
        elif a == "pi":
            log_score = acq.log_probability_of_improvement(mean, std, best)
        else:  # ucb
            log_score = acq.log_softplus(acq.upper_confidence_bound(mean, std, strategy.beta))
    else:
        assert target is not None
        f_mean, f_std = acq.folded_normal_mean(mean, std, target.target), std
        if a in ("window", "thompson"):
            log_score = acq.log_probability_in_window(mean, std, target.target, target.tolerance)
        else:  # folded-ei
            log_score = acq.log_folded_expected_improvement(mean, std, target.target, best)
    return _Scores(log_score, f_mean, f_std, mean, std)


def _best(strategy: Strategy, told_y: np.ndarray, told_loss: np.ndarray, target: Target | None) -> float:
    if strategy.model == "loss":
        return float(np.min(told_loss))
    assert target is not None
    return float(np.min(np.abs(np.asarray(told_y, dtype=np.float64) - target.target)))


def _lipschitz(
    surrogate: GPSurrogate, feats: np.ndarray, prior: np.ndarray | None, rng: np.random.Generator, n: int = 1000
) -> float:
    rows = rng.choice(feats.shape[0], size=min(n, feats.shape[0]), replace=False)
    return acq.lipschitz_from_gradients(
        surrogate.mean_gradient_norms(feats[rows], None if prior is None else prior[rows])
    )


def _thompson_rows(
    strategy: Strategy,
    surrogate: GPSurrogate,
    feats: np.ndarray,
    prior: np.ndarray | None,
    scores: _Scores,
    q: int,
    rng: np.random.Generator,
    target: Target | None,
) -> list[int]:
    """Thompson sampling: q joint posterior draws over a shortlist of plausible winners.

    The shortlist keeps the candidates whose optimistic bound (3 standard deviations) could
    still beat the others; a draw's winner outside it has negligible probability.
    """
    if strategy.model == "loss":
        optimistic = scores.mean - 3.0 * scores.std
    else:
        assert target is not None
        optimistic = np.maximum(np.abs(scores.mean - target.target) - 3.0 * scores.std, 0.0) - 1e-9 * scores.std
    k = min(strategy.shortlist, feats.shape[0])
    short = np.argsort(optimistic, kind="stable")[:k]
    samples = surrogate.sample_joint(feats[short], q, rng, None if prior is None else prior[short])
    if strategy.model == "value":
        assert target is not None
        samples = np.abs(samples - target.target)
    picks: list[int] = []
    for s in samples:
        s = s.copy()
        if picks:
            s[[int(np.flatnonzero(short == p)[0]) for p in picks]] = np.inf
        picks.append(int(short[int(np.argmin(s))]))
    return picks


def _qlogei_rows(
    strategy: Strategy,
    surrogate: GPSurrogate,
    feats: np.ndarray,
    prior: np.ndarray | None,
    scores: _Scores,
    best: float,
    q: int,
    seed: int,
    target: Target | None,
    pending_feats: np.ndarray | None,
    pending_prior: np.ndarray | None,
) -> list[int]:
    """Sequential-greedy qLogEI (BoTorch) over the top of the analytic ranking.

    Each step adds the candidate that maximises the Monte-Carlo log-EI of the batch given the
    already chosen (and externally pending) points. The objective is -loss (loss model) or
    -|y - t| (value model), both in the GP's standardised units.
    """
    from botorch.acquisition.logei import qLogExpectedImprovement
    from botorch.acquisition.objective import GenericMCObjective
    from botorch.sampling import SobolQMCNormalSampler

    k = min(strategy.shortlist, feats.shape[0])
    short = np.argsort(-scores.log_score, kind="stable")[:k]
    choices = surrogate.model_inputs(feats[short], None if prior is None else prior[short])
    ym, ys = surrogate.y_mean_, surrogate.y_std_
    if strategy.model == "loss":

        def negative_loss(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            return -(samples[..., 0] * ys + ym)

    else:
        assert target is not None
        t = target.target

        def negative_loss(samples: torch.Tensor, X: torch.Tensor | None = None) -> torch.Tensor:
            return -(samples[..., 0] * ys + ym - t).abs()

    objective = GenericMCObjective(negative_loss)
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([strategy.mc_samples]), seed=seed)
    assert surrogate.model is not None, "the surrogate was fitted before scoring"
    acqf = qLogExpectedImprovement(surrogate.model, best_f=-best, sampler=sampler, objective=objective)
    chosen: list[int] = []
    base_pending = None
    if pending_feats is not None and len(pending_feats):
        base_pending = surrogate.model_inputs(pending_feats, pending_prior)
    with torch.no_grad():
        for _ in range(min(q, k)):
            parts = [t for t in (base_pending, choices[chosen] if chosen else None) if t is not None]
            acqf.set_X_pending(torch.cat(parts) if parts else None)
            vals = torch.cat([acqf(choices[i : i + 256].unsqueeze(1)) for i in range(0, k, 256)])
            if chosen:
                vals[chosen] = -torch.inf
            chosen.append(int(torch.argmax(vals)))
    return [int(short[c]) for c in chosen]


# ------------------------------------------------------------------ discrete pools


def suggest_pool(
    strategy: Strategy,
    pool: DiscretePool,
    told_ids: Sequence[str],
    told_y: np.ndarray,
    told_loss: np.ndarray,
    q: int = 1,
    seed: int = 0,
    target: Target | None = None,
    excluded_ids: Sequence[str] = (),
    pending_ids: Sequence[str] = (),
    hyper_cache: dict | None = None,
) -> list[str]:
    """The next ``q`` candidate ids from ``pool``.

    ``told_ids`` / ``told_y`` / ``told_loss`` are the successful observations (the GP data);
    ``excluded_ids`` are never proposed (failed evaluations and everything told); ``pending_ids``
    are out for evaluation: never proposed and, in a batch, they penalise their neighbourhood.
    With fewer than ``strategy.n_init`` successful observations the picks are uniformly random.
    """
    rng = np.random.default_rng(seed)
    excluded = set(map(str, told_ids)) | set(map(str, excluded_ids)) | set(map(str, pending_ids))
    free = np.flatnonzero(pool.available_mask(excluded))
    if free.size == 0:
        raise StrategyError("the pool is exhausted: every candidate has been evaluated or is pending")
    q = min(q, free.size)
    if strategy.surrogate == "neighbour":
        return _suggest_neighbour(
            strategy, pool, told_ids, told_y, free, q, rng, seed, target, pending_ids, hyper_cache
        )
    if len(told_ids) < max(strategy.n_init, 2):
        return [pool.ids[i] for i in rng.choice(free, size=q, replace=False)]
    told_rows = pool.indices_of(told_ids)
    prior_all = pool.prior_mean if strategy.use_prior else None
    if strategy.use_prior and prior_all is None:
        raise StrategyError("use_prior needs a pool with prior_mean values")
    surrogate, _ = _fit(
        strategy,
        pool.bounds,
        pool.features[told_rows],
        told_y,
        told_loss,
        None if prior_all is None else prior_all[told_rows],
        target,
        seed,
        hyper_cache,
    )
    prior_cov_all = None
    if prior_all is not None:
        if strategy.model == "value":
            prior_cov_all = prior_all
        elif target is not None:  # as in _fit: a loss model without a target fits no prior
            prior_cov_all = np.abs(prior_all - target.target)
    best = _best(strategy, told_y, told_loss, target)
    if free.size * len(told_ids) > strategy.screen_above_pairs:
        free = _screen(strategy, pool, free, surrogate, prior_cov_all, best, target)
    feats = pool.features[free]
    prior_free = None if prior_cov_all is None else prior_cov_all[free]
    mean, std = surrogate.predict(feats, prior_free, include_noise=True)
    scores = _score(strategy, mean, std, best, target)
    pend_rows = pool.indices_of([p for p in pending_ids]) if len(pending_ids) else np.empty(0, dtype=np.int64)
    if strategy.acquisition == "thompson":
        rows = _thompson_rows(strategy, surrogate, feats, prior_free, scores, q, rng, target)
    elif strategy.batch == "qlogei" and q > 1:
        rows = _qlogei_rows(
            strategy,
            surrogate,
            feats,
            prior_free,
            scores,
            best,
            q,
            seed,
            target,
            pool.features[pend_rows] if pend_rows.size else None,
            None if prior_cov_all is None or not pend_rows.size else prior_cov_all[pend_rows],
        )
    elif q == 1 and pend_rows.size == 0:
        rows = [int(np.argmax(scores.log_score))]
    else:
        lipschitz = _lipschitz(surrogate, feats, prior_free, rng)
        pf = pm = ps = None
        if pend_rows.size:
            pm_, ps_ = surrogate.predict(
                pool.features[pend_rows],
                None if prior_cov_all is None else prior_cov_all[pend_rows],
                include_noise=True,
            )
            pscore = _score(strategy, pm_, ps_, best, target)
            pf, pm, ps = pool.features[pend_rows], pscore.f_mean, pscore.f_std
        rows = acq.select_locally_penalised(
            scores.log_score, feats, scores.f_mean, scores.f_std, q, lipschitz, best, pf, pm, ps
        )
    return [pool.ids[free[r]] for r in rows]


def _suggest_neighbour(
    strategy: Strategy,
    pool: DiscretePool,
    told_ids: Sequence[str],
    told_y: np.ndarray,
    free: np.ndarray,
    q: int,
    rng: np.random.Generator,
    seed: int,
    target: Target | None,
    pending_ids: Sequence[str],
    hyper_cache: dict | None,
) -> list[str]:
    """Pool suggestions from the nearest-neighbour GP over known data and observations."""
    from screening.bo import neighbour_search as ns

    if target is None:
        raise StrategyError("the neighbour surrogate needs a target value and tolerance")
    embedding = pool.embedding if pool.embedding is not None else pool.features
    known = pool.known
    if known is not None and known.embedding.shape[1] != embedding.shape[1]:
        raise StrategyError(
            f"known data have {known.embedding.shape[1]} descriptor columns, the pool {embedding.shape[1]}"
        )
    settings = ns.NeighbourSettings(strategy.n_neighbours, strategy.neighbour_components)
    cache = hyper_cache if hyper_cache is not None else {}
    prior_std = pool.prior_std if strategy.use_prior_std else None
    # A campaign names a file for the fitted model (`neighbour_state_path`): a new process (each
    # command-line ask) then reloads it instead of rebuilding, when it was made from the same inputs.
    state_path = cache.get("neighbour_state_path")
    key = None
    if state_path is not None:
        key = cache.get("neighbour_key") or ns.state_key(settings, embedding, pool.prior_mean, prior_std, known)
        cache["neighbour_key"] = key
        if cache.get("neighbour") is None:
            cache["neighbour"] = ns.load_state(state_path, key, settings)
    before = cache.get("neighbour")
    before_mark = None if before is None else (id(before), len(before.told_rows), before.fit_count)
    state = ns.update_state(
        cache.get("neighbour"),
        settings,
        embedding,
        pool.prior_mean,
        known,
        [int(r) for r in pool.indices_of(told_ids)],
        np.asarray(told_y, dtype=np.float64),
        seed=0,
        prior_std=prior_std,
    )  # the model is a function of the data only (resume-safe); `seed` drives the draws
    cache["neighbour"] = state
    if state_path is not None and key is not None and before_mark != (id(state), len(state.told_rows), state.fit_count):
        ns.save_state(state, state_path, key)
    pend = [int(r) for r in pool.indices_of(pending_ids)] if len(pending_ids) else []
    rows = ns.select(state, free, q, strategy.acquisition, target.target, target.tolerance, rng, pend)
    return [pool.ids[r] for r in rows]


def _screen(
    strategy: Strategy,
    pool: DiscretePool,
    free: np.ndarray,
    surrogate: GPSurrogate,
    prior_cov_all: np.ndarray | None,
    best: float,
    target: Target | None,
) -> np.ndarray:
    """The ``screen_keep`` free candidates with the best *approximate* acquisition.

    The exact posterior is computed only at the centroids of the pool's leaves
    (:meth:`DiscretePool.partition`); each candidate's mean is extrapolated to first order from
    its leaf centroid (mean + gradient · offset, plus the prior covariate's exact difference)
    and its standard deviation is taken from the centroid. The shortlist is then scored exactly
    by the caller. This trades a small risk of missing an optimum the linearisation misjudges
    for a cost that no longer grows with pool size x observations (the benchmark reports how
    often the pick differs from exhaustive scoring).
    """
    labels, centroids = pool.partition(strategy.leaf_size)
    n_leaves = centroids.shape[0]
    leaf_prior = None
    if prior_cov_all is not None:
        leaf_prior = np.bincount(labels, weights=prior_cov_all, minlength=n_leaves) / np.maximum(
            np.bincount(labels, minlength=n_leaves), 1
        )
    c_mean, c_grad = surrogate.mean_gradients(centroids, leaf_prior)
    _, c_std = surrogate.predict(centroids, leaf_prior, include_noise=True)
    lab = labels[free]
    approx_mean = c_mean[lab] + np.einsum("ij,ij->i", pool.features[free] - centroids[lab], c_grad[lab])
    if leaf_prior is not None and prior_cov_all is not None:  # leaf_prior exists only with prior_cov_all
        approx_mean += surrogate.prior_slope * (prior_cov_all[free] - leaf_prior[lab])
    approx = _score(strategy, approx_mean, c_std[lab], best, target).log_score
    keep = min(strategy.screen_keep, free.size)
    top = np.argpartition(-approx, keep - 1)[:keep]
    return np.sort(free[top])


# ------------------------------------------------------------------ continuous boxes


def _box_log_score(
    strategy: Strategy, surrogate: GPSurrogate, X: np.ndarray, best: float, target: Target | None
) -> _Scores:
    mean, std = surrogate.predict(X, include_noise=True)
    return _score(strategy, mean, std, best, target)


def _refine_in_box(fun, x0: np.ndarray, box: Box, max_iter: int = 60) -> np.ndarray:
    """Local constrained maximisation of ``fun`` (rows -> scores) from ``x0`` with SLSQP."""
    span = box.bounds[1] - box.bounds[0]

    def neg(u: np.ndarray) -> float:
        return -float(fun(box.from_unit(u.reshape(1, -1)))[0])

    cons = []
    for c in box.constraints:
        coef = np.zeros(box.dim)
        coef[list(c.indices)] = c.coefficients
        cu, off = coef * span, float(coef @ box.bounds[0])
        cons.append({"type": "ineq", "fun": lambda u, cu=cu, off=off, rhs=c.rhs: rhs - off - cu @ u})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(
            neg,
            box.to_unit(x0).reshape(-1),
            method="SLSQP",
            bounds=[(0.0, 1.0)] * box.dim,
            constraints=cons,
            options={"maxiter": max_iter, "eps": 1e-4},
        )
    cand = box.from_unit(np.clip(res.x, 0.0, 1.0)).reshape(1, -1)
    if box.feasible(cand)[0] and -res.fun >= fun(x0.reshape(1, -1))[0]:
        return cand[0]
    return np.asarray(x0, dtype=np.float64)


def _near_any(x: np.ndarray, others: list[np.ndarray], width: np.ndarray, tol: float = 1e-6) -> bool:
    """Whether ``x`` lies within ``tol`` (unit-box distance) of any of ``others``."""
    return any(float(np.sqrt((((x - o) / width) ** 2).sum())) < tol for o in others)


def suggest_box(
    strategy: Strategy,
    box: Box,
    X: np.ndarray,
    told_y: np.ndarray,
    told_loss: np.ndarray,
    q: int = 1,
    seed: int = 0,
    target: Target | None = None,
    X_pending: np.ndarray | None = None,
    refine: bool = True,
    hyper_cache: dict | None = None,
) -> np.ndarray:
    """The next ``q`` points in ``box`` (rows, in the box's units), feasible under its constraints.

    With fewer than ``strategy.n_init`` observations the points come from a constrained Latin
    hypercube. Otherwise: candidates are ``strategy.box_raw_samples`` feasible random points;
    batches use local penalisation (each pick refined by SLSQP on the penalised acquisition
    under the bounds and linear constraints) or sequential-greedy qLogEI over the candidates.
    ``X_pending`` rows are out for evaluation and penalise their neighbourhood.
    """
    rng = np.random.default_rng(seed)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64)) if len(X) else np.empty((0, box.dim))
    if X.shape[0] < max(strategy.n_init, 2):
        return box.latin_hypercube(q, seed=seed)
    if strategy.use_prior:
        raise StrategyError("a prior-mean covariate is only available for discrete pools")
    surrogate, _ = _fit(strategy, box.bounds, X, told_y, told_loss, None, target, seed, hyper_cache)
    best = _best(strategy, told_y, told_loss, target)
    cands = np.vstack([box.uniform(strategy.box_raw_samples, rng), X])
    scores = _box_log_score(strategy, surrogate, cands, best, target)
    if strategy.acquisition == "thompson":
        rows = _thompson_rows(strategy, surrogate, cands, None, scores, q, rng, target)
        return cands[rows]
    if strategy.batch == "qlogei" and q > 1:
        rows = _qlogei_rows(strategy, surrogate, cands, None, scores, best, q, seed, target, X_pending, None)
        return cands[rows]
    # Local penalisation works in unit-box coordinates: with raw units (µL/min beside %), the
    # widest input dominates every distance and the steepest narrow one the Lipschitz constant,
    # and a batch collapses onto one point.
    width = np.asarray(box.bounds[1], dtype=np.float64) - np.asarray(box.bounds[0], dtype=np.float64)
    width = np.where(width > 0, width, 1.0)
    sample = cands[rng.choice(cands.shape[0], size=min(1000, cands.shape[0]), replace=False)]
    lipschitz = acq.lipschitz_from_gradients(np.linalg.norm(surrogate.mean_gradients(sample)[1] * width, axis=1))
    pend: list[tuple[np.ndarray, float, float]] = []
    if X_pending is not None and len(X_pending):
        ps = _box_log_score(strategy, surrogate, np.atleast_2d(X_pending), best, target)
        pend = [(x, float(m), float(s)) for x, m, s in zip(np.atleast_2d(X_pending), ps.f_mean, ps.f_std)]

    def penalised(Z: np.ndarray) -> np.ndarray:
        sc = _box_log_score(strategy, surrogate, Z, best, target)
        total = sc.log_score.copy()
        for xj, mj, sj in pend:
            total += acq.log_local_penalty(np.sqrt((((Z - xj) / width) ** 2).sum(axis=1)), mj, sj, lipschitz, best)
        return total

    picks: list[np.ndarray] = []
    for _ in range(q):
        totals = penalised(cands)
        x = cands[int(np.argmax(totals))]
        if refine:
            refined = _refine_in_box(penalised, x, box)
            # two picks refined into the same corner would be one experiment told twice
            x = x if _near_any(refined, [p for p, _, _ in pend], width) else refined
        picks.append(x)
        sc = _box_log_score(strategy, surrogate, x.reshape(1, -1), best, target)
        pend.append((x, float(sc.f_mean[0]), float(sc.f_std[0])))
    return np.vstack(picks)
