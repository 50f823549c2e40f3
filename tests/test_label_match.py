"""The label-match mixture (screening/bo/label_match.py): its probabilities agree with each other,
its fit finds a match where the data hold one and declines where they do not, and the search
state carries it through a save and a reload."""

from __future__ import annotations

import numpy as np
import pytest

from screening.bo import label_match as lm
from screening.bo.known_fit import KnownData
from screening.bo.neighbour_gp import NeighbourSettings
from screening.bo.neighbour_search import (
    build_state,
    calibration,
    load_state,
    neighbour_labels,
    save_state,
    select,
)

PARAMS = lm.LabelMatchParams(weight=5.0, lengthscale=0.5, width=0.02, width_slope=0.1)


def _case(n: int = 50, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(2.0, 0.5, n),
        rng.uniform(0.1, 0.6, n),
        np.sort(rng.uniform(0.0, 3.0, (n, k)), axis=1),
        rng.normal(2.0, 0.5, (n, k)),
    )


def test_weights_sum_to_one_and_fade_with_distance():
    _, _, dist, _ = _case()
    w0, w = lm.component_weights(dist, PARAMS)
    np.testing.assert_allclose(w0 + w.sum(axis=1), 1.0)
    assert np.all(np.diff(w, axis=1) <= 1e-15)  # sorted distances: weights never grow
    w0_far, _ = lm.component_weights(dist + 100.0, PARAMS)
    np.testing.assert_allclose(w0_far, 1.0, atol=1e-12)


def test_window_probability_is_the_cdf_difference():
    mean, std, dist, labels = _case()
    lo, hi = 1.99, 2.01
    p = np.exp(lm.log_window_probability(mean, std, dist, labels, PARAMS, 2.0, 0.01))
    full = np.full(mean.shape, 1.0)
    diff = lm.cdf(hi * full, mean, std, dist, labels, PARAMS) - lm.cdf(lo * full, mean, std, dist, labels, PARAMS)
    np.testing.assert_allclose(p, diff, rtol=1e-9, atol=1e-15)


def test_far_tails_keep_their_order_instead_of_underflowing():
    mean = np.array([0.0, 0.0])
    std = np.array([0.01, 0.01])
    dist = np.zeros((2, 1))
    labels = np.array([[0.0], [0.5]])  # both far from the window; the second less far
    logp = lm.log_window_probability(mean, std, dist, labels, PARAMS, 5.01, 0.01)
    assert np.all(np.isfinite(logp))
    assert logp[1] > logp[0]


def test_without_neighbours_it_is_the_gaussian_window():
    from screening.bo.acquisition import log_probability_in_window

    mean, std, _, _ = _case()
    empty = np.zeros((mean.size, 0))
    np.testing.assert_allclose(
        lm.log_window_probability(mean, std, empty, empty, PARAMS, 2.0, 0.01),
        log_probability_in_window(mean, std, 2.0, 0.01),
        rtol=1e-10,
    )


def test_a_close_neighbour_on_target_outranks_a_prediction_on_target():
    mean = np.array([2.0, 1.6])  # first: the network says on target; second: 0.4 eV off
    std = np.array([0.4, 0.4])
    dist = np.array([[3.0], [0.05]])  # ... but the second has a near twin labelled on target
    labels = np.array([[0.7], [2.0]])
    logp = lm.log_window_probability(mean, std, dist, labels, PARAMS, 2.0, 0.01)
    assert logp[1] > logp[0]


def test_draws_follow_the_mixture():
    mean, std, dist, labels = _case(n=1, k=3)
    n = 40_000
    rng = np.random.default_rng(3)
    rep = (np.repeat(mean, n), np.repeat(std, n), np.repeat(dist, n, axis=0), np.repeat(labels, n, axis=0))
    draws = lm.sample(*rep, PARAMS, rng)
    for q in (1.0, 1.8, 2.0, 2.3, 3.0):
        expected = lm.cdf(np.array([q]), mean, std, dist, labels, PARAMS)[0]
        assert abs(np.mean(draws <= q) - expected) < 0.01


def test_point_masses_are_not_continuous_rows():
    values = np.concatenate([np.zeros(50), np.linspace(0.5, 3.0, 950)])
    keep = lm.continuous_rows(values)
    assert not keep[:50].any() and keep[50:].all()


def _matched_data(n: int, match: bool, seed: int = 0):
    """Labelled rows whose values equal their nearest neighbour's with a chance that fades
    with distance (``match``), or are independent of it."""
    rng = np.random.default_rng(seed)
    dist = np.sort(rng.exponential(1.0, (n, 4)), axis=1)
    labels = rng.uniform(0.5, 4.0, (n, 4))
    mean = rng.uniform(0.5, 4.0, n)
    values = mean + rng.normal(0, 0.4, n)
    if match:
        copy = rng.random(n) < 0.8 * np.exp(-dist[:, 0] / 0.5)
        values = np.where(copy, labels[:, 0] + rng.laplace(0, 0.01, n), values)
    return values, mean, np.full(n, 0.4), dist, labels


