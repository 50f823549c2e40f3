"""Choosing the next batch: a :class:`Strategy` applied to a domain and the data so far.

This module holds the choices (:class:`Strategy`, :data:`Target`) and the two entry points that
check them against the data and dispatch; the work is split as BoTorch splits models, acquisition
and optimisation:

- :mod:`screening.bo.fitting` — fit the GP on what the strategy models (the loss, or the property
  itself) with the hyper-parameter cache, and score candidates with the strategy's acquisition;
- :mod:`screening.bo.optimise_pool` — pick ``q`` distinct rows of a finite candidate set by local
  penalisation, sequential-greedy qLogEI or Thompson sampling, screen very large pools, and the
  nearest-neighbour surrogate's pool path;
- :mod:`screening.bo.optimise_box` — local penalisation in a box, each pick refined by a
  constrained local search.

Entry points:

- :func:`suggest_pool` — a :class:`~screening.bo.domain.DiscretePool`; evaluated and pending
  candidates are never proposed.
- :func:`suggest_box` — a :class:`~screening.bo.domain.Box` with linear constraints; candidates
  are a dense feasible random design, and each pick is refined by a constrained local search.

Everything is deterministic for a given ``seed`` and data, which is what lets a campaign resume
after a crash with the same next suggestion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from screening.bo import acquisition as acq
from screening.bo.domain import Box, DiscretePool
from screening.bo.neighbour_gp import MIN_LABELLED
from screening.bo.objective import TargetSpec
from screening.errors import MatscreenError

# Strategy.tie_break for the neighbour surrogate's window acquisition, in predictive stds.
DEFAULT_TIE_BREAK = 0.01


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
    the GP conditions on all data with the last fitted values — see
    :func:`~screening.bo.fitting.refit_size`); when free candidates x observations exceed
    ``screen_above_pairs`` the pool is screened first
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
    # Neighbour surrogate: 8 nearest labelled crystals in 64 principal components of the
    # standardised embedding. Chosen on the development pool (validation crystals, training
    # crystals known; docs/benchmarks.md): with 16 components the residual field's hyper-parameter
    # fit found no local structure (pool MAE 0.404 against the network's 0.407), with 64 it
    # found some (0.385 with 8 neighbours, 0.388 with 16); 8 neighbours fit 3x faster than 16.
    n_neighbours: int = 8
    neighbour_components: int = 64
    # Neighbour surrogate: with fewer labelled crystals (known + observed) than this, no local
    # structure is fitted and the network's ranking stands (neighbour_gp.fit_params says why).
    neighbour_min_labelled: int = MIN_LABELLED
    # Neighbour surrogate: divide residuals by the network's own per-crystal std. Off by default:
    # measured worse (docs/benchmarks.md, setting a: 0.91x vs 1.42x over the ranking) — the std's
    # heavy tails blow up the scaled residuals of the few crystals it is very sure of.
    use_prior_std: bool = False
    # Neighbour surrogate without local structure (fewer labelled crystals than
    # neighbour_min_labelled: no known data, as in settings b and d): each candidate's predictive
    # std is the network's own pred_band_gap_std (neighbour_search.predictive; calibrated when the
    # model was trained, +-1 sigma covers 68 % of the test crystals), not one std fitted to the
    # labelled residuals, which ranks by the prediction alone. Measured (docs/benchmarks.md, "The
    # network's own uncertainty without known data"): b 1.60x the ranking [0.93, 2.81] (one std:
    # 0.98x), d below random at every trial; its development twin vb 0.99x [0.71, 1.37] at the
    # same 21 targets (one std: 1.02x) and 1.64x [1.21, 2.19] at 40 (one std: 1.00x). With known
    # data nothing changes. Pools without the column: one fitted std, as before.
    trust_network_std: bool = True
    # Neighbour surrogate: a candidate's value may equal a close labelled neighbour's (label_match.py):
    # the predictive is a mixture of the local GP and sharp components at the neighbours' values,
    # fitted on the known data. On by default: on the development pool (setting v) the static
    # window ordering went from 1.79x to 2.76x the ranking (docs/benchmarks.md).
    label_match: bool = True
    # Neighbour surrogate, window acquisition: score each candidate at its mean perturbed by
    # tie_break x its predictive std x N(0, 1), drawn afresh for each suggestion from the seed, so
    # candidates whose predictions differ by far less than the model's error are taken in a seeded
    # order rather than by the last digits of the prediction, and campaigns with different seeds
    # (or prior data) make different picks. None: DEFAULT_TIE_BREAK where it applies, 0 elsewhere.
    # Chosen by measurement with one fitted std (docs/benchmarks.md, "Seeded tie-breaks"): with 100
    # priors and no known data the best |gap - t| beat random's on mean and median at every trial
    # (the deterministic order's median did not at trials 1-10), look-ups to a first hit 0.98x the
    # ranking's [0.93, 1.03] by the geometric mean (1.004x summed over targets), and with known
    # data the same look-ups as 0. Kept with the network's std (trust_network_std), which meets d
    # with it.
    tie_break: float | None = None
    # Neighbour surrogate: learn the measured scale from the campaign's own results
    # (measured_search.py): an exact GP whose mean is a learned map of the base prediction
    # (identity prior) plus a residual over map_components principal components of the embedding.
    # It decides whenever the base model has no local structure (few labels, no network
    # prediction) or the known data are another quantity (KnownData.same_quantity false).
    learn_map: bool = True
    map_components: int = 3

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

        if self.map_components < 0:
            raise StrategyError(f"map_components must be >= 0, got {self.map_components}")
        if self.tie_break is None:
            applies = self.surrogate == "neighbour" and self.acquisition == "window"
            object.__setattr__(self, "tie_break", DEFAULT_TIE_BREAK if applies else 0.0)
        assert self.tie_break is not None
        if not self.tie_break >= 0:
            raise StrategyError(f"tie_break must be >= 0, got {self.tie_break!r}")
        if self.tie_break > 0 and (self.surrogate != "neighbour" or self.acquisition != "window"):
            raise StrategyError("tie_break applies to the neighbour surrogate with acquisition 'window'")

    @property
    def learns_map(self) -> bool:
        """Whether this strategy may learn the measured scale (measured_search.py): the neighbour
        surrogate (which always models the value) with ``learn_map`` on."""
        return self.surrogate == "neighbour" and self.learn_map

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Strategy:
        # Campaigns stored before a field existed get its default, except the label match, the
        # tie-breaks, the network's std and the learned map: one made without them keeps
        # searching as it did (deterministically, from the GP alone, with one fitted std).
        # A campaign stored before the learned map keeps the base model alone.
        return cls(**({"label_match": False, "tie_break": 0.0, "trust_network_std": False, "learn_map": False} | d))


# The value model's target is the objective's own TargetSpec (one class for "2.534 ± 0.01 eV");
# ``Target`` stays as the name the strategy functions and their callers use.
Target = TargetSpec


# ------------------------------------------------------------------ dispatch


def _require_target(strategy: Strategy, target: Target | None) -> None:
    if strategy.model == "value" and target is None:
        raise StrategyError("the value model needs a target value and tolerance")


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
    # Here, not at the top: the optimisers load torch, and a GP gpytorch (~1.5 s together), which
    # building a Strategy or reading a campaign (`campaign status`) never needs.
    from screening.bo import fitting, optimise_pool

    rng = np.random.default_rng(seed)
    excluded = set(map(str, told_ids)) | set(map(str, excluded_ids)) | set(map(str, pending_ids))
    free = np.flatnonzero(pool.available_mask(excluded))
    if free.size == 0:
        raise StrategyError("the pool is exhausted: every candidate has been evaluated or is pending")
    q = min(q, free.size)
    if strategy.surrogate == "neighbour":
        if target is None:
            raise StrategyError("the neighbour surrogate needs a target value and tolerance")
        embedding = pool.embedding if pool.embedding is not None else pool.features
        if pool.known is not None and pool.known.embedding.shape[1] != embedding.shape[1]:
            raise StrategyError(
                f"known data have {pool.known.embedding.shape[1]} descriptor columns, the pool {embedding.shape[1]}"
            )
        return optimise_pool.suggest_neighbour(
            strategy,
            pool,
            told_ids=told_ids,
            told_y=told_y,
            free=free,
            q=q,
            rng=rng,
            target=target,
            pending_ids=pending_ids,
            hyper_cache=hyper_cache,
        )
    if len(told_ids) < max(strategy.n_init, 2):
        return [pool.ids[i] for i in rng.choice(free, size=q, replace=False)]
    told_rows = pool.indices_of(told_ids)
    prior_all = pool.prior_mean if strategy.use_prior else None
    if strategy.use_prior and prior_all is None:
        raise StrategyError("use_prior needs a pool with prior_mean values")
    _require_target(strategy, target)
    surrogate, _ = fitting.fit_surrogate(
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
        elif target is not None:  # as in fit_surrogate: a loss model without a target fits no prior
            prior_cov_all = np.abs(prior_all - target.target)
    best = fitting.incumbent(strategy, told_y, told_loss, target)
    if free.size * len(told_ids) > strategy.screen_above_pairs:
        free = optimise_pool.screen_candidates(
            strategy, pool, free, surrogate, prior_cov=prior_cov_all, best=best, target=target
        )
    feats = pool.features[free]
    prior_free = None if prior_cov_all is None else prior_cov_all[free]
    mean, std = surrogate.predict(feats, prior_free, include_noise=True)
    scores = fitting.acquisition_scores(strategy, mean, std, best, target)
    pend_rows = pool.indices_of([p for p in pending_ids]) if len(pending_ids) else np.empty(0, dtype=np.int64)
    pend_feats = pool.features[pend_rows] if pend_rows.size else None
    pend_prior = None if prior_cov_all is None or not pend_rows.size else prior_cov_all[pend_rows]
    if strategy.acquisition == "thompson":
        rows = optimise_pool.thompson_rows(strategy, surrogate, feats, prior_free, scores, q=q, rng=rng, target=target)
    elif strategy.batch == "qlogei" and q > 1:
        rows = optimise_pool.qlogei_rows(
            strategy,
            surrogate,
            feats,
            prior_free,
            scores,
            best=best,
            q=q,
            seed=seed,
            target=target,
            pending_feats=pend_feats,
            pending_prior=pend_prior,
        )
    elif q == 1 and pend_rows.size == 0:
        rows = [int(np.argmax(scores.log_score))]
    else:
        rows = optimise_pool.locally_penalised_rows(
            strategy,
            surrogate,
            feats,
            prior_free,
            scores,
            best=best,
            q=q,
            rng=rng,
            target=target,
            pending_feats=pend_feats,
            pending_prior=pend_prior,
        )
    return [pool.ids[free[r]] for r in rows]


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
    # Here, not at the top: they load torch and gpytorch (~1.5 s), which building a Strategy or
    # reading a campaign (`campaign status`, a pending `ask`) never needs.
    from screening.bo import fitting, optimise_box, optimise_pool

    rng = np.random.default_rng(seed)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64)) if len(X) else np.empty((0, box.dim))
    if X.shape[0] < max(strategy.n_init, 2):
        return box.latin_hypercube(q, seed=seed)
    if strategy.use_prior:
        raise StrategyError("a prior-mean covariate is only available for discrete pools")
    _require_target(strategy, target)
    surrogate, _ = fitting.fit_surrogate(strategy, box.bounds, X, told_y, told_loss, None, target, seed, hyper_cache)
    best = fitting.incumbent(strategy, told_y, told_loss, target)
    cands = np.vstack([box.uniform(strategy.box_raw_samples, rng), X])
    scores = optimise_box.box_scores(strategy, surrogate, cands, best, target)
    if strategy.acquisition == "thompson":
        rows = optimise_pool.thompson_rows(strategy, surrogate, cands, None, scores, q=q, rng=rng, target=target)
        return cands[rows]
    if strategy.batch == "qlogei" and q > 1:
        rows = optimise_pool.qlogei_rows(
            strategy, surrogate, cands, None, scores, best=best, q=q, seed=seed, target=target, pending_feats=X_pending
        )
        return cands[rows]
    return optimise_box.locally_penalised_box_batch(
        strategy, surrogate, box, cands, best=best, q=q, rng=rng, target=target, X_pending=X_pending, refine=refine
    )
