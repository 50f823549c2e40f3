"""Acquisition functions: pure functions from posterior marginals to scores.

Convention: every function returns a score where **higher is better**. Functions named
``log_*`` return the natural log of a positive score; local penalisation multiplies positive
scores, i.e. adds logs, so the batch machinery works in log space throughout.

Two ways to search for a target value ``t`` (e.g. a band gap of 2.534 eV):

1. *loss model* (the seed's way): the GP models the loss ``|y - t|`` directly and we minimise
   it with EI / UCB / PI / Thompson sampling;
2. *value model*: the GP models ``y`` itself and scores a candidate by the posterior
   probability that ``y`` lands inside ``[t - tol, t + tol]`` (:func:`log_probability_in_window`)
   or by the expected improvement of the folded distance ``|y - t|``
   (:func:`folded_expected_improvement`).

Local penalisation (González, Dai, Hennig & Lawrence, AISTATS 2016) turns any positive
acquisition into a batch of distinct points: after picking ``x_j`` the score elsewhere is
multiplied by the probability that ``x`` lies outside the ball around ``x_j`` that cannot hold
the minimum, given a Lipschitz constant ``L`` of the modelled function.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erfcx, log_ndtr, ndtr

SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# Acquisitions by model: which make sense when the GP models the loss, which when it models y.
LOSS_ACQUISITIONS = ("logei", "ei", "ucb", "pi", "thompson")
VALUE_ACQUISITIONS = ("window", "folded-ei", "thompson")


def _safe_std(std: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(std, dtype=np.float64), 1e-12)


def _log_h(z: np.ndarray) -> np.ndarray:
    """log(φ(z) + zΦ(z)), the standardised EI, stable for very negative z."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    big = z > -1.0
    zb = z[big]
    out[big] = np.log(np.exp(-0.5 * zb * zb - LOG_SQRT_2PI) + zb * ndtr(zb))
    zs = z[~big]
    log_phi = -0.5 * zs * zs - LOG_SQRT_2PI
    a = -zs
    # φ(z) + zΦ(z) = φ(z) (1 - a·M(a)), M the Mills ratio = sqrt(pi/2) erfcx(a/sqrt 2)
    inner = 1.0 - a * SQRT_HALF_PI * erfcx(a / math.sqrt(2.0))
    asym = np.log(np.maximum(1.0 / (a * a) * (1.0 - 3.0 / (a * a) + 15.0 / a**4), 1e-300))
    out[~big] = log_phi + np.where(a < 100.0, np.log(np.maximum(inner, 1e-300)), asym)
    return out


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """EI for *minimisation*: E[max(best - Y, 0)] with Y ~ N(mean, std²). Units of y."""
    s = _safe_std(std)
    z = (best - np.asarray(mean, dtype=np.float64)) / s
    return s * (np.exp(-0.5 * z * z - LOG_SQRT_2PI) + z * ndtr(z))


def log_expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """log EI for minimisation, accurate where EI underflows (far from the incumbent)."""
    s = _safe_std(std)
    z = (best - np.asarray(mean, dtype=np.float64)) / s
    return np.log(s) + _log_h(z)


def probability_of_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """P(Y < best) for minimisation."""
    return ndtr((best - np.asarray(mean, dtype=np.float64)) / _safe_std(std))


def log_probability_of_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    return log_ndtr((best - np.asarray(mean, dtype=np.float64)) / _safe_std(std))


def upper_confidence_bound(mean: np.ndarray, std: np.ndarray, beta: float) -> np.ndarray:
    """Optimistic score for minimisation: ``-(mean - sqrt(beta) * std)`` (i.e. negative LCB)."""
    return -(np.asarray(mean, dtype=np.float64) - math.sqrt(beta) * _safe_std(std))


def log_softplus(x: np.ndarray) -> np.ndarray:
    """log(softplus(x)) stable for large |x|: maps any real score to a log of a positive one."""
    x = np.asarray(x, dtype=np.float64)
    sp = np.logaddexp(0.0, x)
    return np.where(x < -30.0, x, np.log(np.maximum(sp, 1e-300)))


def log_probability_in_window(
    mean: np.ndarray, std: np.ndarray, target: float | np.ndarray, tol: float | np.ndarray
) -> np.ndarray:
    """log P(target - tol <= Y <= target + tol), Y ~ N(mean, std²); stable in both tails.
    ``target`` and ``tol`` may be one value or one per row."""
    m = np.asarray(mean, dtype=np.float64)
    s = _safe_std(std)
    a = (target - tol - m) / s
    b = (target + tol - m) / s
    # Reflect so the window sits on the left tail of the standard normal: Φ(b)-Φ(a) = Φ(-a)-Φ(-b).
    flip = a > 0
    lo = np.where(flip, -b, a)
    hi = np.where(flip, -a, b)
    log_hi = log_ndtr(hi)
    log_lo = log_ndtr(lo)
    return log_hi + np.log1p(-np.exp(np.minimum(log_lo - log_hi, -1e-300)))


def probability_in_window(mean: np.ndarray, std: np.ndarray, target: float, tol: float) -> np.ndarray:
    return np.exp(log_probability_in_window(mean, std, target, tol))


