"""Strategies: pools never re-propose, batches are distinct, boxes stay feasible, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo.domain import Box, DiscretePool, LinearConstraint
from screening.bo.strategy import Strategy, StrategyError, Target
from screening.bo.suggest import suggest_box, suggest_pool

TARGET = Target(2.5, 0.01)


def _pool(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    F = rng.random((n, 3))
    y = 2.0 + np.sin(4 * F[:, 0]) + F[:, 1]
    prior = y + 0.05 * rng.standard_normal(n)
    return DiscretePool([f"c{i}" for i in range(n)], F, prior_mean=prior), y


STRATEGIES = [
    Strategy(model="value", acquisition="window"),
    Strategy(model="value", acquisition="folded-ei"),
    Strategy(model="value", acquisition="thompson"),
    Strategy(model="value", acquisition="window", batch="qlogei", mc_samples=64),
    Strategy(model="value", acquisition="window", use_prior=True),
    Strategy(model="loss", acquisition="logei"),
    Strategy(model="loss", acquisition="ei"),
    Strategy(model="loss", acquisition="ucb", beta=9.0),
    Strategy(model="loss", acquisition="pi"),
    Strategy(model="loss", acquisition="thompson"),
    Strategy(model="loss", acquisition="logei", batch="qlogei", mc_samples=64),
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: f"{s.model}-{s.acquisition}-{s.batch}-{s.use_prior}")
def test_pool_batches_are_new_and_distinct(strategy: Strategy) -> None:
    pool, y = _pool()
    told = [f"c{i}" for i in range(0, 60, 2)]
    rows = pool.indices_of(told)
    failed = ["c1", "c3"]
    pending = ["c5", "c7"]
    ids = suggest_pool(
        strategy,
        pool,
        told,
        y[rows],
        np.abs(y[rows] - TARGET.target),
        q=4,
        seed=3,
        target=TARGET,
        excluded_ids=failed,
        pending_ids=pending,
    )
    assert len(ids) == 4 and len(set(ids)) == 4
    assert not set(ids) & (set(told) | set(failed) | set(pending))
    again = suggest_pool(
        strategy,
        pool,
        told,
        y[rows],
        np.abs(y[rows] - TARGET.target),
        q=4,
        seed=3,
        target=TARGET,
        excluded_ids=failed,
        pending_ids=pending,
    )
    assert again == ids


def test_value_model_finds_candidates_near_the_target() -> None:
    pool, y = _pool(seed=1)
    told = [f"c{i}" for i in range(25)]
    rows = pool.indices_of(told)
    ids = suggest_pool(Strategy(), pool, told, y[rows], np.abs(y[rows] - 2.5), q=5, seed=0, target=TARGET)
    picked = y[pool.indices_of(ids)]
    assert np.median(np.abs(picked - 2.5)) < 0.25 * np.median(np.abs(y - 2.5))


def test_pool_is_never_exhausted_silently() -> None:
    pool, y = _pool(n=6)
    told = [f"c{i}" for i in range(6)]
    with pytest.raises(StrategyError, match="exhausted"):
        suggest_pool(Strategy(n_init=2), pool, told, y, np.abs(y - 2.5), q=1, target=TARGET)
    # fewer left than asked: returns what is left
    ids = suggest_pool(Strategy(n_init=2), pool, told[:4], y[:4], np.abs(y[:4] - 2.5), q=5, target=TARGET)
    assert sorted(ids) == ["c4", "c5"]


def test_initial_design_is_random_before_n_init() -> None:
    pool, y = _pool()
    ids = suggest_pool(Strategy(n_init=5), pool, ["c0"], y[:1], np.abs(y[:1] - 2.5), q=3, seed=1, target=TARGET)
    assert len(set(ids)) == 3 and "c0" not in ids


def test_strategy_validation() -> None:
    with pytest.raises(StrategyError, match="does not fit"):
        Strategy(model="loss", acquisition="window")
    with pytest.raises(StrategyError, match="batch"):
        Strategy(batch="kriging")
    pool, y = _pool()
    with pytest.raises(StrategyError, match="target"):
        suggest_pool(Strategy(), pool, [f"c{i}" for i in range(10)], y[:10], y[:10], q=1, target=None)


FLOWS = Box.from_bounds([(0, 40)] * 5, constraints=[LinearConstraint.sum_at_most([0, 1, 2, 3], 90.0)])


def _flows_loss(X: np.ndarray) -> np.ndarray:
    return ((X / 40.0 - np.array([0.6, 0.6, 0.6, 0.5, 0.3])) ** 2).sum(axis=1)


@pytest.mark.parametrize("batch", ["lp", "qlogei"])
def test_box_batches_are_feasible_and_distinct(batch: str) -> None:
    X = FLOWS.latin_hypercube(12, seed=0)
    loss = _flows_loss(X)
    st = Strategy(model="loss", acquisition="logei", batch=batch, box_raw_samples=512, mc_samples=64)
    P = suggest_box(st, FLOWS, X, loss, loss, q=3, seed=0, X_pending=X[:1] + 1.0)
    assert P.shape == (3, 5)
    assert FLOWS.feasible(P).all()
    assert np.all(P[:, :4].sum(axis=1) <= 90.0 + 1e-6)
    assert min(np.linalg.norm(P[i] - P[j]) for i in range(3) for j in range(i)) > 1e-3
    np.testing.assert_array_equal(P, suggest_box(st, FLOWS, X, loss, loss, q=3, seed=0, X_pending=X[:1] + 1.0))


def test_box_starts_with_a_constrained_lhs() -> None:
    P = suggest_box(
        Strategy(model="loss", acquisition="logei", n_init=5),
        FLOWS,
        np.empty((0, 5)),
        np.empty(0),
        np.empty(0),
        q=8,
        seed=2,
    )
    assert P.shape == (8, 5) and FLOWS.feasible(P).all()


def test_box_local_refinement_improves_the_acquisition() -> None:
    X = FLOWS.latin_hypercube(15, seed=1)
    loss = _flows_loss(X)
    st = Strategy(model="loss", acquisition="logei", box_raw_samples=256)
    refined = suggest_box(st, FLOWS, X, loss, loss, q=1, seed=0, refine=True)
    raw = suggest_box(st, FLOWS, X, loss, loss, q=1, seed=0, refine=False)
    assert _flows_loss(refined)[0] <= _flows_loss(raw)[0] + 0.05


@pytest.mark.slow
def test_large_pools_are_screened_by_leaves_and_agree_with_exhaustive_scoring() -> None:
    rng = np.random.default_rng(7)
    n = 6000
    F = rng.random((n, 3))
    y = 2.0 + np.sin(4 * F[:, 0]) + F[:, 1]
    pool = DiscretePool([f"c{i}" for i in range(n)], F)
    told = [f"c{i}" for i in range(40)]
    rows = pool.indices_of(told)
    exhaustive = Strategy(screen_above_pairs=10**12)
    screened = Strategy(screen_above_pairs=1000, screen_keep=600, leaf_size=100)
    agree = 0
    for seed in range(5):
        extra = [f"c{i}" for i in rng.choice(np.arange(40, n), 10, replace=False)]
        a = suggest_pool(
            exhaustive, pool, told, y[rows], np.abs(y[rows] - 2.5), q=1, seed=seed, target=TARGET, excluded_ids=extra
        )
        b = suggest_pool(
            screened, pool, told, y[rows], np.abs(y[rows] - 2.5), q=1, seed=seed, target=TARGET, excluded_ids=extra
        )
        assert b[0] not in extra and b[0] not in told
        agree += a == b
    assert agree >= 4


def test_refit_schedule_is_a_function_of_n() -> None:
    from screening.bo.fitting import refit_size

    assert [refit_size(n) for n in (5, 99, 100, 109, 110, 120, 121)] == [5, 99, 100, 100, 110, 110, 121]
    sizes = [refit_size(n) for n in range(100, 2000)]
    assert all(b >= a for a, b in zip(sizes, sizes[1:]))
    assert all(n / refit_size(n) < 1.11 for n in range(100, 2000))
    assert refit_size(500, growth=1.0) == 500


def test_lp_batches_spread_out_in_boxes_with_mixed_units() -> None:
    """A flow rate spanning 800 µL/min beside percentages spanning ~20: local penalisation must
    measure distance in unit-box coordinates, or the 15 picks collapse onto one condition."""
    mixed = Box.from_bounds(
        [(10, 40), (10, 40), (0.5, 20), (0.5, 20), (200, 1000)],
        constraints=[LinearConstraint.sum_at_most([0, 1, 2, 3], 90.0)],
    )
    lo, hi = np.array(mixed.lower), np.array(mixed.upper)
    X = mixed.latin_hypercube(15, seed=3)
    U = (X - lo) / (hi - lo)
    loss = ((U - np.array([0.8, 0.2, 0.1, 0.5, 0.9])) ** 2).sum(axis=1)
    st = Strategy(model="loss", acquisition="ei", box_raw_samples=512)
    P = suggest_box(st, mixed, X, loss, loss, q=15, seed=0)
    Pu = (P - lo) / (hi - lo)
    gaps = [np.linalg.norm(Pu[i] - Pu[j]) for i in range(15) for j in range(i)]
    assert mixed.feasible(P).all()
    assert min(gaps) > 0.02  # raw-unit penalisation gave 0.007 of the box width here
