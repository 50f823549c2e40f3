"""Choosing the next batch: a :class:`~screening.bo.strategy.Strategy` applied to a domain and the data so far.

The two entry points check the strategy against the data and dispatch; the work is split as
BoTorch splits models, acquisition and optimisation:

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

import numpy as np

from screening.bo.domain import Box, DiscretePool
from screening.bo.strategy import Strategy, StrategyError, Target


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
    # Here, not at the top: the GP path loads torch and gpytorch (~1.5 s together) through them,
    # which importing this module (a campaign's `ask` with the neighbour surrogate) never needs.
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
        if pool.known is not None and pool.known.embedding.shape[1] != pool.embedding_dim:
            raise StrategyError(
                f"known data have {pool.known.embedding.shape[1]} descriptor columns, the pool {pool.embedding_dim}"
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
    # Here, not at the top: optimise_box loads gpytorch and scipy.optimize (~1.5 s) when imported,
    # which a pool campaign's `ask` never needs.
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
