"""Search domains: a finite pool of candidates, or a continuous box.

A *domain* answers three questions for a campaign: which points may be proposed, how a point
is turned into the feature vector the surrogate sees, and how a point is written down (a key)
so the campaign store can recognise it again after a crash.

- :class:`DiscretePool` — a finite set of candidates (e.g. crystals), each with an id and a
  feature vector (e.g. PCA coordinates of CGCNN embeddings). Candidates already evaluated or
  pending are never proposed again.
- :class:`Box` — continuous bounds (e.g. flow rates in mL/min) with optional linear inequality
  constraints such as "the first four flows sum to at most 90", Latin-hypercube designs that
  respect those constraints, and boundary expansion that is recorded, so a report can say when
  and why the search region grew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from screening.errors import MatscreenError


class DomainError(MatscreenError):
    """A point or candidate does not belong to the domain, or a domain is ill-defined."""


# --------------------------------------------------------------------------- discrete pool


class DiscretePool:
    """A finite pool of candidates with ids and feature vectors.

    ``features`` has shape (n_candidates, d): the coordinates the surrogate works in (for the
    band-gap search, PCA coordinates of CGCNN embeddings). ``prior_mean`` optionally holds one
    number per candidate that a surrogate may use as its prior mean (e.g. the CGCNN-predicted
    band gap in eV), and ``prior_std`` that prediction's own uncertainty (the network's
    per-crystal standard deviation), which the neighbour surrogate uses to scale its residuals.
    Ids must be unique strings.

    ``embedding_loader`` (with ``embedding_dim``) stands for an ``embedding`` not read yet: it is
    called, and its result checked, the first time :attr:`embedding` is read. Why: a campaign's
    later commands never need the (n, 128) embeddings of a large pool unless the search model is
    built again; reading them cost seconds per command at 10^6 candidates.
    ``content_token``: a digest that stands for every array of the pool and its known data, set
    by whoever checked them (the campaign's pool snapshot), so that what is computed from them
    (the neighbour model's key) can be remembered under it; None where nobody vouches.
    """

    def __init__(
        self,
        ids: Sequence[str],
        features: np.ndarray,
        prior_mean: np.ndarray | None = None,
        embedding: np.ndarray | None = None,
        known: Any = None,
        prior_std: np.ndarray | None = None,
        embedding_loader: Callable[[], np.ndarray] | None = None,
        embedding_dim: int | None = None,
        id_order: np.ndarray | None = None,
    ) -> None:
        ids = list(map(str, ids))  # half the time of a comprehension over 10^6 ids
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise DomainError(f"pool features must be 2-d (n, d), got shape {features.shape}")
        if len(ids) != features.shape[0]:
            raise DomainError(f"{len(ids)} ids but {features.shape[0]} feature rows")
        if not np.all(np.isfinite(features)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(features), axis=1))[0])
            raise DomainError(f"candidate {ids[bad]!r} has a non-finite feature value")
        index = _IdIndex(ids, id_order)
        if not index.unique:
            seen: set[str] = set()
            for dup in ids:  # the first id met a second time
                if dup in seen:
                    break
                seen.add(dup)
            raise DomainError(f"candidate id {dup!r} occurs more than once in the pool")
        if prior_mean is not None:
            prior_mean = np.asarray(prior_mean, dtype=np.float64).reshape(-1)
            if prior_mean.shape[0] != len(ids):
                raise DomainError("prior_mean needs one value per candidate")
            if not np.all(np.isfinite(prior_mean)):
                raise DomainError("prior_mean has non-finite values")
        if prior_std is not None:
            prior_std = np.asarray(prior_std, dtype=np.float64).reshape(-1)
            if prior_mean is None or prior_std.shape[0] != len(ids):
                raise DomainError("prior_std needs a prior_mean and one value per candidate")
            if not np.all(np.isfinite(prior_std) & (prior_std > 0)):
                bad = int(np.flatnonzero(~(np.isfinite(prior_std) & (prior_std > 0)))[0])
                raise DomainError(f"candidate {ids[bad]!r} has a prior_std that is not a positive number")
        self.ids = ids
        self.features = features
        self.prior_mean = prior_mean
        self.prior_std = prior_std
        # Full-dimensional descriptors for neighbour models (the GP's ``features`` may be PCA-3),
        # and labelled non-candidates (``screening.bo.known_fit.KnownData``) as prior knowledge.
        self._embedding = None if embedding is None else self._checked_embedding(embedding)
        self._embedding_loader = embedding_loader if embedding is None else None
        self._embedding_dim = embedding_dim
        self.known = known
        self.content_token: str | None = None
        self._index = index

    def _checked_embedding(self, embedding: np.ndarray) -> np.ndarray:
        embedding = np.asarray(embedding, dtype=np.float64)
        if embedding.ndim != 2 or embedding.shape[0] != len(self.ids):
            raise DomainError(f"embedding needs one row per candidate, got shape {embedding.shape}")
        if not np.all(np.isfinite(embedding)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(embedding), axis=1))[0])
            raise DomainError(f"candidate {self.ids[bad]!r} has a non-finite embedding value")
        return embedding

    @property
    def embedding(self) -> np.ndarray | None:
        """The full-dimensional descriptors (n, d), read through ``embedding_loader`` on first use."""
        if self._embedding is None and self._embedding_loader is not None:
            self._embedding = self._checked_embedding(self._embedding_loader())
            self._embedding_loader = None
        return self._embedding

    @property
    def embedding_dim(self) -> int:
        """Columns of :attr:`embedding` (of ``features`` without one), without reading it."""
        if self._embedding is not None:
            return int(self._embedding.shape[1])
        if self._embedding_loader is not None and self._embedding_dim is not None:
            return int(self._embedding_dim)
        embedding = self.embedding
        return int((embedding if embedding is not None else self.features).shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def bounds(self) -> np.ndarray:
        """(2, d) array of the per-feature minimum and maximum over the pool."""
        if getattr(self, "_bounds", None) is None:
            self._bounds = np.stack([self.features.min(axis=0), self.features.max(axis=0)])
        return self._bounds

    def index_of(self, candidate_id: str) -> int:
        """Row of ``candidate_id``; raises :class:`DomainError` for an unknown id."""
        row = self._index.rows([str(candidate_id)])[0]
        if row < 0:
            raise DomainError(f"unknown candidate {candidate_id!r}: not in the pool")
        return int(row)

    def indices_of(self, candidate_ids: Iterable[str]) -> np.ndarray:
        keys = [str(c) for c in candidate_ids]
        rows = self._index.rows(keys)
        if rows.size and rows.min() < 0:
            raise DomainError(f"unknown candidate {keys[int(np.argmin(rows))]!r}: not in the pool")
        return rows

    def contains(self, candidate_id: str) -> bool:
        return bool(self._index.rows([str(candidate_id)])[0] >= 0)

    def available_mask(self, excluded: Iterable[str]) -> np.ndarray:
        """Boolean mask of the candidates that may still be proposed (not in ``excluded``)."""
        mask = np.ones(len(self.ids), dtype=bool)
        rows = self._index.rows([str(c) for c in excluded])
        mask[rows[rows >= 0]] = False
        return mask

    def random_ids(self, n: int, rng: np.random.Generator, excluded: Iterable[str] = ()) -> list[str]:
        """``n`` distinct random candidates that are not excluded (a random initial design)."""
        free = np.flatnonzero(self.available_mask(excluded))
        if n > free.size:
            raise DomainError(f"asked for {n} candidates but only {free.size} remain in the pool")
        pick = rng.choice(free, size=n, replace=False)
        return [self.ids[i] for i in pick]

    def partition(self, leaf_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Leaf label of every candidate and the leaf centroids, from recursive median splits.

        Why: scoring 10^6 candidates exactly against a GP with 1,000 observations is too slow for
        an interactive campaign, so large pools are screened leaf by leaf first (each split halves
        a leaf along its widest feature, so leaves are compact and hold ~``leaf_size`` points).
        Deterministic, computed once per pool and cached.
        """
        cache = getattr(self, "_partition_cache", {})
        if leaf_size in cache:
            return cache[leaf_size]
        labels = np.empty(len(self.ids), dtype=np.int64)
        stack = [np.arange(len(self.ids))]
        leaves: list[np.ndarray] = []
        while stack:
            idx = stack.pop()
            if idx.size <= leaf_size:
                leaves.append(idx)
                continue
            sub = self.features[idx]
            dim = int(np.argmax(sub.max(axis=0) - sub.min(axis=0)))
            half = idx.size // 2
            order = np.argpartition(sub[:, dim], half)
            stack.append(idx[order[half:]])
            stack.append(idx[order[:half]])
        centroids = np.empty((len(leaves), self.dim))
        for k, idx in enumerate(leaves):
            labels[idx] = k
            centroids[k] = self.features[idx].mean(axis=0)
        cache[leaf_size] = (labels, centroids)
        self._partition_cache = cache
        return labels, centroids

    def content_hash(self) -> str:
        """SHA-256 over ids and features: identifies the pool a campaign was run on."""
        h = hashlib.sha256()
        h.update("\n".join(self.ids).encode())
        h.update(np.ascontiguousarray(self.features).tobytes())
        return h.hexdigest()


class _IdIndex:
    """Row of each candidate id, for a pool's ids: by binary search where the ids' sort order is
    given (``order``, an argsort kept by the campaign's pool snapshot), else a hash table in
    pandas' C code.

    Why not a dict: building a dict of 10^6 ids cost 0.3-1 s in every campaign command (twice
    what pandas' table costs), and a command looks up a few ids (the told and pending ones).
    Why the order: hashing 10^6 ids still cost 0.16 s per command; with the order, checking it
    (the ids it lists strictly increase, hence are unique and a permutation) costs 0.03 s. An
    order that fails that check is not used: the ids are hashed."""

    def __init__(self, ids: list[str], order: np.ndarray | None = None) -> None:
        self._table: Any = None
        self._sorted: np.ndarray | None = None
        self._order: np.ndarray | None = None
        listed = _listed_in_order(ids, order) if order is not None else None
        if listed is not None:
            self._order, self._sorted = np.asarray(order, dtype=np.int64), listed
            return
        import pandas as pd  # here: `campaign status` imports this module without building a pool

        self._table = pd.Index(np.array(ids, dtype=object))

    @property
    def unique(self) -> bool:
        return self._sorted is not None or bool(self._table.is_unique)

    def rows(self, keys: list[str]) -> np.ndarray:
        """The row of each key; -1 where the pool has no such id."""
        if not keys:
            return np.zeros(0, dtype=np.int64)
        wanted = np.array(keys, dtype=object)
        if self._sorted is None or self._order is None:
            return np.asarray(self._table.get_indexer(wanted), dtype=np.int64)
        if not len(self._sorted):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
        return np.where(self._sorted[at] == wanted, self._order[at], -1).astype(np.int64)


def _listed_in_order(ids: list[str], order: np.ndarray) -> np.ndarray | None:
    """``ids`` in ``order`` (an object array) where ``order`` lists every row once, in strictly
    increasing order of id; else None."""
    order = np.asarray(order)
    if order.shape != (len(ids),) or order.dtype.kind not in "iu":
        return None
    if len(ids) and (int(order.min()) < 0 or int(order.max()) >= len(ids)):
        return None
    listed = np.asarray(ids, dtype=object)[order]
    return listed if bool(np.all(listed[1:] > listed[:-1])) else None


# --------------------------------------------------------------------------- continuous box


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficients[k] * x[indices[k]]) <= rhs`` — e.g. total flow <= 90 mL/min."""

    indices: tuple[int, ...]
    coefficients: tuple[float, ...]
    rhs: float

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.coefficients):
            raise DomainError("a linear constraint needs one coefficient per index")

    @classmethod
    def sum_at_most(cls, indices: Sequence[int], total: float) -> LinearConstraint:
        """The common case: the inputs at ``indices`` sum to at most ``total``."""
        return cls(tuple(int(i) for i in indices), tuple(1.0 for _ in indices), float(total))

    def slack(self, X: np.ndarray) -> np.ndarray:
        """rhs - lhs for each row of X; >= 0 where the constraint holds."""
        X = np.atleast_2d(X)
        lhs = X[:, list(self.indices)] @ np.asarray(self.coefficients, dtype=np.float64)
        return self.rhs - lhs


@dataclass(frozen=True)
class BoundaryExpansion:
    """One recorded widening of a Box bound: which input, which side, from what to what, why."""

    dim: int
    side: str  # "lower" or "upper"
    old: float
    new: float
    reason: str


@dataclass(frozen=True)
class Box:
    """A continuous search box ``lower <= x <= upper`` with optional linear constraints.

    Units are those of the objective's inputs (e.g. mL/min). ``expansions`` records every
    boundary expansion that produced this box from the original one; ``hard_lower`` /
    ``hard_upper`` are physical limits that expansion never crosses (default: unlimited).
    """

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    names: tuple[str, ...] | None = None
    constraints: tuple[LinearConstraint, ...] = ()
    hard_lower: tuple[float, ...] | None = None
    hard_upper: tuple[float, ...] | None = None
    expansions: tuple[BoundaryExpansion, ...] = field(default=())

    def __post_init__(self) -> None:
        lo = np.asarray(self.lower, dtype=np.float64)
        hi = np.asarray(self.upper, dtype=np.float64)
        if lo.ndim != 1 or lo.shape != hi.shape or lo.size == 0:
            raise DomainError("Box needs 1-d lower and upper bounds of equal length")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise DomainError("Box bounds must be finite")
        if np.any(hi <= lo):
            d = int(np.flatnonzero(hi <= lo)[0])
            raise DomainError(f"Box input {d}: upper bound {hi[d]} is not above lower bound {lo[d]}")
        if self.names is not None and len(self.names) != lo.size:
            raise DomainError("Box needs one name per input")
        for c in self.constraints:
            if any(i < 0 or i >= lo.size for i in c.indices):
                raise DomainError(f"constraint {c} refers to an input outside the box")

    @classmethod
    def from_bounds(
        cls,
        bounds: Sequence[tuple[float, float]],
        names: Sequence[str] | None = None,
        constraints: Sequence[LinearConstraint] = (),
        hard_bounds: Sequence[tuple[float, float]] | None = None,
    ) -> Box:
        """Build a Box from ``[(low, high), ...]`` pairs."""
        lo = tuple(float(b[0]) for b in bounds)
        hi = tuple(float(b[1]) for b in bounds)
        hard_lo = hard_hi = None
        if hard_bounds is not None:
            hard_lo = tuple(float(b[0]) for b in hard_bounds)
            hard_hi = tuple(float(b[1]) for b in hard_bounds)
        return cls(lo, hi, tuple(names) if names is not None else None, tuple(constraints), hard_lo, hard_hi)

    @property
    def dim(self) -> int:
        return len(self.lower)

    @property
    def bounds(self) -> np.ndarray:
        """(2, d) array: row 0 lower bounds, row 1 upper bounds."""
        return np.array([self.lower, self.upper], dtype=np.float64)

    def feasible(self, X: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        """Boolean mask: rows of X inside the bounds and satisfying every constraint."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if X.shape[1] != self.dim:
            raise DomainError(f"points have {X.shape[1]} inputs, the box has {self.dim}")
        b = self.bounds
        ok = np.all(np.isfinite(X), axis=1)
        ok &= np.all(X >= b[0] - atol, axis=1) & np.all(X <= b[1] + atol, axis=1)
        for c in self.constraints:
            ok &= c.slack(X) >= -atol
        return ok

    def to_unit(self, X: np.ndarray) -> np.ndarray:
        b = self.bounds
        return (np.asarray(X, dtype=np.float64) - b[0]) / (b[1] - b[0])

    def from_unit(self, U: np.ndarray) -> np.ndarray:
        b = self.bounds
        return b[0] + np.asarray(U, dtype=np.float64) * (b[1] - b[0])

    def latin_hypercube(self, n: int, seed: int | None = None, oversample: int = 8, max_rounds: int = 50) -> np.ndarray:
        """``n`` space-filling points that satisfy the bounds and every linear constraint.

        A plain Latin hypercube ignores constraints, so this draws scrambled LHS designs of
        ``oversample * n`` points (scipy.stats.qmc), keeps the feasible ones, and picks ``n`` of
        them by greedy max-min distance in the unit cube. Without constraints it returns one
        exact LHS of size ``n``. Raises :class:`DomainError` when the feasible region is too
        small to find ``n`` points after ``max_rounds`` draws.
        """
        if n < 1:
            raise DomainError("a design needs at least one point")
        from scipy.stats import qmc  # here: scipy.stats costs ~1 s to import, and only LHS needs it

        sampler = qmc.LatinHypercube(d=self.dim, rng=np.random.default_rng(seed))
        if not self.constraints:
            return self.from_unit(sampler.random(n))
        pool: list[np.ndarray] = []
        found = 0
        for _ in range(max_rounds):
            X = self.from_unit(sampler.random(oversample * n))
            X = X[self.feasible(X)]
            pool.append(X)
            found += X.shape[0]
            if found >= oversample * n or (found >= n and len(pool) >= 4):
                break
        feasible_points = np.concatenate(pool) if pool else np.empty((0, self.dim))
        if feasible_points.shape[0] < n:
            raise DomainError(
                f"found only {feasible_points.shape[0]} feasible points for a design of {n}: "
                "the constraints leave almost no room inside the bounds"
            )
        return feasible_points[greedy_maximin(self.to_unit(feasible_points), n)]

    def uniform(self, n: int, rng: np.random.Generator, max_rounds: int = 100) -> np.ndarray:
        """``n`` independent uniform points from the feasible region (rejection sampling)."""
        out: list[np.ndarray] = []
        count = 0
        for _ in range(max_rounds):
            X = self.from_unit(rng.random((max(2 * n, 64), self.dim)))
            X = X[self.feasible(X)]
            out.append(X)
            count += X.shape[0]
            if count >= n:
                return np.concatenate(out)[:n]
        raise DomainError("the feasible region is too small for rejection sampling")

    def expanded_at_boundary(self, X: np.ndarray, rtol: float = 0.02, fraction: float = 0.25, reason: str = "") -> Box:
        """A new Box widened on every side where a point of ``X`` lies within ``rtol`` of it.

        Why: when the best points of a campaign sit on a bound, the optimum may lie outside the
        region first chosen. Each side found at the boundary moves outwards by ``fraction`` of the
        current width, clipped to the hard limits; every move is appended to ``expansions``.
        Returns ``self`` when nothing is at a boundary (or nothing can move).
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        lo, hi = np.array(self.lower), np.array(self.upper)
        width = hi - lo
        hard_lo = np.array(self.hard_lower) if self.hard_lower is not None else np.full(self.dim, -np.inf)
        hard_hi = np.array(self.hard_upper) if self.hard_upper is not None else np.full(self.dim, np.inf)
        new_lo, new_hi = lo.copy(), hi.copy()
        moves: list[BoundaryExpansion] = []
        why = reason or "a point lies on the boundary"
        for d in range(self.dim):
            if np.any(X[:, d] <= lo[d] + rtol * width[d]):
                target = max(lo[d] - fraction * width[d], hard_lo[d])
                if target < lo[d]:
                    new_lo[d] = target
                    moves.append(BoundaryExpansion(d, "lower", float(lo[d]), float(target), why))
            if np.any(X[:, d] >= hi[d] - rtol * width[d]):
                target = min(hi[d] + fraction * width[d], hard_hi[d])
                if target > hi[d]:
                    new_hi[d] = target
                    moves.append(BoundaryExpansion(d, "upper", float(hi[d]), float(target), why))
        if not moves:
            return self
        return Box(
            tuple(float(v) for v in new_lo),
            tuple(float(v) for v in new_hi),
            self.names,
            self.constraints,
            self.hard_lower,
            self.hard_upper,
            self.expansions + tuple(moves),
        )

    def key_of(self, x: Sequence[float] | np.ndarray) -> str:
        """A stable text key of a point (used by the campaign store to spot duplicates)."""
        return ",".join(repr(float(v)) for v in np.asarray(x, dtype=np.float64).reshape(-1))


def greedy_maximin(U: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` rows of ``U`` chosen greedily to maximise the minimum pairwise distance.

    Starts from the row nearest the centroid; deterministic for a given ``U``.
    """
    U = np.asarray(U, dtype=np.float64)
    if n >= U.shape[0]:
        return np.arange(U.shape[0])
    first = int(np.argmin(((U - U.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((U - U[first]) ** 2).sum(axis=1)
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((U - U[nxt]) ** 2).sum(axis=1))
    return np.asarray(chosen, dtype=np.int64)


def replace_repeats(
    points: Sequence[np.ndarray], box: Box, taken: np.ndarray, seed: int, tol: float = 1e-6
) -> list[np.ndarray]:
    """``points`` with (near-)repeats of each other or of the ``taken`` rows replaced by fresh
    feasible Latin-hypercube points of ``box``.

    Two points repeat when every coordinate agrees within ``tol`` of the box width. Why: a batch
    can return one point twice (two picks refined into the same corner, equal up to rounding, or
    a told point that still scores best), and a campaign store takes points that close to be the
    same experiment, so the second would be refused when told.
    """
    kept: list[np.ndarray] = [
        box.to_unit(np.atleast_2d(t))[0] for t in np.asarray(taken, dtype=np.float64).reshape(-1, box.dim)
    ]
    fill: list[np.ndarray] = []
    out: list[np.ndarray] = []
    draws = 0

    def repeats(u: np.ndarray) -> bool:
        return bool(kept) and bool((np.abs(np.asarray(kept) - u).max(axis=1) <= tol).any())

    for p in points:
        while repeats(box.to_unit(np.atleast_2d(p))[0]):
            if not fill:
                draws += 1
                fill = list(box.latin_hypercube(max(len(points), 2), seed=seed + draws))
            p = fill.pop()
        kept.append(box.to_unit(np.atleast_2d(p))[0])
        out.append(np.asarray(p, dtype=np.float64))
    return out


Domain = DiscretePool | Box
