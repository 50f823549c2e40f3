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


def _inputs(n: int = 400, seed: int = 5):
    from screening.bo.measured_search import MeasuredInputs

    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 5.0, n)
    s = rng.uniform(0.1, 0.3, n)
    z = rng.normal(size=(n, 3))
    return MeasuredInputs(g, s, z, 2.5, 1.0, np.zeros(0), np.zeros(0), np.zeros((0, 3)), np.zeros(0)), rng


def test_the_identity_pays_for_explaining_an_offset_as_noise() -> None:
    """One result 1.6 eV above its prediction: the identity, its two noise parameters free, fits
    1.6 eV of noise at a likelihood above the map's, so the old rule kept it (setting e searched
    the wrong crystals for the next picks); its noise prior now makes it pay, and the map carries
    most of the weight."""
    from screening.bo.measured_map import IdentityMap, MeasuredGP
    from screening.bo.measured_search import MapAverage, map_weight, model

    inp, _ = _inputs()
    rows = np.array([0])
    y = inp.g[rows] + 1.6
    identity, nll0 = IdentityMap.fit(inp.g[rows], inp.s[rows], y)
    assert np.all(identity.predict(inp.g[rows], inp.s[rows], inp.z[rows])[1] > 0.5)  # it did stretch its noise
    gp = MeasuredGP(g0=2.5, z_scale=1.0, residual_needs_evidence=True).fit(inp.g[rows], inp.s[rows], inp.z[rows], y)
    assert map_weight(nll0, gp.negative_log_likelihood(), 1) < 0.5  # the likelihoods alone: the identity
    paid = map_weight(nll0 + identity.hyper_penalty(), gp.negative_log_likelihood() + gp.hyper_penalty(), 1)
    assert paid > 0.8
    chosen = model(inp, rows, y)
    assert isinstance(chosen, MapAverage) and chosen.weight == pytest.approx(paid)


def test_near_even_odds_the_search_averages_the_two_scales() -> None:
    """Where neither model is clearly better the measured model is a mixture: its window
    probability is the weighted sum of the two models', its moments the mixture's, and a draw
    comes from either model by its weight."""
    from screening.bo import acquisition as acq
    from screening.bo.measured_map import IdentityMap, MeasuredGP
    from screening.bo.measured_search import MapAverage, map_weight, window_probability

    assert map_weight(10.0, 10.0 - np.log(5.0), 5) == pytest.approx(0.5)  # the prior odds: ln n
    inp, rng = _inputs()
    rows = np.arange(5)
    y = inp.g[rows] + 0.3 + 0.1 * rng.normal(size=5)
    gp = MeasuredGP(g0=2.5, z_scale=1.0).fit(inp.g[rows], inp.s[rows], inp.z[rows], y)
    identity, _ = IdentityMap.fit(inp.g[rows], inp.s[rows], y)
    avg = MapAverage(gp, identity, 0.3)
    q = np.arange(5, 60)
    g, s, z = inp.g[q], inp.s[q], inp.z[q]
    m1, s1 = gp.predict(g, s, z)
    m0, s0 = identity.predict(g, s, z)
    p = window_probability(avg, inp, 2.0, 0.05, q)
    expected = 0.3 * np.exp(acq.log_probability_in_window(m1, s1, 2.0, 0.05)) + 0.7 * np.exp(
        acq.log_probability_in_window(m0, s0, 2.0, 0.05)
    )
    np.testing.assert_allclose(p, expected, rtol=1e-10)
    mean, std = avg.predict(g, s, z)
    np.testing.assert_allclose(mean, 0.3 * m1 + 0.7 * m0)
    assert np.all(std >= np.minimum(s1, s0) - 1e-12)
    draws = np.array([avg.sample(g[:1], s[:1], z[:1], np.random.default_rng(k))[0] for k in range(4000)])
    assert np.mean(draws) == pytest.approx(mean[0], abs=0.05)
    words = avg.summary().words()
    assert "30% on this map, the rest on measured ≈ predicted" in words
    assert avg.summary().to_dict()["weight"] == pytest.approx(0.3)


def test_a_cached_model_pays_the_same_penalty() -> None:
    """The hyper-parameters are cached between suggestions; the penalty is a function of them,
    so a model rebuilt from the cache weighs the two scales as the fitted one did."""
    from screening.bo.measured_map import MeasuredGP

    inp, rng = _inputs()
    rows = np.arange(12)
    y = 0.9 + 1.35 * inp.g[rows] + 0.1 * rng.normal(size=12)
    fitted = MeasuredGP(g0=2.5, z_scale=1.0).fit(inp.g[rows], inp.s[rows], inp.z[rows], y)
    rebuilt = MeasuredGP(g0=2.5, z_scale=1.0).fit(inp.g[rows], inp.s[rows], inp.z[rows], y, params=fitted.params)
    assert fitted.hyper_penalty() > 0
    assert rebuilt.hyper_penalty() == fitted.hyper_penalty()
