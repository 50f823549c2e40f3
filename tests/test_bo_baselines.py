"""Exact random-search baselines agree with simulation."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo.baselines import expected_best_loss_curve, expected_draws_to_first_hit, probability_no_hit_within


def test_expected_draws_to_first_hit_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    n, k = 60, 4
    draws = [int(np.argmax(rng.permutation(n) < k)) + 1 for _ in range(40_000)]
    assert expected_draws_to_first_hit(n, k) == pytest.approx(np.mean(draws), rel=0.02)
    assert expected_draws_to_first_hit(n, 0) == float("inf")
    p = probability_no_hit_within(n, k, np.array([0, 1, 10, n - k, n - k + 1]))
    assert p[0] == pytest.approx(1.0) and p[1] == pytest.approx((n - k) / n) and p[-1] == 0.0
    assert p[2] == pytest.approx(np.mean(np.array(draws) > 10), abs=0.01)


def test_expected_best_loss_curve_matches_simulation() -> None:
    rng = np.random.default_rng(1)
    losses = rng.exponential(1.0, 40)
    curve = expected_best_loss_curve(losses, 10, start=0.8)
    sims = np.array([np.minimum.accumulate(np.minimum(rng.permutation(losses)[:10], 0.8)) for _ in range(40_000)])
    np.testing.assert_allclose(curve, sims.mean(0), rtol=0.02, atol=1e-3)
    assert np.all(np.diff(curve) <= 1e-12)
    assert expected_best_loss_curve(losses, 40)[-1] == pytest.approx(losses.min())