def test_fit_finds_a_match_where_there_is_one():
    params = lm.fit(*_matched_data(3000, match=True), tolerance=0.01)
    assert params is not None
    assert 0.1 < params.lengthscale < 3.0
    assert params.width < 0.1


def test_fit_declines_where_neighbours_say_nothing():
    assert lm.fit(*_matched_data(3000, match=False), tolerance=0.01) is None


def test_fit_declines_with_too_few_rows():
    assert lm.fit(*_matched_data(lm.MIN_FIT_ROWS - 1, match=True), tolerance=0.01) is None


# --------------------------------------------------------------------------- in the search state


def _pool_with_twins(seed: int = 0):
    """Known crystals and candidates in clusters of near twins that share one value."""
    rng = np.random.default_rng(seed)
    n_clusters, per = 700, 4
    centres = rng.normal(0, 3.0, (n_clusters, 6))
    values = rng.uniform(0.5, 4.0, n_clusters)
    emb = np.repeat(centres, per, axis=0) + rng.normal(0, 0.02, (n_clusters * per, 6))
    y = np.repeat(values, per) + rng.laplace(0, 0.005, n_clusters * per)
    prior = y + rng.normal(0, 0.5, y.size)  # the "network": right on average, 0.5 eV off each
    is_known = np.tile([True, True, True, False], n_clusters)
    known = KnownData([f"k{i}" for i in range(is_known.sum())], emb[is_known], y[is_known], prior[is_known])
    return known, emb[~is_known], prior[~is_known], y[~is_known]


def test_state_fits_the_match_and_it_finds_twins_first():
    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [], np.zeros(0), seed=0)
    assert state.label_match is not None
    target = float(y[7])
    picks = select(state, np.arange(len(y)), 1, "window", target, 0.01, np.random.default_rng(0))
    assert abs(y[picks[0]] - target) <= 0.02  # the candidate whose twins are labelled on target
    dist, labels = neighbour_labels(state)
    assert dist.shape == labels.shape == (len(y), 8)
    cal = calibration(state, np.arange(len(y)), y)
    assert 0.5 < cal["coverage_68"] <= 1.0 and cal["coverage_95"] >= cal["coverage_68"]


def test_state_without_the_match_setting_has_none():
    known, emb, prior, _ = _pool_with_twins()
    state = build_state(NeighbourSettings(8, 6, min_labelled=1000), emb, prior, known, [], np.zeros(0), seed=0)
    assert state.label_match is None


def test_labels_of_told_candidates_are_their_observed_values():
    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [0, 5], y[[0, 5]], seed=0)
    _, labels = neighbour_labels(state)
    idx = state.gp._nbr_idx
    told = idx >= len(known)
    assert told.any()
    np.testing.assert_allclose(labels[told], y[[0, 5]][idx[told] - len(known)], atol=1e-12)


def test_label_match_survives_save_and_load(tmp_path):
    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [3], y[[3]], seed=0)
    path = tmp_path / "neighbour_state.arrays"
    save_state(state, path, "key")
    again = load_state(path, "key", settings)
    assert again is not None and again.label_match == state.label_match
    np.testing.assert_array_equal(neighbour_labels(again)[1], neighbour_labels(state)[1])
    # another tolerance is another model: not reused
    other = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.05)
    assert load_state(path, "key", other) is None


@pytest.mark.parametrize("seed", [0, 1])
def test_thompson_on_the_mixture_is_reproducible(seed):
    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [], np.zeros(0), seed=0)
    free = np.arange(len(y))
    a = select(state, free, 3, "thompson", 2.0, 0.01, np.random.default_rng(seed))
    b = select(state, free, 3, "thompson", 2.0, 0.01, np.random.default_rng(seed))
    assert a == b


def test_fast_path_equals_the_log_domain_path_inside_outside_and_underflowing():
    mean, std, dist, labels = _case(n=400, k=5, seed=4)
    labels[:50, 0] = 2.0  # inside the window
    labels[50:100] = 2.0 + np.linspace(-0.05, 0.05, 5)  # straddling its edges
    mean[100:110], std[100:110], labels[100:110] = 40.0, 0.01, 60.0  # far: underflows in linear space
    fast = lm.log_window_probability(mean, std, dist, labels, PARAMS, 2.0, 0.01)
    exact = lm._log_window_exact(mean, std, dist, labels, PARAMS, np.full(400, 2.0), np.full(400, 0.01))
    assert np.all(np.isfinite(fast[100:110]))
    np.testing.assert_allclose(fast, exact, rtol=1e-9, atol=1e-12)


def test_prepared_scores_equal_the_direct_ones_and_follow_new_observations():
    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [], np.zeros(0), seed=0)
    from screening.bo.neighbour_search import prepared_match, update_state

    prep = prepared_match(state, 2.0)
    assert prep is not None and state.label_match is not None

    def both():
        from screening.bo.neighbour_search import predictive

        mean, std = predictive(state)
        dist, labels = neighbour_labels(state)
        direct = lm.log_window_probability(mean, std, dist, labels, state.label_match, 2.0, 0.01)
        fast = lm.log_window_prepared(
            prep, mean, std, state.gp._nbr_dist, lambda r: neighbour_labels(state, r)[1], state.label_match
        )
        return direct, fast

    np.testing.assert_allclose(*both(), rtol=1e-9, atol=1e-12)
    # an observation changes some neighbour lists: the prepared arrays follow (no rebuild)
    state = update_state(state, settings, emb, prior, known, [0, 1, 2], y[:3], seed=0)
    assert state.match_prepared is prep
    np.testing.assert_allclose(*both(), rtol=1e-9, atol=1e-12)


