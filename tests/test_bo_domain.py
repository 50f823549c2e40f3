"""DiscretePool and Box: membership, exclusion, constrained Latin hypercubes, recorded expansion."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo.domain import Box, DiscretePool, DomainError, LinearConstraint, greedy_maximin


def _pool(n: int = 50) -> DiscretePool:
    rng = np.random.default_rng(0)
    return DiscretePool([f"m{i}" for i in range(n)], rng.random((n, 3)))


def test_pool_rejects_duplicate_ids_and_bad_features() -> None:
    with pytest.raises(DomainError, match="'a' occurs more than once"):
        DiscretePool(["a", "b", "a"], np.zeros((3, 2)))
    with pytest.raises(DomainError, match="non-finite"):
        DiscretePool(["a", "b"], np.array([[0.0, 1.0], [np.nan, 0.0]]))
    with pytest.raises(DomainError, match="3 ids but 2"):
        DiscretePool(["a", "b", "c"], np.zeros((2, 2)))


def test_ids_found_by_their_sort_order_are_the_rows_a_hash_finds() -> None:
    rng = np.random.default_rng(3)
    ids = [f"mp-{v}" for v in rng.permutation(5000)]
    order = np.argsort(np.array(ids, dtype=object), kind="stable")
    hashed, ordered = DiscretePool(ids, np.zeros((5000, 2))), DiscretePool(ids, np.zeros((5000, 2)), id_order=order)
    assert ordered._index._sorted is not None  # the order was used
    keys = [ids[7], ids[4999], "mp-", "zz", "mp-99999", ids[0], "", "mp-1"]
    np.testing.assert_array_equal(ordered.indices_of(keys[:1] + keys[5:6]), hashed.indices_of(keys[:1] + keys[5:6]))
    np.testing.assert_array_equal(ordered._index.rows(keys), hashed._index.rows(keys))
    assert ordered.index_of(ids[123]) == 123 and not ordered.contains("zz")
    np.testing.assert_array_equal(ordered.available_mask(keys), hashed.available_mask(keys))


@pytest.mark.parametrize("damage", ["unsorted", "repeated row", "out of range", "too short"])
def test_an_order_that_does_not_sort_the_ids_is_not_used(damage: str) -> None:
    ids = ["c", "a", "d", "b"]
    order = {
        "unsorted": np.array([0, 1, 2, 3]),
        "repeated row": np.array([1, 1, 0, 2]),
        "out of range": np.array([1, 3, 0, 4]),
        "too short": np.array([1, 3, 0]),
    }[damage]
    pool = DiscretePool(ids, np.zeros((4, 2)), id_order=order)
    assert pool._index._sorted is None  # hashed instead
    np.testing.assert_array_equal(pool.indices_of(["a", "b", "c", "d"]), [1, 3, 0, 2])
    with pytest.raises(DomainError, match="'a' occurs more than once"):  # duplicates are still refused
        DiscretePool(["a", "b", "a"], np.zeros((3, 2)), id_order=np.array([0, 2, 1]))


def test_pool_lookup_and_exclusion() -> None:
    pool = _pool()
    assert pool.index_of("m7") == 7
    with pytest.raises(DomainError, match="unknown candidate 'zz'"):
        pool.index_of("zz")
    mask = pool.available_mask(["m1", "m2", "not-there"])
    assert mask.sum() == 48 and not mask[1] and not mask[2]
    picks = pool.random_ids(48, np.random.default_rng(1), excluded=["m1", "m2"])
    assert len(set(picks)) == 48 and "m1" not in picks and "m2" not in picks
    with pytest.raises(DomainError, match="only 48 remain"):
        pool.random_ids(49, np.random.default_rng(1), excluded=["m1", "m2"])


def test_pool_hash_changes_with_content() -> None:
    a, b = _pool(), _pool()
    assert a.content_hash() == b.content_hash()
    b.features[0, 0] += 1e-9
    assert a.content_hash() != b.content_hash()


def test_lhs_without_constraints_is_a_latin_hypercube() -> None:
    box = Box.from_bounds([(0, 10), (-1, 1), (5, 6)])
    X = box.latin_hypercube(20, seed=3)
    assert X.shape == (20, 3) and box.feasible(X).all()
    strata = np.floor(box.to_unit(X) * 20).astype(int)
    for d in range(3):  # every one of the 20 strata is hit exactly once per input
        assert sorted(strata[:, d]) == list(range(20))


def test_lhs_respects_a_sum_constraint_and_spreads_out() -> None:
    # Four flows in mL/min, each 0-40, with the first four summing to at most 90.
    box = Box.from_bounds([(0, 40)] * 5, constraints=[LinearConstraint.sum_at_most([0, 1, 2, 3], 90.0)])
    X = box.latin_hypercube(30, seed=0)
    assert X.shape == (30, 5)
    assert np.all(X[:, :4].sum(axis=1) <= 90.0 + 1e-9)
    assert box.feasible(X).all()
    # Space filling: no two design points nearly coincide.
    U = box.to_unit(X)
    d = np.sqrt(((U[:, None] - U[None]) ** 2).sum(-1)) + np.eye(30) * 9
    assert d.min() > 0.1
    # Same seed, same design.
    assert np.array_equal(X, box.latin_hypercube(30, seed=0))


def test_lhs_fails_clearly_when_constraints_leave_no_room() -> None:
    box = Box.from_bounds([(0, 40)] * 4, constraints=[LinearConstraint.sum_at_most([0, 1, 2, 3], 0.01)])
    with pytest.raises(DomainError, match="feasible points"):
        box.latin_hypercube(20, seed=0, max_rounds=3)


def test_box_validation() -> None:
    with pytest.raises(DomainError, match="upper bound"):
        Box.from_bounds([(0, 1), (2, 2)])
    with pytest.raises(DomainError, match="outside the box"):
        Box.from_bounds([(0, 1)], constraints=[LinearConstraint.sum_at_most([0, 3], 1.0)])
    box = Box.from_bounds([(0, 1), (0, 1)], constraints=[LinearConstraint.sum_at_most([0, 1], 1.0)])
    assert box.feasible(np.array([[0.5, 0.5], [0.6, 0.6], [1.1, 0.0]])).tolist() == [True, False, False]


def test_boundary_expansion_is_recorded_and_respects_hard_limits() -> None:
    box = Box.from_bounds([(10, 20), (0, 5)], names=["flow_a", "flow_b"], hard_bounds=[(0, 22), (0, 100)])
    same = box.expanded_at_boundary(np.array([[15.0, 2.5]]))
    assert same is box and box.expansions == ()
    grown = box.expanded_at_boundary(np.array([[20.0, 2.5], [10.0, 5.0]]), reason="best point on the edge")
    assert grown.lower == (7.5, 0.0)  # 10 - 0.25*10
    assert grown.upper == (22.0, 6.25)  # capped by the hard limit 22; 5 + 0.25*5
    sides = {(e.dim, e.side): (e.old, e.new) for e in grown.expansions}
    assert sides == {(0, "lower"): (10.0, 7.5), (0, "upper"): (20.0, 22.0), (1, "upper"): (5.0, 6.25)}
    assert all(e.reason == "best point on the edge" for e in grown.expansions)
    # dim 1 lower side is at the hard limit 0 already: no move recorded there.
    again = grown.expanded_at_boundary(np.array([[22.0, 3.0]]))
    assert again is grown  # upper side of dim 0 sits on its hard limit


def test_greedy_maximin_picks_spread_points() -> None:
    U = np.array([[0.0, 0.0], [0.01, 0.0], [1.0, 1.0], [0.5, 0.5], [1.0, 0.0]])
    idx = greedy_maximin(U, 3)
    assert len(set(idx.tolist())) == 3 and not {0, 1} <= set(idx.tolist())


def test_partition_gives_compact_balanced_leaves() -> None:
    rng = np.random.default_rng(0)
    pool = DiscretePool([str(i) for i in range(5000)], rng.random((5000, 2)) * [10.0, 1.0])
    labels, centroids = pool.partition(leaf_size=100)
    sizes = np.bincount(labels)
    assert sizes.sum() == 5000 and sizes.max() <= 100 and sizes.min() >= 50
    assert centroids.shape == (sizes.size, 2)
    np.testing.assert_allclose(centroids[3], pool.features[labels == 3].mean(axis=0))
    # leaves are compact: far smaller spread than the pool's
    spread = max(np.ptp(pool.features[labels == k], axis=0).max() for k in range(sizes.size))
    assert spread < 2.0
    assert pool.partition(leaf_size=100)[0] is labels  # cached
