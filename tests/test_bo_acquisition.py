"""Acquisition functions on known posteriors, checked against Monte Carlo; local penalisation."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo import acquisition as acq

RNG = np.random.default_rng(0)
MEANS = np.array([0.0, 0.3, 1.0, 2.5, -0.4])
STDS = np.array([0.5, 0.1, 1.0, 0.2, 0.05])


def _mc(mean: float, std: float, n: int = 400_000) -> np.ndarray:
    return RNG.normal(mean, std, n)


def test_expected_improvement_matches_monte_carlo() -> None:
    best = 0.2
    ei = acq.expected_improvement(MEANS, STDS, best)
    for m, s, v in zip(MEANS, STDS, ei):
        assert v == pytest.approx(np.maximum(best - _mc(m, s), 0).mean(), abs=3e-3)
    np.testing.assert_allclose(np.exp(acq.log_expected_improvement(MEANS, STDS, best)), ei, rtol=1e-10)


def test_log_ei_is_finite_and_ordered_where_ei_underflows() -> None:
    means = np.array([10.0, 20.0, 40.0, 400.0])
    log_ei = acq.log_expected_improvement(means, np.ones(4), 0.0)
    assert np.all(np.isfinite(log_ei))
    assert np.all(np.diff(log_ei) < 0)
    assert acq.expected_improvement(means, np.ones(4), 0.0)[-1] == 0.0
    # Continuity across the switch between the two branches (z = -1).
    z = np.array([-1.0 - 1e-9, -1.0 + 1e-9])
    assert np.ptp(acq.log_expected_improvement(-z, np.ones(2), 0.0)) < 1e-6


def test_probability_of_improvement_and_ucb() -> None:
    pi = acq.probability_of_improvement(MEANS, STDS, 0.2)
    for m, s, v in zip(MEANS, STDS, pi):
        assert v == pytest.approx((_mc(m, s) < 0.2).mean(), abs=3e-3)
    ucb = acq.upper_confidence_bound(np.array([1.0, 1.0]), np.array([0.1, 0.5]), beta=4.0)
    np.testing.assert_allclose(ucb, [-(1.0 - 0.2), -(1.0 - 1.0)])
    # softplus keeps the order and makes the score positive (log finite)
    assert np.all(np.diff(acq.log_softplus(np.array([-100.0, -1.0, 0.0, 5.0, 100.0]))) > 0)


def test_window_probability_matches_monte_carlo_and_both_tails() -> None:
    target, tol = 0.25, 0.1
    p = acq.probability_in_window(MEANS, STDS, target, tol)
    for m, s, v in zip(MEANS, STDS, p):
        y = _mc(m, s)
        assert v == pytest.approx((np.abs(y - target) <= tol).mean(), abs=3e-3)
    # far below and far above the window: tiny but finite logs, ordered by distance
    lp = acq.log_probability_in_window(np.array([-30.0, -20.0, 20.0, 30.0]), np.ones(4), 0.0, 0.01)
    assert np.all(np.isfinite(lp))
    assert lp[0] < lp[1] and lp[3] < lp[2]
    assert lp[1] == pytest.approx(lp[2])


def test_folded_expected_improvement_matches_monte_carlo() -> None:
    target, best = 0.25, 0.3
    fei = acq.folded_expected_improvement(MEANS, STDS, target, best)
    for m, s, v in zip(MEANS, STDS, fei):
        y = _mc(m, s)
        assert v == pytest.approx(np.maximum(best - np.abs(y - target), 0).mean(), abs=3e-3)
    far = acq.log_folded_expected_improvement(np.array([50.0, 60.0, 0.25]), np.ones(3), 0.25, 0.1)
    assert np.all(np.isfinite(far)) and far[0] > far[1] and far[2] > far[0]


def test_folded_normal_mean() -> None:
    for m, s in zip(MEANS, STDS):
        assert acq.folded_normal_mean(np.array([m]), np.array([s]), 0.25)[0] == pytest.approx(
            np.abs(_mc(m, s) - 0.25).mean(), abs=3e-3
        )


def test_local_penalty_is_small_near_the_pending_point_and_one_far_away() -> None:
    d = np.array([0.0, 0.01, 0.1, 1.0, 10.0])
    phi = np.exp(acq.log_local_penalty(d, mean_at_pending=1.0, std_at_pending=0.1, lipschitz=5.0, best=0.0))
    assert np.all(np.diff(phi) >= 0) and np.all(np.diff(phi[:4]) > 0)
    assert phi[0] < 1e-6  # the pending point itself: the function is 10 std above best there
    assert phi[-1] == pytest.approx(1.0)


def _grid():
    g = np.linspace(0, 1, 21)
    feats = np.array([[a, b] for a in g for b in g])
    mean = 0.2 + ((feats - 0.5) ** 2).sum(1)  # minimum 0.2 at the centre, above the best seen (0.1)
    std = np.full(len(feats), 0.05)
    return feats, mean, std


def _mean_pairwise(pts: np.ndarray) -> float:
    n = len(pts)
    return float(np.mean([np.linalg.norm(pts[i] - pts[j]) for i in range(n) for j in range(i)]))


def test_local_penalisation_gives_q_distinct_spread_points() -> None:
    feats, mean, std = _grid()
    log_scores = acq.log_expected_improvement(mean, std, best=0.1)
    lipschitz = 1.4  # max |grad| of the mean on the unit square
    picks = acq.select_locally_penalised(log_scores, feats, mean, std, q=5, lipschitz=lipschitz, best=0.1)
    assert len(picks) == 5 and len(set(picks)) == 5
    assert picks[0] == int(np.argmax(log_scores))
    # r = (0.2 - 0.1) / 1.4 ~ 0.07: the grid neighbours at 0.05 lie inside the exclusion ball
    pts = feats[picks]
    assert min(np.linalg.norm(pts[i] - pts[j]) for i in range(5) for j in range(i)) > 0.05 + 1e-9
    # plain top-5 by score is clumped around the centre; the penalised batch is spread out
    top = feats[np.argsort(-log_scores, kind="stable")[:5]]
    assert _mean_pairwise(pts) > 1.5 * _mean_pairwise(top)


def test_local_penalisation_avoids_externally_pending_points() -> None:
    feats, mean, std = _grid()
    log_scores = acq.log_expected_improvement(mean, std, best=0.1)
    best_row = int(np.argmax(log_scores))
    picks = acq.select_locally_penalised(
        log_scores,
        feats,
        mean,
        std,
        q=1,
        lipschitz=1.4,
        best=0.1,
        pending_features=feats[[best_row]],
        pending_mean=mean[[best_row]],
        pending_std=std[[best_row]],
    )
    assert picks[0] != best_row
    assert np.linalg.norm(feats[picks[0]] - feats[best_row]) > 0.05


def test_lipschitz_fallback_for_flat_models() -> None:
    assert acq.lipschitz_from_gradients(np.zeros(5)) == 10.0
    assert acq.lipschitz_from_gradients(np.array([0.1, 2.0])) == 2.0