def test_prepared_scores_are_saved_with_the_state(tmp_path):
    from screening.bo.neighbour_search import prepared_match

    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [3], y[[3]], seed=0)
    prep = prepared_match(state, 2.0)
    assert prep is not None
    path = tmp_path / "neighbour_state.arrays"
    save_state(state, path, "key")
    again = load_state(path, "key", settings)
    assert again is not None and again.match_prepared is not None
    assert (again.match_prepared.target, again.match_prepared.tolerance) == (2.0, 0.01)
    np.testing.assert_array_equal(again.match_prepared.label_part, prep.label_part)
    assert prepared_match(again, 2.0) is again.match_prepared  # read, not recomputed
    free = np.arange(len(y))
    rng = np.random.default_rng(0)
    assert select(again, free, 2, "window", 2.0, 0.01, rng) == select(state, free, 2, "window", 2.0, 0.01, rng)


def test_window_calibration_sums_the_probabilities_it_is_given():
    from screening.bo.neighbour_search import window_calibration, window_scores

    known, emb, prior, y = _pool_with_twins()
    settings = NeighbourSettings(8, 6, min_labelled=1000, label_match_tolerance=0.01)
    state = build_state(settings, emb, prior, known, [], np.zeros(0), seed=0)
    rows = np.arange(len(y))
    targets = [1.0, 2.5]
    cal = window_calibration(state, rows, y, targets, 0.01, top=5)
    p = [np.exp(window_scores(state, t, 0.01)) for t in targets]
    assert cal["predicted_hits"] == pytest.approx(sum(float(q.sum()) for q in p))
    assert cal["observed_hits"] == sum(int(np.sum(np.abs(y - t) <= 0.01)) for t in targets)
    tops = [np.argsort(-q, kind="stable")[:5] for q in p]
    assert cal["predicted_top"] == pytest.approx(sum(float(q[b].sum()) for q, b in zip(p, tops)))
    assert cal["observed_top"] == sum(int(np.sum(np.abs(y[b] - t) <= 0.01)) for t, b in zip(targets, tops))
    # twins labelled on target make the top of the ordering hit far more often than the pool does
    assert cal["observed_top"] / 10 > cal["observed_hits"] / (2 * len(y))


def test_a_campaign_stored_before_the_label_match_keeps_searching_without_it():
    from screening.bo.strategy import Strategy

    stored = Strategy(surrogate="neighbour").to_dict()
    assert Strategy.from_dict(stored).label_match is True
    del stored["label_match"]
    assert Strategy.from_dict(stored).label_match is False


def test_moments_match_the_mixture_draws():
    mean, std, dist, labels = _case(n=1, k=3, seed=2)
    n = 200_000
    rep = (np.repeat(mean, n), np.repeat(std, n), np.repeat(dist, n, axis=0), np.repeat(labels, n, axis=0))
    draws = lm.sample(*rep, PARAMS, np.random.default_rng(1))
    m, s = lm.moments(mean, std, dist, labels, PARAMS)
    assert abs(draws.mean() - m[0]) < 0.01 and abs(draws.std() - s[0]) < 0.01


def test_the_ask_file_reports_the_mixture_the_search_ranked_by(tmp_path):
    """A lab reading the ask file sees the probability the pick was made for, not the GP's."""
    from screening.bo.campaign import Campaign
    from screening.bo.domain import DiscretePool
    from screening.bo.neighbour_search import reported_predictive, window_scores
    from screening.bo.strategy import Strategy
    from screening.objectives.bandgap.objective import BandGapPoolObjective

    known, emb, prior, y = _pool_with_twins()
    pool = DiscretePool([f"c{i}" for i in range(len(y))], emb[:, :3], prior_mean=prior, embedding=emb, known=known)
    target = float(y[11])
    obj = BandGapPoolObjective(pool, y, target, 0.01)
    strategy = Strategy(surrogate="neighbour", neighbour_components=6, neighbour_min_labelled=1000)
    c = Campaign.create(tmp_path / "c.sqlite", obj, strategy, seed=0, batch_size=1)
    asked = c.ask()
    post = c.predictive(asked)
    state = c._hyper_cache["neighbour"]
    assert state.label_match is not None
    row = pool.index_of(asked[0])
    scores = np.exp(window_scores(state, target, 0.01))
    assert post["acquisition"][0] == pytest.approx(scores[row]) and scores[row] == pytest.approx(scores.max())
    mean, std = reported_predictive(state)
    assert post["mean"][0] == pytest.approx(mean[row]) and post["std"][0] == pytest.approx(std[row])