def _partial_first_moment(
    m: np.ndarray, s: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """For Z ~ N(m, s²): (P(lo <= Z <= hi), E[Z · 1{lo <= Z <= hi}])."""
    al = (lo - m) / s
    be = (hi - m) / s
    mass = ndtr(be) - ndtr(al)
    phi_a = np.exp(-0.5 * al * al - LOG_SQRT_2PI)
    phi_b = np.exp(-0.5 * be * be - LOG_SQRT_2PI)
    return mass, m * mass + s * (phi_a - phi_b)


def folded_expected_improvement(mean: np.ndarray, std: np.ndarray, target: float, best_distance: float) -> np.ndarray:
    """E[max(best_distance - |Y - target|, 0)] for Y ~ N(mean, std²), in units of y.

    The expected improvement of the folded distance to the target, in closed form: with
    Z = Y - target and b = best_distance, it is E[(b - Z) 1{0<=Z<=b}] + E[(b + Z) 1{-b<=Z<0}].
    """
    m = np.asarray(mean, dtype=np.float64) - target
    s = _safe_std(std)
    b = max(float(best_distance), 0.0)
    p1, e1 = _partial_first_moment(m, s, 0.0, b)
    p2, e2 = _partial_first_moment(m, s, -b, 0.0)
    return np.maximum(b * p1 - e1 + b * p2 + e2, 0.0)


def log_folded_expected_improvement(
    mean: np.ndarray, std: np.ndarray, target: float, best_distance: float
) -> np.ndarray:
    """log of :func:`folded_expected_improvement`; where it underflows, a monotone stand-in.

    Far from the target (many standard deviations) the closed form underflows to 0 for every
    candidate; there the score falls back to the log-EI of reaching distance b from the nearer
    window edge, which orders candidates the same way the exact value would (and sits far below
    any non-underflowing score).
    """
    val = folded_expected_improvement(mean, std, target, best_distance)
    s = _safe_std(std)
    dist = np.abs(np.asarray(mean, dtype=np.float64) - target)
    fallback = log_expected_improvement(dist, s, float(best_distance)) - 50.0
    return np.where(val > 1e-250, np.log(np.maximum(val, 1e-300)), np.minimum(fallback, -600.0))


def folded_normal_mean(mean: np.ndarray, std: np.ndarray, target: float) -> np.ndarray:
    """E|Y - target| for Y ~ N(mean, std²): the expected distance to the target."""
    m = np.asarray(mean, dtype=np.float64) - target
    s = _safe_std(std)
    return s * math.sqrt(2.0 / math.pi) * np.exp(-0.5 * (m / s) ** 2) + m * (1.0 - 2.0 * ndtr(-m / s))


def log_local_penalty(
    dist: np.ndarray, mean_at_pending: float, std_at_pending: float, lipschitz: float, best: float
) -> np.ndarray:
    """log φ(x; x_j) of local penalisation for minimisation (González et al. 2016, eq. 4).

    φ is the probability that x lies outside the ball B(x_j, r_j) with r_j = (f(x_j) - best)/L,
    f(x_j) ~ N(mean_at_pending, std_at_pending²): points closer to x_j than the distance the
    function needs to drop to ``best`` are penalised. ``dist`` = ||x - x_j|| in feature units,
    ``lipschitz`` in units of f per feature unit.
    """
    s = max(float(std_at_pending), 1e-12)
    return log_ndtr((lipschitz * np.asarray(dist, dtype=np.float64) - mean_at_pending + best) / s)


def select_locally_penalised(
    log_scores: np.ndarray,
    features: np.ndarray,
    f_mean: np.ndarray,
    f_std: np.ndarray,
    q: int,
    lipschitz: float,
    best: float,
    pending_features: np.ndarray | None = None,
    pending_mean: np.ndarray | None = None,
    pending_std: np.ndarray | None = None,
) -> list[int]:
    """Greedily pick ``q`` distinct rows that maximise the locally penalised acquisition.

    ``log_scores`` are log-acquisition values of the candidate rows; ``f_mean`` / ``f_std`` are
    the posterior of the *minimised* function at the same rows (used when a row becomes a
    pending point). Points already pending elsewhere (e.g. in the lab) are passed as
    ``pending_*`` and penalise from the start. Returns row indices in pick order.
    """
    total = np.array(log_scores, dtype=np.float64, copy=True)
    feats = np.asarray(features, dtype=np.float64)
    if pending_features is not None and len(pending_features):
        assert pending_mean is not None and pending_std is not None, "pending points come with their posterior"
        for xj, mj, sj in zip(np.atleast_2d(pending_features), pending_mean, pending_std):
            d = np.sqrt(((feats - xj) ** 2).sum(axis=1))
            total += log_local_penalty(d, float(mj), float(sj), lipschitz, best)
    picks: list[int] = []
    q = min(q, feats.shape[0])
    for _ in range(q):
        masked = total.copy()
        if picks:
            masked[picks] = -np.inf
        j = int(np.argmax(masked))
        picks.append(j)
        d = np.sqrt(((feats - feats[j]) ** 2).sum(axis=1))
        total += log_local_penalty(d, float(f_mean[j]), float(f_std[j]), lipschitz, best)
    return picks


def lipschitz_from_gradients(gradient_norms: np.ndarray) -> float:
    """Lipschitz constant for local penalisation: the largest posterior-mean gradient norm seen.

    A flat model gives ~0, which would penalise nothing; as in GPyOpt, fall back to 10 then.
    """
    L = float(np.max(gradient_norms)) if np.size(gradient_norms) else 0.0
    return L if L > 1e-7 else 10.0
