"""Picking ``q`` points in a continuous box with linear constraints: the box optimisers.

The candidates are a dense feasible random design (drawn by :func:`screening.bo.suggest.suggest_box`);
:func:`box_scores` scores any rows, and :func:`locally_penalised_box_batch` picks a batch by
local penalisation, refining each pick with SLSQP under the bounds and constraints. Thompson
sampling and qLogEI over the design reuse the finite-set optimisers of
:mod:`screening.bo.optimise_pool`.

Inputs are checked by the dispatch in :mod:`screening.bo.strategy`; randomness comes only from
the ``rng`` passed in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from screening.bo import acquisition as acq
from screening.bo.domain import Box
from screening.bo.fitting import AcquisitionScores, acquisition_scores
from screening.bo.objective import TargetSpec
from screening.bo.strategy import Strategy
from screening.bo.surrogate import GPSurrogate


def box_scores(
    strategy: Strategy, surrogate: GPSurrogate, X: np.ndarray, best: float, target: TargetSpec | None
) -> AcquisitionScores:
    """The strategy's acquisition at box rows ``X`` (box units); a box has no prior covariate."""
    mean, std = surrogate.predict(X, include_noise=True)
    return acquisition_scores(strategy, mean, std, best, target)


def _refine_in_box(fun: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, box: Box, max_iter: int = 60) -> np.ndarray:
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


def locally_penalised_box_batch(
    strategy: Strategy,
    surrogate: GPSurrogate,
    box: Box,
    cands: np.ndarray,
    *,
    best: float,
    q: int,
    rng: np.random.Generator,
    target: TargetSpec | None,
    X_pending: np.ndarray | None = None,
    refine: bool = True,
) -> np.ndarray:
    """``q`` rows (box units): the best penalised candidate each time, refined by SLSQP.

    Each pick, and each ``X_pending`` row, damps the acquisition around it (local penalisation).
    """
    # Local penalisation works in unit-box coordinates: with raw units (µL/min beside %), the
    # widest input dominates every distance and the steepest narrow one the Lipschitz constant,
    # and a batch collapses onto one point.
    width = np.asarray(box.bounds[1], dtype=np.float64) - np.asarray(box.bounds[0], dtype=np.float64)
    width = np.where(width > 0, width, 1.0)
    sample = cands[rng.choice(cands.shape[0], size=min(1000, cands.shape[0]), replace=False)]
    lipschitz = acq.lipschitz_from_gradients(np.linalg.norm(surrogate.mean_gradients(sample)[1] * width, axis=1))
    pend: list[tuple[np.ndarray, float, float]] = []
    if X_pending is not None and len(X_pending):
        ps = box_scores(strategy, surrogate, np.atleast_2d(X_pending), best, target)
        pend = [(x, float(m), float(s)) for x, m, s in zip(np.atleast_2d(X_pending), ps.f_mean, ps.f_std)]

    def penalised(Z: np.ndarray) -> np.ndarray:
        sc = box_scores(strategy, surrogate, Z, best, target)
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
        sc = box_scores(strategy, surrogate, x.reshape(1, -1), best, target)
        pend.append((x, float(sc.f_mean[0]), float(sc.f_std[0])))
    return np.vstack(picks)
