"""The model side of a strategy: fit the GP on what it models, and turn its posterior into a score.

BoTorch keeps models apart from the optimisers that use them; so does this module. It knows the
:class:`~screening.bo.strategy.Strategy` (which quantity the GP models, which acquisition scores
it) but nothing of candidates or batches: :mod:`screening.bo.optimise_pool` and
:mod:`screening.bo.optimise_box` pick points, :mod:`screening.bo.strategy` dispatches, and
:meth:`~screening.bo.campaign.Campaign.predictive` reuses the same fit and score so an ask file
shows what the search saw.

Checks that a strategy fits its data (e.g. a value model needs a target) are made by the
dispatch in :mod:`screening.bo.strategy`, which raises :class:`~screening.bo.strategy.StrategyError`;
the functions here take consistent inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from screening.bo import acquisition as acq
from screening.bo.objective import TargetSpec
from screening.bo.strategy import Strategy

if TYPE_CHECKING:
    from screening.bo.surrogate import GPSurrogate  # gpytorch: imported where a GP is built


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


def fit_surrogate(
    strategy: Strategy,
    bounds: np.ndarray,
    X: np.ndarray,
    told_y: np.ndarray,
    told_loss: np.ndarray,
    prior: np.ndarray | None,
    target: TargetSpec | None,
    seed: int,
    hyper_cache: dict | None = None,
) -> tuple[GPSurrogate, np.ndarray | None]:
    """Fit the GP on what the strategy models; returns it and the prior covariate it used (None: no prior).

    Hyper-parameters come from a fit on the first :func:`refit_size` observations (memoised in
    ``hyper_cache`` when given), so most steps only condition on the data. ``target`` is only
    read by the loss model, whose prior covariate is the prior's distance to the target.
    """
    from screening.bo.surrogate import GPSurrogate  # gpytorch: ~1 s to import, only a GP needs it

    if strategy.model == "value":
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
class AcquisitionScores:
    """A strategy's view of candidates: the score it maximises and the posterior behind it.

    ``f_mean`` / ``f_std`` describe the minimised function (the loss, or |y - target|), which
    local penalisation needs; ``mean`` / ``std`` the modelled quantity, which Thompson's
    shortlist needs.
    """

    log_score: np.ndarray  # log acquisition, higher is better
    f_mean: np.ndarray  # posterior mean of the minimised function (loss or |y - t|)
    f_std: np.ndarray
    mean: np.ndarray  # posterior of the modelled quantity
    std: np.ndarray


def acquisition_scores(
    strategy: Strategy, mean: np.ndarray, std: np.ndarray, best: float, target: TargetSpec | None
) -> AcquisitionScores:
    """The strategy's acquisition at a posterior ``mean`` / ``std``; ``best`` from :func:`incumbent`."""
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
    return AcquisitionScores(log_score, f_mean, f_std, mean, std)


def incumbent(strategy: Strategy, told_y: np.ndarray, told_loss: np.ndarray, target: TargetSpec | None) -> float:
    """The best value of the minimised function so far: the lowest loss, or the closest |y - target|."""
    if strategy.model == "loss":
        return float(np.min(told_loss))
    assert target is not None
    return float(np.min(np.abs(np.asarray(told_y, dtype=np.float64) - target.target)))
