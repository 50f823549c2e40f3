"""The measured-scale GP: a learned map of the base prediction plus a residual, from few results."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo.measured_map import MeasuredGP, MeasuredMapError


def _lab(n: int, seed: int = 0, offset: float = 0.9, slope: float = 1.35, scatter: float = 0.1):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 5.0, n)
    z = rng.normal(size=(n, 3))
    s = rng.uniform(0.1, 0.4, n)
    y = offset + slope * g + rng.normal(0.0, scatter, n)
    return g, s, z, y


def test_the_likelihood_gradient_matches_finite_differences() -> None:
    g, s, z, y = _lab(40)
    gp = MeasuredGP(g0=2.5)
    v = np.log([0.2, 1.5, 0.3, 1.0, 0.1, 0.8])
    _, grad = gp._nll_grad(v, g, s, z, y)
    num = []
    for i in range(6):
        e = np.zeros(6)
        e[i] = 1e-6
        num.append((gp._nll_grad(v + e, g, s, z, y)[0] - gp._nll_grad(v - e, g, s, z, y)[0]) / 2e-6)
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6)


def test_without_results_the_map_is_the_identity_with_the_prior_band() -> None:
    gp = MeasuredGP(g0=2.5).fit(np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros(0))
    m = gp.summary((1.0, 4.0))
    assert m.slope == pytest.approx(1.0, abs=1e-9) and m.intercept == pytest.approx(0.0, abs=1e-9)
    assert m.band > 0.9  # offset prior 1 eV: nothing is known yet
    mean, std = gp.predict(np.array([1.0, 3.0]), np.array([0.2, 0.2]), np.zeros((2, 3)))
    np.testing.assert_allclose(mean, [1.0, 3.0])
    assert np.all(std > 1.0)


@pytest.mark.parametrize("n", [6, 10])
def test_a_few_results_pin_a_linear_map(n: int) -> None:
    g, s, z, y = _lab(n, seed=n)
    gp = MeasuredGP(g0=2.5).fit(g, s, z, y)
    m = gp.summary()
    assert m.slope == pytest.approx(1.35, abs=0.2) and m.intercept == pytest.approx(0.9, abs=0.45)
    assert m.n == n and "measured ≈" in m.words() and f"from {n} results" in m.words()
    # the map moves the prediction of a new crystal predicted at 3 eV to about 0.9 + 1.35 * 3
    mean, std = gp.predict(np.array([3.0]), np.array([0.2]), np.zeros((1, 3)))
    assert mean[0] == pytest.approx(0.9 + 1.35 * 3.0, abs=0.3) and std[0] < 0.6


def test_a_monotone_curved_map_is_followed_where_the_results_are() -> None:
    rng = np.random.default_rng(3)
    g = rng.uniform(0.3, 6.0, 40)
    y = 0.8 + 1.4 * g**0.75 + rng.normal(0.0, 0.05, 40)
    gp = MeasuredGP(g0=2.5).fit(g, None, np.zeros((40, 0)), y)
    grid = np.array([0.5, 2.0, 4.0, 5.5])
    mean, _ = gp.map_posterior(grid)
    np.testing.assert_allclose(mean, 0.8 + 1.4 * grid**0.75, atol=0.15)


def test_believed_results_narrow_the_std_and_keep_the_mean() -> None:
    g, s, z, y = _lab(10)
    gp = MeasuredGP(g0=2.5).fit(g, s, z, y)
    q_g, q_s, q_z = np.array([2.0]), np.array([0.2]), np.zeros((1, 3))
    m0, s0 = gp.predict(q_g, q_s, q_z)
    after = gp.with_fantasies(q_g, q_s, q_z, m0)
    m1, s1 = after.predict(q_g, q_s, q_z)
    assert m1[0] == pytest.approx(m0[0], abs=1e-9) and s1[0] < s0[0]


def test_bad_results_are_refused() -> None:
    g, s, z, y = _lab(5)
    y[2] = np.nan
    with pytest.raises(MeasuredMapError, match="finite"):
        MeasuredGP().fit(g, s, z, y)
    with pytest.raises(MeasuredMapError, match="one of each"):
        MeasuredGP().fit(g, s, z, y[:3])


def test_results_on_the_base_scale_keep_the_identity_and_a_lab_scale_learns_the_map() -> None:
    """The null model (the base prediction with its own std, scaled) stays until the results'
    marginal likelihood pays for a map: DFT-scale results keep it, lab-scale ones do not."""
    from screening.bo.measured_map import IdentityMap
    from screening.bo.measured_search import MeasuredInputs, model

    rng = np.random.default_rng(5)
    n = 400
    g = rng.uniform(0.5, 5.0, n)
    s = rng.uniform(0.1, 0.4, n)
    z = rng.normal(size=(n, 3))
    inp = MeasuredInputs(g, s, z, 2.5, 1.0, np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros(0))
    rows = np.arange(40)
    same_scale = g[rows] + s[rows] * rng.normal(size=40)
    kept = model(inp, rows, same_scale)
    assert isinstance(kept, IdentityMap) and kept.summary((1.0, 4.0)).identity
    assert "no evidence yet for another map" in kept.summary().words()
    lab = 0.9 + 1.35 * g[rows] + 0.1 * rng.normal(size=40)
    learned = model(inp, rows, lab)
    assert not isinstance(learned, IdentityMap)
    assert learned.summary().slope == pytest.approx(1.35, abs=0.1)


def test_the_words_give_the_predicted_range_without_a_negative_zero() -> None:
    """A range from -0.04 to 5.0 eV read "predicted -0.0-5.0 eV" in the demo's closing line."""
    from screening.bo.measured_map import MapSummary

    z = np.zeros(3)
    m = MapSummary(-0.1, 1.0, 0.44, 60, (-0.04, 4.96), 0.1, 0.1, z, z, z)
    assert m.words().endswith("predicted 0.0 to 5.0 eV)")
