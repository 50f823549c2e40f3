"""The neighbour surrogate uses the network's own per-crystal uncertainty (pred_band_gap_std)."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo import neighbour_search as ns
from screening.bo.domain import DiscretePool, DomainError
from screening.bo.known_fit import KnownData
from screening.bo.neighbour_gp import NeighbourSettings

SETTINGS = NeighbourSettings(n_neighbours=8, n_components=4, fit_sample=2000)


def heteroscedastic_data(n: int, seed: int):
    """Predictions whose errors are iid N(0, sigma_i^2) with a known, varying sigma_i: no local
    structure, so all a model can learn beyond the prediction is who to trust."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 6))
    pred = rng.uniform(0.5, 4.0, n)
    sigma = rng.choice([0.05, 0.6], n)
    y = pred + sigma * rng.normal(size=n)
    return emb, pred, sigma, y


@pytest.mark.slow
def test_predictive_std_follows_the_networks_std_and_is_calibrated() -> None:
    emb, pred, sigma, y = heteroscedastic_data(3000, 0)
    known = KnownData([f"k{i}" for i in range(2000)], emb[:2000], y[:2000], pred[:2000], sigma[:2000])
    state = ns.build_state(SETTINGS, emb[2000:], pred[2000:], known, [], np.zeros(0), 0, sigma[2000:])
    _, std = ns.predictive(state)
    small, large = sigma[2000:] == 0.05, sigma[2000:] == 0.6
    assert np.median(std[large]) > 5 * np.median(std[small])
    cal = ns.calibration(state, np.arange(1000), y[2000:])
    assert 0.6 <= cal["coverage_68"] <= 0.76 and 0.9 <= cal["coverage_95"] <= 0.99
    # without the network's std the surrogate cannot tell the two kinds of crystal apart
    plain = ns.build_state(SETTINGS, emb[2000:], pred[2000:], known, [], np.zeros(0), 0, None)
    _, std_plain = ns.predictive(plain)
    assert np.median(std_plain[large]) < 1.5 * np.median(std_plain[small])


def test_window_acquisition_prefers_the_crystal_the_network_is_sure_of() -> None:
    emb, pred, sigma, y = heteroscedastic_data(600, 1)
    pred[[10, 11]] = [2.0, 2.0]  # two candidates predicted exactly on target...
    sigma[[10, 11]] = [0.6, 0.05]  # ...one of them far more reliably
    known = KnownData([f"k{i}" for i in range(300)], emb[:300], y[:300], pred[:300], sigma[:300])
    cand = slice(300, 600)
    pool_pred, pool_sigma = pred[cand].copy(), sigma[cand].copy()
    pool_pred[[10, 11]], pool_sigma[[10, 11]] = [2.0, 2.0], [0.6, 0.05]
    state = ns.build_state(SETTINGS, emb[cand], pool_pred, known, [], np.zeros(0), 0, pool_sigma)
    pick = ns.select(state, np.arange(300), 1, "window", 2.0, 0.01, np.random.default_rng(0))
    assert pick == [11]


def test_the_pool_refuses_a_std_that_is_not_a_positive_number() -> None:
    ids = ["a", "b"]
    with pytest.raises(DomainError, match="'b'"):
        DiscretePool(ids, np.zeros((2, 1)), prior_mean=np.ones(2), prior_std=np.array([0.1, 0.0]))
    with pytest.raises(DomainError, match="prior_mean"):
        DiscretePool(ids, np.zeros((2, 1)), prior_std=np.array([0.1, 0.2]))
