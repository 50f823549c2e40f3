"""GP surrogate: the fast chunked predictor matches BoTorch; prior mean; joint samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from screening.bo.surrogate import GPSurrogate, SurrogateError

BOUNDS = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])


def _data(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 3))
    y = 2.0 + np.sin(4 * X[:, 0]) + X[:, 1] ** 2
    return X, y, rng


@pytest.mark.parametrize("use_prior", [False, True])
def test_chunked_prediction_matches_botorch_posterior(use_prior: bool) -> None:
    X, y, rng = _data()
    prior = y + 0.1 * rng.standard_normal(y.size)
    s = GPSurrogate(BOUNDS, use_prior=use_prior).fit(X, y, prior=prior if use_prior else None)
    Xt = rng.random((57, 3))
    pt = rng.random(57) + 2
    mean, std = s.predict(Xt, pt if use_prior else None, chunk_elements=300)  # forces several chunks
    with torch.no_grad():
        post = s.model.posterior(s.model_inputs(Xt, pt if use_prior else None))
    ref_mean = post.mean.numpy().ravel() * s.y_std_ + s.y_mean_
    ref_std = post.variance.clamp_min(0).sqrt().numpy().ravel() * s.y_std_
    np.testing.assert_allclose(mean, ref_mean, atol=1e-8)
    np.testing.assert_allclose(std, ref_std, atol=1e-6)


def test_gp_interpolates_noise_free_data_and_is_unsure_far_away() -> None:
    X, y, _ = _data(40)
    s = GPSurrogate(BOUNDS).fit(X, y)
    mean, std = s.predict(X)
    np.testing.assert_allclose(mean, y, atol=0.02)
    _, std_far = s.predict(np.array([[3.0, 3.0, 3.0]]))
    assert std_far[0] > 10 * std.max()


def test_prior_mean_helps_when_the_prior_is_right() -> None:
    rng = np.random.default_rng(5)
    f = lambda Z: 3.0 * np.sin(6 * Z[:, 0]) * np.cos(5 * Z[:, 1]) + Z[:, 2]  # noqa: E731
    X = rng.random((12, 3))
    Xt = rng.random((300, 3))
    plain = GPSurrogate(BOUNDS).fit(X, f(X))
    informed = GPSurrogate(BOUNDS, use_prior=True).fit(X, f(X), prior=f(X))
    err_plain = np.abs(plain.predict(Xt)[0] - f(Xt)).mean()
    err_informed = np.abs(informed.predict(Xt, f(Xt))[0] - f(Xt)).mean()
    assert err_informed < 0.3 * err_plain
    with pytest.raises(SurrogateError, match="prior"):
        informed.predict(Xt)


def test_mean_gradient_matches_finite_differences() -> None:
    X, y, rng = _data()
    bounds = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 1.0]])  # non-unit span: gradient in feature units
    s = GPSurrogate(bounds).fit(X, y)
    x0 = rng.random((1, 3))
    g = s.mean_gradient_norms(x0)[0]
    h = 1e-5
    fd = np.array([(s.predict(x0 + h * e)[0] - s.predict(x0 - h * e)[0])[0] / (2 * h) for e in np.eye(3)])
    assert g == pytest.approx(np.linalg.norm(fd), rel=1e-4)


def test_joint_samples_have_the_posterior_moments() -> None:
    X, y, rng = _data(15)
    s = GPSurrogate(BOUNDS).fit(X, y)
    Xt = rng.random((4, 3))
    samples = s.sample_joint(Xt, 4000, np.random.default_rng(0))
    mean, std = s.predict(Xt)
    np.testing.assert_allclose(samples.mean(0), mean, atol=4 * std.max() / np.sqrt(4000) + 1e-6)
    np.testing.assert_allclose(samples.std(0), std, rtol=0.08)


def test_fit_rejects_bad_input() -> None:
    s = GPSurrogate(BOUNDS)
    with pytest.raises(SurrogateError, match="at least two"):
        s.fit(np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(SurrogateError, match="finite"):
        s.fit(np.random.rand(3, 3), np.array([1.0, np.nan, 2.0]))
    with pytest.raises(SurrogateError, match="fit the surrogate"):
        s.predict(np.zeros((1, 3)))


@pytest.mark.parametrize("use_prior", [False, True])
def test_reused_hyperparameters_reproduce_the_fit(use_prior: bool) -> None:
    X, y, rng = _data(40)
    prior = y + 0.2 * rng.standard_normal(y.size)
    kw = {"prior": prior} if use_prior else {}
    full = GPSurrogate(BOUNDS, use_prior=use_prior).fit(X, y, **kw)
    hp = full.hyperparameters()
    # Same data, given hyper-parameters: identical predictions without optimisation.
    same = GPSurrogate(BOUNDS, use_prior=use_prior).fit(X, y, hyperparameters=hp, **kw)
    Xt = rng.random((20, 3))
    pt = {"prior": rng.random(20) + 2} if use_prior else {}
    for a, b in zip(full.predict(Xt, **pt), same.predict(Xt, **pt)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-8)  # noise sits on its lower bound
    # Hyper-parameters are in units of y: rescaling y rescales them, not the lengthscales.
    big = GPSurrogate(BOUNDS, use_prior=use_prior).fit(
        X,
        10 * y,
        hyperparameters={
            **hp,
            "outputscale": hp["outputscale"] * 100,
            "noise": hp["noise"] * 100,
            "constant": hp["constant"] * 10,
        },
        **({"prior": 10 * prior} if use_prior else {}),
    )
    pt10 = {"prior": 10 * pt["prior"]} if use_prior else {}
    np.testing.assert_allclose(big.predict(Xt, **pt10)[0], 10 * full.predict(Xt, **pt)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(big.hyperparameters()["lengthscale"], hp["lengthscale"])


def test_predictive_spread_includes_the_fitted_noise() -> None:
    rng = np.random.default_rng(3)
    X = rng.random((60, 3))
    y = X[:, 0] + 0.3 * rng.standard_normal(60)  # mostly unexplained scatter
    s = GPSurrogate(BOUNDS).fit(X, y)
    _, latent = s.predict(X[:5])
    _, observed = s.predict(X[:5], include_noise=True)
    np.testing.assert_allclose(observed**2, latent**2 + s.hyperparameters()["noise"], rtol=1e-6)
    assert np.all(observed > 0.2)  # a new measurement scatters by about the noise level
