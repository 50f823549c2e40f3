"""Exact random-search baselines, for honest comparisons.

Random search over a finite pool draws candidates without replacement, so its behaviour is
known in closed form — no simulation noise in the yardstick:

- :func:`expected_draws_to_first_hit`: with ``n`` candidates of which ``k`` are hits, the
  number of draws up to and including the first hit follows the negative hypergeometric
  distribution, with mean ``(n + 1) / (k + 1)``.
- :func:`expected_best_loss_curve`: the expected best loss after 1..m random draws, optionally
  starting from a best loss already known (e.g. from prior data).
"""

from __future__ import annotations

import numpy as np


def expected_draws_to_first_hit(n_candidates: int, n_hits: int) -> float:
    """Mean draws without replacement up to and including the first hit: (n + 1) / (k + 1)."""
    if n_hits < 0 or n_candidates < n_hits:
        raise ValueError("need 0 <= hits <= candidates")
    if n_hits == 0:
        return float("inf")
    return (n_candidates + 1.0) / (n_hits + 1.0)


def probability_no_hit_within(n_candidates: int, n_hits: int, draws: np.ndarray) -> np.ndarray:
    """P(no hit among the first ``draws`` random draws) = C(n-k, m) / C(n, m)."""
    from scipy.special import gammaln  # here: scipy.special costs ~0.5 s to import, and `campaign ask` never calls this

    m = np.asarray(draws, dtype=np.float64)
    n, k = float(n_candidates), float(n_hits)
    with np.errstate(invalid="ignore"):
        log_p = gammaln(n - k + 1) - gammaln(n - k - m + 1) - gammaln(n + 1) + gammaln(n - m + 1)
    return np.where(m <= n - k, np.exp(log_p), 0.0)


def expected_best_loss_curve(losses: np.ndarray, max_draws: int, start: float = np.inf) -> np.ndarray:
    """E[min(start, best of j random draws without replacement)] for j = 1..max_draws.

    ``losses`` are the losses of the candidates still available. With the losses sorted,
    v_1 <= ... <= v_M, the best of j draws is v_i with probability
    (C(M-i+1, j) - C(M-i, j)) / C(M, j); the expectation sums min(v_i, start) over i.
    """
    v = np.sort(np.asarray(losses, dtype=np.float64))
    M = v.size
    js = np.arange(1, min(max_draws, M) + 1)
    capped = np.minimum(v, start)
    i = np.arange(1, M + 1)
    out = np.empty(js.size)
    for t, j in enumerate(js):
        # P(all j draws among the M-i+1 largest) for each i; differences give P(min = v_i).
        tail = np.exp(_log_comb(M - i + 1, int(j)) - _log_comb(M, int(j)))
        tail_next = np.concatenate([tail[1:], [0.0]])
        out[t] = float(np.sum(capped * (tail - tail_next)))
    return out


def _log_comb(n: np.ndarray | int, k: int) -> np.ndarray:
    from scipy.special import gammaln

    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        val = gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
    return np.where(n >= k, val, -np.inf)
