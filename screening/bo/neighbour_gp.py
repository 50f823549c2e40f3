"""Nearest-neighbour Gaussian process: every labelled crystal as prior knowledge, at any scale.

Why this model. A band-gap search over a pool of new crystals is rarely blind: the user knows
tens of thousands of labelled crystals (Materials Project), and the network's prediction ``p(x)``
is already a strong guess. What the network gets wrong is local — polymorphs and substitutional
siblings near a candidate in embedding space share its error. So the model is

    y(x) = p(x) + r(x),   r ~ GP(0, s_loc² exp(-d²/2ℓ²) + s_off²) + noise σ²

over a projection of the embedding, conditioned for each candidate on only its ``k`` nearest
labelled points (a local, Vecchia-style GP): exact at the neighbourhoods that matter, linear in
the number of candidates, and never an n³ solve over 33,000 points. The labelled set is the
known data plus every observation of the campaign, so a told miss updates its neighbours with
the same equations as a Materials Project label.

Hyper-parameters (s_loc, ℓ, s_off, σ) maximise the leave-one-out predictive likelihood of
labelled points given their own nearest neighbours: the same local predictions the search
uses, so the fitted variances are calibrated for what the acquisition reads. When a campaign
has its own observations (crystals of the pool, which the network did not train on), they take
half the weight of that fit: labels the network was trained on understate its error elsewhere.

Pure numerics: arrays in, arrays out; nothing here knows pools, files or targets.

Two implementations of the same equations. Fitting the hyper-parameters (:func:`fit_params`)
uses torch (:func:`nearest`, :func:`local_predict`), imported there; everything after the fit —
indexing candidates, adding observations, predicting from a reloaded model's arrays — is numpy
only (:func:`nearest_np`, :func:`local_predict_np`), so a command-line ``campaign ask`` that
reloads the model need not pay torch's import (over a second). Both agree to rounding (tests
compare them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from screening.errors import MatscreenError

if TYPE_CHECKING:  # torch is imported inside the functions that fit hyper-parameters
    import torch

NULL_MARGIN = 0.02  # nats per labelled point the local model must gain over the null model, at least
# Fewer labelled points than this: no local structure, the network's ranking stands (see fit_params).
MIN_LABELLED = 3000


def null_margin(n: int) -> float:
    """Leave-one-out gain (nats per labelled point) the local model must show over "no local
    structure" before it may move the network's ranking: the BIC price of its 4 hyper-parameters,
    2 ln(n) / n, and never below NULL_MARGIN.

    Why BIC: with 100 random labelled crystals and no known data, every local structure the
    likelihood found on the development pool (validation crystals) was spurious — the search
    lost to the plain ranking (0.75x with a flat 0.02 margin, 0.97x at 0.07, 1.0x at 0.1; 2 ln(100)/100
    = 0.092) — while with thousands of known crystals the gain is real and the floor applies."""
    return max(NULL_MARGIN, 2.0 * math.log(max(n, 2)) / max(n, 2))


class NeighbourGPError(MatscreenError):
    """The neighbour GP cannot be fitted or queried with the data given."""


@dataclass(frozen=True)
class NeighbourGPParams:
    """Kernel of the residual field, in units of y (eV for band gaps) and of the projection."""

    local_signal: float
    lengthscale: float
    offset_signal: float
    noise: float

    def to_vector(self) -> np.ndarray:
        return np.log([self.local_signal, self.lengthscale, self.offset_signal, self.noise])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> NeighbourGPParams:
        a = np.exp(np.clip(np.asarray(v, dtype=np.float64), -12.0, 8.0))
        return cls(float(a[0]), float(a[1]), float(a[2]), float(a[3]))

    def to_dict(self) -> dict:
        return asdict(self)


class Projection:
    """Standardise each embedding column, then PCA to ``n_components`` (fitted on a sample).

    Standardising first lets every learned feature count, whatever its scale; the PCA keeps the
    distance computations cheap (the search's default keeps 64 of the 128; with 16 the residual
    field's structure was lost on the development pool, docs/benchmarks.md).
    """

    def __init__(self, n_components: int = 16, max_rows: int = 50_000, seed: int = 0) -> None:
        self.n_components = n_components
        self.max_rows = max_rows
        self.seed = seed

    def fit(self, X: np.ndarray) -> Projection:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise NeighbourGPError(f"a projection needs at least 2 rows of features, got shape {X.shape}")
        rows = X
        if X.shape[0] > self.max_rows:
            rows = X[np.random.default_rng(self.seed).choice(X.shape[0], self.max_rows, replace=False)]
        self.mean_ = rows.mean(axis=0)
        self.scale_ = rows.std(axis=0) + 1e-9
        Z = (rows - self.mean_) / self.scale_
        k = min(self.n_components, Z.shape[0] - 1, Z.shape[1])
        _, _, vt = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
        self.centre_ = Z.mean(axis=0)
        self.components_ = vt[:k]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return (Z - self.centre_) @ self.components_.T


def nearest(
    queries: torch.Tensor, points: torch.Tensor, k: int, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances and indices of the ``k`` nearest ``points`` to each query, in row chunks (torch:
    the hyper-parameter fit's path; :func:`nearest_np` is the same for everything after it).

    ``chunk`` defaults to about 4 million distances per block, as in :func:`nearest_np`: a fixed
    4,096 rows against 33,064 known crystals made three 1 GB temporaries, and a search with known
    data peaked at 3.8 GB of memory in this fit."""
    import torch

    if chunk is None:
        chunk = int(min(max(2**22 // max(points.shape[0], 1), 16), 2**20))
    k_eff = min(k, points.shape[0])
    dists, idxs = [], []
    p2 = (points * points).sum(dim=1)
    for s in range(0, queries.shape[0], chunk):
        q = queries[s : s + chunk]
        d2 = ((q * q).sum(dim=1, keepdim=True) + p2 - 2.0 * q @ points.T).clamp_min_(0.0)
        val, idx = torch.topk(d2, k_eff, dim=1, largest=False, sorted=True)
        dists.append(val.sqrt())
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


def nearest_np(
    queries: np.ndarray,
    points: np.ndarray,
    k: int,
    chunk: int | None = None,
    queries_sq: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` in numpy: (distances, indices), ``k`` nearest ``points`` per query, nearest
    first; equal distances in index order.

    ``chunk`` (queries per block) defaults to about 4 million distances per block: with 33,064
    points a fixed 4,096 rows made 1 GB temporaries and ran 2.3x slower (8,192 queries in 64-d:
    14.4 s against 6.2 s, measured on a shared core); one new point per step keeps the pool in a block.

    A large search (a pool's index at the build) computes each block's distances as one fused
    multiply-add into a single buffer and takes the ``k`` smallest by a partial sort (torch's
    ``addmm`` and ``topk`` on the arrays, zero-copy): the numpy expression makes three block-sized
    temporaries, and 10^4 queries against 33,064 points in 64-d took 13 s where this takes 1.8 s
    (2 cores). A small one (a new observation against the pool: each ask) stays in numpy, so a
    reloaded model never imports torch.

    ``queries_sq``: the queries' squared norms, ``(queries * queries).sum(axis=1)``, when the
    caller keeps them (the pool's candidates are the queries of every new observation: at 10^6
    candidates in 64-d, squaring them again cost 0.3 s and a 0.5 GB temporary per observation).
    They are the same numbers the blocks compute, so the result is the same to the last bit."""
    k_eff = min(k, points.shape[0])
    n = queries.shape[0]
    dists = np.empty((n, k_eff), dtype=np.float64)
    idxs = np.empty((n, k_eff), dtype=np.int64)
    if k_eff == 0:
        return dists, idxs
    for s, val, idx in _blocks(queries, points, k_eff, chunk, queries_sq):
        dists[s : s + val.shape[0]], idxs[s : s + val.shape[0]] = _ordered(val, idx)
    return dists, idxs


def nearest_below(
    queries: np.ndarray, points: np.ndarray, k: int, bound: np.ndarray, queries_sq: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, distances, indices)``: the queries whose nearest point is nearer than ``bound``
    (one distance per query, strictly), and their rows of :func:`nearest_np`'s result, to the
    last bit.

    Why: a new observation changes the neighbour lists of the candidates it comes nearer than
    their k-th neighbour only (0.6-13 % of 10^6 candidates); ordering the distances of all the
    others was most of the search for it."""
    k_eff = min(k, points.shape[0])
    rows, dists, idxs = [np.zeros(0, dtype=np.int64)], [np.zeros((0, k_eff))], [np.zeros((0, k_eff), np.int64)]
    if k_eff == 0:
        return rows[0], dists[0], idxs[0]
    for s, val, idx in _blocks(queries, points, k_eff, None, queries_sq):
        near = np.flatnonzero(np.sqrt(val.min(axis=1)) < bound[s : s + val.shape[0]])
        d, i = _ordered(val[near], idx[near])
        rows.append(near + s)
        dists.append(d)
        idxs.append(i)
    return np.concatenate(rows), np.concatenate(dists), np.concatenate(idxs)


def _blocks(queries: np.ndarray, points: np.ndarray, k: int, chunk: int | None, queries_sq: np.ndarray | None):
    """Each block's ``k`` nearest (:func:`_blocks_np`, or torch's for a large search)."""
    large = queries.shape[0] * points.shape[0] >= TORCH_DISTANCES
    if chunk is None:  # torch's one buffer per block can be 4x numpy's three (128 MB)
        chunk = int(min(max((2**24 if large else 2**22) // max(points.shape[0], 1), 16), 2**20))
    if large:
        return _blocks_torch(queries, points, k, chunk)
    return _blocks_np(queries, points, k, chunk, queries_sq)


def _ordered(val: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A block's distances (nearest first, equal ones in index order) and indices."""
    order = np.lexsort((idx, val), axis=1)
    return np.sqrt(np.take_along_axis(val, order, axis=1)), np.take_along_axis(idx, order, axis=1)


TORCH_DISTANCES = 1 << 24  # query-point pairs from which nearest_np computes in torch


def squared_norms(x: np.ndarray, rows: int = 65536) -> np.ndarray:
    """Each row's squared norm, summed as :func:`nearest_np`'s blocks sum it, ``rows`` rows at a
    time (a row's sum does not depend on the block: no (n, d) temporary, 0.5 GiB at 10^6 x 64)."""
    out = np.empty(x.shape[0], dtype=np.result_type(x.dtype, np.float64))
    for s in range(0, x.shape[0], rows):
        q = x[s : s + rows]
        out[s : s + rows] = (q * q).sum(axis=1)
    return out


def _blocks_np(queries: np.ndarray, points: np.ndarray, k: int, chunk: int, queries_sq: np.ndarray | None = None):
    """(start, squared distances, indices) of each block's ``k`` nearest, unordered (numpy)."""
    p2 = squared_norms(points)
    for s in range(0, queries.shape[0], chunk):
        q = queries[s : s + chunk]
        q2 = squared_norms(q) if queries_sq is None else queries_sq[s : s + chunk]
        d2 = np.maximum(q2[:, None] + p2 - 2.0 * _product(q, points), 0.0)
        if k < d2.shape[1]:
            idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
        else:
            idx = np.broadcast_to(np.arange(d2.shape[1]), d2.shape)
        yield s, np.take_along_axis(d2, idx, axis=1), idx


SKINNY_POINTS = 64  # up to this many points, the queries' product with them runs on one BLAS thread


def _product(q: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``q @ points.T``; on one BLAS thread for a few points (new observations against the pool).

    Why: that product reads every candidate once and is bound by memory, not arithmetic: one
    thread does 10^6 x 64 against 2 points in 0.07-0.14 s, where OpenBLAS's two threads took
    0.4 s on this project's shared 2-core machine (other processes' load). Each row's sum is one
    thread's either way, so the result is the same to the last bit."""
    if points.shape[0] > SKINNY_POINTS:
        return q @ points.T
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    with threadpool_limits(1, user_api="blas"):
        return q @ points.T


def _blocks_torch(queries: np.ndarray, points: np.ndarray, k: int, chunk: int):
    """:func:`_blocks_np` with torch's fused ``addmm`` and ``topk`` (one buffer per block)."""
    import torch

    P = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float64))
    p2 = (P * P).sum(dim=1)
    for s in range(0, queries.shape[0], chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[s : s + chunk], dtype=np.float64))
        d2 = torch.addmm(p2, q, P.T, alpha=-2.0).add_((q * q).sum(dim=1, keepdim=True)).clamp_min_(0.0)
        v, i = torch.topk(d2, k, dim=1, largest=False, sorted=False)
        yield s, v.numpy(), i.numpy()


def local_predict(
    params: NeighbourGPParams,
    points: torch.Tensor,
    residuals: torch.Tensor,
    nbr_dist: torch.Tensor,
    nbr_idx: torch.Tensor,
    pair_d2: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of a *new observation's* residual at each query, from its neighbours.

    ``nbr_dist`` / ``nbr_idx`` (n, k) are the query's distances to and rows of its neighbours in
    ``points`` (n_labelled, d), whose residuals are ``residuals``. Batched k×k Cholesky solves
    (torch: the hyper-parameter fit's path; :func:`local_predict_np` is the same in numpy).
    ``pair_d2`` (n, k, k): the neighbours' squared distances to each other, which do not depend
    on the parameters — the fit computes them once (:func:`pair_distances`) instead of at each of
    its hundreds of evaluations.
    """
    import torch

    DTYPE = torch.float64
    s1, ell, s0, sn = params.local_signal**2, params.lengthscale, params.offset_signal**2, params.noise**2
    if nbr_idx.shape[1] == 0:
        n = nbr_idx.shape[0]
        return torch.zeros(n, dtype=DTYPE), torch.full((n,), s1 + s0 + sn, dtype=DTYPE)
    D2 = pair_distances(points, nbr_idx) if pair_d2 is None else pair_d2
    K = s1 * torch.exp(-0.5 * D2 / ell**2) + s0
    K = K + (sn + 1e-9) * torch.eye(K.shape[-1], dtype=DTYPE)
    ks = s1 * torch.exp(-0.5 * nbr_dist.pow(2) / ell**2) + s0
    L, info = torch.linalg.cholesky_ex(K)
    if bool((info != 0).any()):
        L = torch.linalg.cholesky(K + 1e-6 * (s1 + s0) * torch.eye(K.shape[-1], dtype=DTYPE))
    alpha = torch.cholesky_solve(residuals[nbr_idx].unsqueeze(-1), L).squeeze(-1)
    mean = (ks * alpha).sum(dim=-1)
    v = torch.linalg.solve_triangular(L, ks.unsqueeze(-1), upper=False).squeeze(-1)
    var = (s1 + s0 + sn - (v * v).sum(dim=-1)).clamp_min(1e-6 * sn + 1e-12)
    return mean, var


def pair_distances(points: torch.Tensor, nbr_idx: torch.Tensor) -> torch.Tensor:
    """(n, k, k) squared distances between each query's ``k`` neighbours in ``points``."""
    import torch

    X = points[nbr_idx]  # (n, k, d)
    return torch.cdist(X, X).pow(2)


def local_predict_np(
    params: NeighbourGPParams,
    points: np.ndarray,
    residuals: np.ndarray,
    nbr_dist: np.ndarray,
    nbr_idx: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_predict` in numpy: the same kernel, jitter and Cholesky factor, then the
    triangular solves by substitution over the k columns (vectorised over the queries).

    The kernel is evaluated once per distinct pair of neighbours (:func:`distinct_pairs`) and the
    queries are factored :data:`PREDICT_BLOCK` at a time. Why: the queries a result reaches share
    most of their neighbours, and the (n, k, k) squared distances and the kernel's temporaries
    built from them (236 MB each for the 115,000 candidates one pick reaches at 10^6) cost more
    than the factorisation itself. Every entry is the same expression of the same sum as before,
    so the factors, predictions and picks are the same to the last bit; as before, one failed
    factor jitters every query of the call (as torch does for its batch)."""
    s1, ell, s0, sn = params.local_signal**2, params.lengthscale, params.offset_signal**2, params.noise**2
    n, k = nbr_idx.shape
    if k == 0:
        return np.zeros(n, dtype=np.float64), np.full(n, s1 + s0 + sn, dtype=np.float64)
    which, lo, hi = distinct_pairs(nbr_idx, points.shape[0])
    pair_kernel = s1 * np.exp(-0.5 * pair_sq_distances(points, lo, hi) / ell**2) + s0
    diagonal = s1 + s0 + (sn + 1e-9)  # a point to itself: D2 = 0, so the kernel is s1 + s0
    mean, var = np.empty(n, dtype=np.float64), np.empty(n, dtype=np.float64)
    for jitter in (0.0, 1e-6 * (s1 + s0)):
        try:
            for s in range(0, n, PREDICT_BLOCK):
                block = slice(s, s + PREDICT_BLOCK)
                K = _kernel_matrices(pair_kernel[which[block]], diagonal + jitter, k)
                mean[block], var[block] = _predict_factored(
                    params, np.linalg.cholesky(K), residuals[nbr_idx[block]], nbr_dist[block]
                )
            return mean, var
        except np.linalg.LinAlgError:  # as torch: one failed factor jitters the whole batch
            if jitter:
                raise
    raise AssertionError("unreachable")


PREDICT_BLOCK = 4096  # queries factored at a time in local_predict_np (their temporaries stay in cache)


def _kernel_matrices(upper: np.ndarray, diagonal: float, k: int) -> np.ndarray:
    """(m, k, k) symmetric matrices from each row's upper-triangle values (np.triu_indices(k, 1)
    order) and one diagonal value (jitter and noise included)."""
    first, second = np.triu_indices(k, 1)
    K = np.empty((upper.shape[0], k, k), dtype=np.float64)
    K[:, first, second] = upper
    K[:, second, first] = upper
    K[:, np.arange(k), np.arange(k)] = diagonal
    return K


def _predict_factored(
    params: NeighbourGPParams, L: np.ndarray, neighbour_res: np.ndarray, nbr_dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance from the kernel's Cholesky factors ``L`` (m, k, k), the neighbours'
    residuals (m, k) and distances (m, k): :func:`local_predict_np`'s solves."""
    s1, ell, s0, sn = params.local_signal**2, params.lengthscale, params.offset_signal**2, params.noise**2
    ks = s1 * np.exp(-0.5 * nbr_dist**2 / ell**2) + s0
    # L [y, v] = [r, ks] (forward), then L^T alpha = y (backward): alpha = K^-1 r, v = L^-1 ks
    fwd = _solve_lower(L, np.stack([neighbour_res, ks], axis=-1))
    alpha = _solve_lower_transposed(L, fwd[..., 0])
    v = fwd[..., 1]
    mean = (ks * alpha).sum(axis=-1)
    var = np.maximum(s1 + s0 + sn - (v * v).sum(axis=-1), 1e-6 * sn + 1e-12)
    return mean, var


def distinct_pairs(nbr_idx: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(which, lo, hi)``: the distinct pairs of neighbours over all queries, ``lo[j] <= hi[j]``
    (rows of the points), and for each query its k(k-1)/2 pairs in ``np.triu_indices(k, 1)``
    order as positions in them, ``which`` (n, k(k-1)/2).

    Why: the queries a result reaches lie together and share most of their neighbours (89,000
    candidates reached by one pick at 10^6 held 2.5 million neighbour pairs, 340,000 of them
    distinct), so distances and kernel values are computed once per distinct pair."""
    import pandas as pd  # its hash table finds the distinct pairs in one pass (np.unique sorts)

    n, k = nbr_idx.shape
    first, second = np.triu_indices(k, 1)
    # a pair's code lo * n_points + hi in 32 bits where it fits (up to 46,340 points): half the
    # bytes to hash (33,064 known crystals and a campaign's results: 0.11 -> 0.07 s at 10^6)
    dtype = np.int32 if max(n_points, 1) ** 2 <= np.iinfo(np.int32).max else np.int64
    size = dtype(max(n_points, 1))
    idx = nbr_idx.astype(dtype)
    a, b = idx[:, first], idx[:, second]
    pair_code = np.minimum(a, b)
    np.maximum(a, b, out=b)
    pair_code *= size
    pair_code += b
    which, codes = pd.factorize(pair_code.reshape(-1))
    lo, hi = np.divmod(np.asarray(codes, dtype=np.int64), np.int64(size))
    return np.asarray(which, dtype=np.int64).reshape(n, first.shape[0]), lo, hi


def pair_sq_distances(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Squared distance between rows ``lo`` and ``hi`` of ``points``, summed one coordinate at a
    time (the order every entry was always summed in: the same bits; (a - b)^2 equals (b - a)^2)."""
    coords = np.ascontiguousarray(points.T)  # (d, n_points): one coordinate per row
    sums = np.zeros(lo.shape[0], dtype=np.float64)
    diff = np.empty_like(sums)
    for c in coords:
        np.subtract(c[lo], c[hi], out=diff)
        np.multiply(diff, diff, out=diff)
        sums += diff
    return sums


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """X with L X = B for a stack of lower-triangular L (n, k, k) and B (n, k, m)."""
    X = np.empty_like(B)
    for i in range(L.shape[-1]):
        X[:, i] = (B[:, i] - np.einsum("nj,njm->nm", L[:, i, :i], X[:, :i])) / L[:, i, i, None]
    return X


def _solve_lower_transposed(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with L^T x = b for a stack of lower-triangular L (n, k, k) and b (n, k)."""
    x = np.empty_like(b)
    for i in range(L.shape[-1] - 1, -1, -1):
        x[:, i] = (b[:, i] - np.einsum("nj,nj->n", L[:, i + 1 :, i], x[:, i + 1 :])) / L[:, i, i]
    return x


def fit_params(
    points: np.ndarray,
    residuals: np.ndarray,
    k: int,
    weights: np.ndarray | None = None,
    sample: int = 5000,
    seed: int = 0,
    start: NeighbourGPParams | None = None,
    min_labelled: int = MIN_LABELLED,
) -> NeighbourGPParams:
    """Hyper-parameters by leave-one-out predictive log-likelihood over (a sample of) labelled rows.

    Each sampled row is predicted from its ``k`` nearest *other* rows, exactly as candidates
    are; ``weights`` (one per row) say how much each row's likelihood counts.

    With fewer than ``min_labelled`` rows the answer is the null model (no local structure)
    without a fit. Why: on the development pool (validation non-metals, labelled sets drawn at
    random from the training crystals), every local structure the likelihood accepted from 320 or
    1,000 labelled crystals made the held-out MAE and NLL worse (5 of 5 fits), none was accepted
    from 3,000, and the accepted ones from 10,000 and 29,390 helped (docs/benchmarks.md). The
    network's residuals vary too little over short distances for a few hundred crystals to show
    it; the leave-one-out gain there is the optimiser fitting noise. A user with a small, dense
    set of labelled relatives can lower it (``--min-labelled``).
    """
    import torch  # here: the fit alone needs torch (and scipy.optimize), not a reloaded model
    from scipy.optimize import minimize

    P = torch.as_tensor(np.asarray(points, dtype=np.float64))
    r = torch.as_tensor(np.asarray(residuals, dtype=np.float64))
    n = P.shape[0]
    if n < 3:
        raise NeighbourGPError(f"fitting needs at least 3 labelled points, got {n}")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = np.arange(n)
    if n > sample:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False, p=w / w.sum()))
        w_rows = np.ones(rows.size)
    else:
        w_rows = w
    w_t = torch.as_tensor(w_rows / w_rows.sum())
    d_rows, i_rows = _loo_neighbours(P, rows, k)
    target = r[torch.as_tensor(rows)]
    spread = float(r.std()) if n > 1 else 1.0
    spread = spread if spread > 1e-9 else 1.0
    scale = float(d_rows[:, 0].median()) if d_rows.shape[1] else 1.0
    scale = scale if scale > 1e-9 else 1.0
    null_var = max(float(torch.sum(w_t * target**2)), 1e-12)
    if n < min_labelled:
        return _null_params(null_var, scale)

    # Bounds keep the optimiser out of flat, useless regions: an unbounded offset variance makes
    # the local mean free (and noisy); lengthscales outside the data's distance range mean nothing.
    lo = np.log([1e-3 * spread, 0.05 * scale, 1e-3 * spread, 1e-3 * spread])
    hi = np.log([10.0 * spread, 50.0 * scale, 3.0 * spread, 10.0 * spread])

    pair_d2 = pair_distances(P, i_rows)  # the same at every evaluation

    def nll(v: np.ndarray) -> float:
        penalty = float(np.sum(np.maximum(v - hi, 0.0) ** 2 + np.maximum(lo - v, 0.0) ** 2))
        mean, var = local_predict(NeighbourGPParams.from_vector(np.clip(v, lo, hi)), P, r, d_rows, i_rows, pair_d2)
        return float((w_t * (0.5 * torch.log(var) + 0.5 * (target - mean) ** 2 / var)).sum()) + 10.0 * penalty

    # The likelihood has several local optima (short-range siblings vs. a broad smooth field):
    # start from a few lengthscales, or from the previous fit when refitting a growing set.
    if start is not None:
        starts = [start.to_vector()]
    else:
        starts = [np.log([spread, f * scale, spread, 0.5 * spread]) for f in (0.7, 1.5, 4.0)]
    res = None
    with np.errstate(all="ignore"):
        for x0 in starts:
            r_ = minimize(
                nll,
                np.clip(x0, lo, hi),
                method="Nelder-Mead",
                options={"maxiter": 120 if start is not None else 300, "xatol": 1e-3, "fatol": 1e-6},
            )
            if res is None or (np.isfinite(r_.fun) and r_.fun < res.fun):
                res = r_
    assert res is not None
    x0 = np.clip(starts[0], lo, hi)
    best = res.x if np.isfinite(res.fun) else x0
    # Leave-one-out model selection against "no local structure" (residuals iid around 0): with
    # few or uninformative labels the local model only adds noise to the network's ranking.
    null_nll = 0.5 * math.log(null_var) + 0.5
    if not np.isfinite(res.fun) or res.fun > null_nll - null_margin(len(rows)):
        return _null_params(null_var, scale)
    return NeighbourGPParams.from_vector(np.clip(best, lo, hi))


def _null_params(null_var: float, scale: float) -> NeighbourGPParams:
    """The null model, no local structure: residuals iid around 0 with variance ``null_var``."""
    tiny = 1e-4 * math.sqrt(null_var)
    return NeighbourGPParams(tiny, scale, tiny, math.sqrt(null_var))


def _loo_neighbours(P: torch.Tensor, rows: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbours of ``rows`` among all of ``P``, excluding the row itself (torch: for the fit)."""
    import torch

    r = torch.as_tensor(rows)
    d, i = nearest(P[r], P, k + 1)
    return _drop_self(d, i, r.unsqueeze(1), k)


def _loo_neighbours_np(P: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_loo_neighbours` in numpy."""
    rows = np.asarray(rows, dtype=np.int64)
    d, i = nearest_np(P[rows], P, k + 1)
    return _drop_self(d, i, rows[:, None], k)


def _drop_self(d: Any, i: Any, rows_col: Any, k: int) -> tuple[Any, Any]:
    """Drop each row itself from its neighbour lists (or, with exact duplicates, the last
    neighbour) so ``k`` remain; torch tensors (the fit) or numpy arrays alike."""
    keep = i != rows_col
    keep[keep.sum(1) > k, -1] = False
    n = rows_col.shape[0]
    return d[keep].reshape(n, -1)[:, :k], i[keep].reshape(n, -1)[:, :k]


class NeighbourGP:
    """Local GP over a growing labelled set, with per-candidate neighbour lists kept up to date.

    ``fit(points, residuals)`` learns the hyper-parameters; ``index(candidates)`` finds each
    candidate's neighbours once; ``add(points, residuals)`` appends labelled points (campaign
    observations) and refreshes only the candidates whose neighbour lists they enter; then
    ``predict()`` returns every candidate's residual mean and predictive variance.

    Only the hyper-parameter fit (``fit`` without ``params``, ``refit``) imports torch; the arrays
    kept here are numpy.
    """

    def __init__(
        self, n_neighbours: int = 16, fit_sample: int = 5000, seed: int = 0, min_labelled: int = MIN_LABELLED
    ) -> None:
        self.k = n_neighbours
        self.fit_sample = fit_sample
        self.seed = seed
        self.min_labelled = min_labelled
        self.params: NeighbourGPParams | None = None
        self._lab_points = np.zeros((0, 0), dtype=np.float64)  # labelled points (n_labelled, d)
        self._lab_res = np.zeros(0, dtype=np.float64)  # their residuals
        self._cand_points: np.ndarray | None = None  # candidates (n, d), once indexed
        self._cand_sq: np.ndarray | None = None  # their squared norms (squared_norms), kept for add
        self._nbr_dist = np.zeros((0, 0), dtype=np.float64)  # each candidate's k nearest labelled
        self._nbr_idx = np.zeros((0, 0), dtype=np.int64)  # points: distances and rows
        self._pred_mean = np.zeros(0, dtype=np.float64)  # each candidate's residual mean
        self._pred_var = np.zeros(0, dtype=np.float64)  # and predictive variance

    @property
    def n_labelled(self) -> int:
        return int(self._lab_res.shape[0])

    def fit(
        self,
        points: np.ndarray,
        residuals: np.ndarray,
        weights: np.ndarray | None = None,
        params: NeighbourGPParams | None = None,
    ) -> NeighbourGP:
        """Set the labelled data; fit hyper-parameters unless ``params`` are given."""
        P = np.atleast_2d(np.asarray(points, dtype=np.float64))
        r = np.asarray(residuals, dtype=np.float64).reshape(-1)
        if P.shape[0] != r.shape[0]:
            raise NeighbourGPError(f"{P.shape[0]} labelled points but {r.shape[0]} values")
        if not np.all(np.isfinite(r)) or not np.all(np.isfinite(P)):
            raise NeighbourGPError("labelled points and values must be finite")
        self.params = (
            params
            if params is not None
            else fit_params(P, r, self.k, weights, self.fit_sample, self.seed, min_labelled=self.min_labelled)
        )
        self._lab_points = P
        self._lab_res = r
        self._cand_points = self._cand_sq = None
        return self

    def refit(self, points: np.ndarray, residuals: np.ndarray, weights: np.ndarray | None = None) -> NeighbourGPParams:
        """New hyper-parameters from (points, residuals), warm-started from the current ones;
        the labelled set and the candidates' neighbour lists stay, their predictions are redone."""
        self.params = fit_params(
            points,
            residuals,
            self.k,
            weights,
            self.fit_sample,
            self.seed,
            start=self.params,
            min_labelled=self.min_labelled,
        )
        if self._cand_points is not None:
            self._pred_mean, self._pred_var = self._predict_rows(np.arange(self._cand_points.shape[0]))
        return self.params

    def index(self, candidates: np.ndarray) -> NeighbourGP:
        """Find every candidate's nearest labelled points (the one-off cost of a large pool)."""
        self._cand_points = np.atleast_2d(np.asarray(candidates, dtype=np.float64))
        self._cand_sq = None
        n = self._cand_points.shape[0]
        if self.n_labelled:
            self._nbr_dist, self._nbr_idx = nearest_np(self._cand_points, self._lab_points, self.k)
        else:
            self._nbr_dist = np.zeros((n, 0), dtype=np.float64)
            self._nbr_idx = np.zeros((n, 0), dtype=np.int64)
        self._pred_mean, self._pred_var = self._predict_rows(np.arange(n))
        return self

    def _predict_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.params is not None
        out_m, out_v = [], []
        for s in range(0, rows.shape[0], 65536):
            r = rows[s : s + 65536]
            m, v = local_predict_np(self.params, self._lab_points, self._lab_res, self._nbr_dist[r], self._nbr_idx[r])
            out_m.append(m)
            out_v.append(v)
        if not out_m:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64)
        return np.concatenate(out_m), np.concatenate(out_v)

    def add(self, points: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """Append labelled points; returns the candidate rows whose prediction changed."""
        P = np.atleast_2d(np.asarray(points, dtype=np.float64))
        r = np.asarray(residuals, dtype=np.float64).reshape(-1)
        if P.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        base = self.n_labelled
        self._lab_points = np.concatenate([self._lab_points.reshape(base, P.shape[1]), P])
        self._lab_res = np.concatenate([self._lab_res, r])
        if self._cand_points is None:
            return np.zeros(0, dtype=np.int64)
        full = self._nbr_dist.shape[1] == self.k
        rows, d_new, i_new = self._reached(P)
        i_new = i_new + base
        nd, ni = _merge(self._nbr_dist[rows], self._nbr_idx[rows], d_new, i_new, self.k)
        if full:  # the candidates reached: merged and predicted again alone
            self._nbr_dist, self._nbr_idx = _writable(self._nbr_dist), _writable(self._nbr_idx)
            self._nbr_dist[rows], self._nbr_idx[rows] = nd, ni
        else:  # fewer labelled points than k so far: every list grows
            self._nbr_dist, self._nbr_idx = nd, ni
        if rows.size:
            m, v = self._predict_rows(rows)
            self._pred_mean, self._pred_var = _writable(self._pred_mean), _writable(self._pred_var)
            self._pred_mean[rows], self._pred_var[rows] = m, v
        return rows

    def _reached(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates whose neighbour lists new points ``P`` change, with their distances to
        and indices in ``P`` (nearest first): every candidate while the lists are not full, else
        those ``P`` comes nearer than their k-th neighbour (on a tie the stable merge keeps the
        old neighbour first, so the list does not change)."""
        assert self._cand_points is not None
        sq = self.candidate_sq_norms()
        if self._nbr_dist.shape[1] == self.k:
            return nearest_below(self._cand_points, P, self.k, self._nbr_dist[:, -1], queries_sq=sq)
        d_new, i_new = nearest_np(self._cand_points, P, self.k, queries_sq=sq)
        return np.arange(d_new.shape[0]), d_new, i_new

    def candidate_sq_norms(self) -> np.ndarray:
        """The candidates' squared norms (:func:`squared_norms`), computed once per model."""
        assert self._cand_points is not None
        if self._cand_sq is None or self._cand_sq.shape[0] != self._cand_points.shape[0]:
            self._cand_sq = squared_norms(self._cand_points)
        return self._cand_sq

    def preview_add(self, points: np.ndarray, residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What :meth:`add` would change, without changing anything: (rows, mean, std).

        Batch selection uses it to condition on pending picks at their predicted values
        ("kriging believer") without copying a large pool's neighbour lists.
        """
        P = np.atleast_2d(np.asarray(points, dtype=np.float64))
        r = np.asarray(residuals, dtype=np.float64).reshape(-1)
        if self._cand_points is None or P.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        rows, d_new, i_new = self._reached(P)
        if rows.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
        base = self.n_labelled
        points_all = np.concatenate([self._lab_points.reshape(base, P.shape[1]), P])
        res_all = np.concatenate([self._lab_res, r])
        nd, ni = _merge(self._nbr_dist[rows], self._nbr_idx[rows], d_new, i_new + base, self.k)
        assert self.params is not None
        m, v = local_predict_np(self.params, points_all, res_all, nd, ni)
        return rows, m, np.sqrt(v)

    def predict(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Residual mean and predictive standard deviation (new observation) at every candidate,
        or at candidate ``rows`` only (a report on a few rows need not copy 10^6 of them)."""
        if self._cand_points is None:
            raise NeighbourGPError("index the candidates first")
        if rows is None:
            return self._pred_mean.copy(), np.sqrt(self._pred_var)
        return self._pred_mean[rows], np.sqrt(self._pred_var[rows])

    def neighbour_distances(self) -> np.ndarray:
        """Distance of each candidate to its nearest labelled point (projection units)."""
        if self._cand_points is None:
            raise NeighbourGPError("index the candidates first")
        return self._nbr_dist[:, 0].copy() if self._nbr_dist.shape[1] else np.full(self._cand_points.shape[0], math.inf)

    def loo_predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Leave-one-out mean and std of labelled ``rows`` (for calibration reports)."""
        assert self.params is not None
        d, i = _loo_neighbours_np(self._lab_points, np.asarray(rows), self.k)
        m, v = local_predict_np(self.params, self._lab_points, self._lab_res, d, i)
        return m, np.sqrt(v)


def _merge(
    dist: np.ndarray, idx: np.ndarray, d_new: np.ndarray, i_new: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of each row's old neighbours and new points (old first on ties)."""
    d = np.concatenate([dist, d_new], axis=1)
    i = np.concatenate([idx, i_new], axis=1)
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def _writable(a: np.ndarray) -> np.ndarray:
    """``a``, or a copy of it where it cannot be written in place (a read-only view)."""
    return a if a.flags.writeable else a.copy()


@dataclass(frozen=True)
class NeighbourSettings:
    """How a neighbour model is built (:mod:`screening.bo.neighbour_search`, :mod:`screening.bo.known_fit`):
    neighbours per prediction, principal components of the embedding, the hyper-parameter fit's
    sample size, the labelled count below which no local structure is fitted."""

    n_neighbours: int = 16
    n_components: int = 16
    fit_sample: int = 5000
    min_labelled: int = MIN_LABELLED  # fewer labelled crystals: no local structure (fit_params)
    # The search tolerance the label-match mixture is fitted for (label_match.py); 0: no mixture.
    label_match_tolerance: float = 0.0
