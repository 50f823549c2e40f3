"""The nearest-neighbour GP and the known-data search path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from screening.bo import neighbour_gp as ng
from screening.bo import neighbour_search as ns
from screening.bo.domain import DiscretePool
from screening.bo.strategy import Strategy, StrategyError, Target
from screening.bo.suggest import suggest_pool
from screening.errors import RecordError


def _exact_gp(params: ng.NeighbourGPParams, X: np.ndarray, r: np.ndarray, Xq: np.ndarray):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return params.local_signal**2 * np.exp(-0.5 * d2 / params.lengthscale**2) + params.offset_signal**2

    K = k(X, X) + (params.noise**2 + 1e-9) * np.eye(len(X))
    ks = k(Xq, X)
    mean = ks @ np.linalg.solve(K, r)
    var = (
        params.local_signal**2
        + params.offset_signal**2
        + params.noise**2
        - np.einsum("ij,ji->i", ks, np.linalg.solve(K, ks.T))
    )
    return mean, var


def test_local_prediction_is_the_exact_gp_when_every_point_is_a_neighbour():
    rng = np.random.default_rng(0)
    X, Xq = rng.normal(size=(12, 3)), rng.normal(size=(5, 3))
    r = np.sin(X[:, 0]) + 0.1 * rng.normal(size=12)
    params = ng.NeighbourGPParams(0.8, 1.2, 0.3, 0.2)
    gp = ng.NeighbourGP(n_neighbours=12).fit(X, r, params=params).index(Xq)
    mean, std = gp.predict()
    m_ref, v_ref = _exact_gp(params, X, r, Xq)
    np.testing.assert_allclose(mean, m_ref, atol=1e-8)
    np.testing.assert_allclose(std**2, v_ref, atol=1e-8)


def test_adding_points_matches_a_rebuild():
    rng = np.random.default_rng(1)
    X, extra, Xq = rng.normal(size=(40, 4)), rng.normal(size=(6, 4)), rng.normal(size=(30, 4))
    r, r_extra = rng.normal(size=40), rng.normal(size=6)
    params = ng.NeighbourGPParams(0.5, 1.0, 0.2, 0.3)
    inc = ng.NeighbourGP(5).fit(X, r, params=params).index(Xq)
    changed = inc.add(extra, r_extra)
    full = ng.NeighbourGP(5).fit(np.vstack([X, extra]), np.concatenate([r, r_extra]), params=params).index(Xq)
    np.testing.assert_allclose(inc.predict()[0], full.predict()[0], atol=1e-10)
    np.testing.assert_allclose(inc.predict()[1], full.predict()[1], atol=1e-10)
    assert 0 < changed.size <= 30
    # preview_add changes nothing but predicts what add would
    base = ng.NeighbourGP(5).fit(X, r, params=params).index(Xq)
    rows, m, s = base.preview_add(extra, r_extra)
    np.testing.assert_allclose(m, full.predict()[0][rows], atol=1e-10)
    np.testing.assert_allclose(base.predict()[0], ng.NeighbourGP(5).fit(X, r, params=params).index(Xq).predict()[0])


@pytest.mark.slow
def test_fit_selects_local_structure_only_when_it_predicts():
    rng = np.random.default_rng(2)
    X = rng.uniform(-3, 3, size=(600, 2))
    smooth = np.sin(2 * X[:, 0]) * np.cos(X[:, 1]) + 0.05 * rng.normal(size=600)
    noise = rng.normal(size=600)
    p_smooth = ng.fit_params(X, smooth, k=16, min_labelled=0)
    p_noise = ng.fit_params(X, noise, k=16, min_labelled=0)
    assert p_smooth.local_signal > 5 * p_smooth.noise  # the field explains most of the variance
    assert p_noise.local_signal < 1e-2 and abs(p_noise.noise - noise.std()) < 0.1  # null model: iid around 0


def test_the_null_margin_is_the_bic_price_of_the_hyper_parameters_with_a_floor():
    assert ng.null_margin(100) == pytest.approx(2 * np.log(100) / 100)  # 0.092 nats per point
    assert ng.null_margin(5000) == ng.NULL_MARGIN  # thousands of known crystals: the floor
    assert ng.null_margin(10) > ng.null_margin(100) > ng.null_margin(1000)


def test_below_the_minimum_labelled_count_even_a_strong_field_keeps_the_ranking():
    """The minimum is a measured default (no structure in few MP crystals was real), so a strong
    field in 600 points is left alone by default and found once the user lowers it."""
    rng = np.random.default_rng(2)
    X = rng.uniform(-3, 3, size=(600, 2))
    smooth = np.sin(2 * X[:, 0]) * np.cos(X[:, 1]) + 0.05 * rng.normal(size=600)
    assert ng.MIN_LABELLED > 600
    assert ng.fit_params(X, smooth, k=16).local_signal < 1e-2
    assert ng.NeighbourGP(16).fit(X, smooth).params.local_signal < 1e-2
    assert ng.NeighbourGP(16, min_labelled=0).fit(X, smooth).params.local_signal > 0.3


def test_weak_structure_in_few_points_leaves_the_ranking_alone():
    """100 labelled points with a faint field (a fifth of the variance): the likelihood gain is
    below the BIC price, so the model stays the null one and the network's ranking is kept."""
    rng = np.random.default_rng(7)
    X = rng.uniform(-3, 3, size=(100, 2))
    faint = 0.5 * np.sin(2 * X[:, 0]) + rng.normal(size=100)
    params = ng.fit_params(X, faint, k=8, min_labelled=0)  # the BIC price alone, without the minimum
    assert params.local_signal < 1e-2


def test_calibration_counts_interval_coverage():
    rng = np.random.default_rng(3)
    n = 4000
    emb = rng.normal(size=(n, 4))
    prior = rng.normal(size=n)
    state = ns.build_state(ns.NeighbourSettings(4, 4), emb, prior, None, [], np.zeros(0), 0)
    mean, std = ns.predictive(state)
    values = mean + std * rng.normal(size=n)  # drawn from the predictive itself
    cal = ns.calibration(state, np.arange(n), values)
    assert abs(cal["coverage_68"] - 0.6827) < 0.03 and abs(cal["coverage_95"] - 0.95) < 0.015
    cal_wide = ns.calibration(state, np.arange(n), mean + 3 * std * rng.normal(size=n))
    assert cal_wide["coverage_68"] < 0.35


def _pool(n=300, d=6, seed=0, with_known=True):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(25, d)) * 3
    lab = rng.integers(0, 25, size=n + 1500)
    E = centres[lab] + 0.3 * rng.normal(size=(n + 1500, d))
    gap = np.abs(1.5 + np.tanh(E[:, 0]) + 0.5 * np.sin(E[:, 1]) + 0.05 * rng.normal(size=len(E)))
    pred = gap + 0.4 * np.tanh(centres[lab][:, 2]) + 0.1 * rng.normal(size=len(E))  # a clustered network error
    known = ns.KnownData([f"k{i}" for i in range(1500)], E[n:], gap[n:], pred[n:]) if with_known else None
    pool = DiscretePool([f"c{i}" for i in range(n)], E[:n, :3], prior_mean=pred[:n], embedding=E[:n], known=known)
    return pool, gap[:n], pred[:n]


def _dense_state(pool, told=(), values=()):
    """The model of ``_pool``'s 1,500 known crystals (below the default minimum labelled count, so
    this dense synthetic set lowers it) and the results ``values`` at pool rows ``told``."""
    settings = ns.NeighbourSettings(8, 6, min_labelled=0)
    return ns.update_state(
        None, settings, pool.embedding, pool.prior_mean, pool.known, list(told), np.asarray(values, float), 0
    )


def test_known_data_improve_the_predictions_over_the_network():
    pool, gap, pred = _pool()
    mean, _ = ns.predictive(_dense_state(pool))
    assert np.mean(np.abs(mean - gap)) < 0.7 * np.mean(np.abs(pred - gap))


def test_predictive_at_rows_is_the_pool_prediction_at_those_rows():
    pool, gap, _ = _pool()
    told = [5, 17, 40]
    state = _dense_state(pool, told, gap[told])
    rows = np.array([3, 0, 299, 17])
    mean, std = ns.predictive(state)
    mean_rows, std_rows = ns.predictive(state, rows)
    np.testing.assert_array_equal(mean_rows, mean[rows])
    np.testing.assert_array_equal(std_rows, std[rows])
    rep_mean, rep_std = ns.reported_predictive(state, rows)
    np.testing.assert_array_equal(rep_mean, ns.reported_predictive(state)[0][rows])
    np.testing.assert_array_equal(rep_std, ns.reported_predictive(state)[1][rows])
    np.testing.assert_array_equal(ns.window_scores(state, 2.0, 0.05, rows), ns.window_scores(state, 2.0, 0.05)[rows])


def _search(strategy, pool, gap, target, seed, steps=8, cache=None):
    told, ys = [], []
    cache = {} if cache is None else cache
    for step in range(steps):
        pick = suggest_pool(
            strategy,
            pool,
            told,
            np.array(ys),
            np.abs(np.array(ys) - target),
            seed=seed * 1000 + step,
            target=Target(target, 0.02),
            hyper_cache=cache,
        )[0]
        told.append(pick)
        ys.append(float(gap[pool.index_of(pick)]))
    return told


@pytest.mark.slow
def test_window_is_deterministic_thompson_depends_on_the_seed():
    pool, gap, _ = _pool()
    window = Strategy(surrogate="neighbour", n_neighbours=8, neighbour_components=6)
    assert _search(window, pool, gap, 2.0, 0) == _search(window, pool, gap, 2.0, 0)
    thompson = Strategy(surrogate="neighbour", acquisition="thompson", n_neighbours=8, neighbour_components=6)
    runs = {tuple(_search(thompson, pool, gap, 2.0, s)) for s in range(3)}
    assert len(runs) > 1
    assert _search(thompson, pool, gap, 2.0, 7) == _search(thompson, pool, gap, 2.0, 7)


def _null_state(n=400, seed=0):
    """No known data, no observations: the network's prediction with one predictive std."""
    rng = np.random.default_rng(seed)
    prior = rng.uniform(2.2, 4.0, size=n)  # all but the first six at least 0.2 eV from the target
    prior[:6] = 2.0 + np.array([0.0, 1e-4, -2e-4, 3e-4, -4e-4, 5e-4])  # six near-ties on the target
    return ns.build_state(ns.NeighbourSettings(8, 4), rng.normal(size=(n, 4)), prior, None, [], np.zeros(0), 0)


def _picks(state, tie_break, seed, n=3):
    """``n`` suggestions one after another (no results in between), each from its own seeded rng."""
    free, out = np.ones(state.pool_points.shape[0], dtype=bool), []
    for step in range(n):
        rng = np.random.default_rng([seed, step])
        out += ns.select(state, np.flatnonzero(free), 1, "window", 2.0, 0.01, rng, (), tie_break)
        free[out[-1]] = False
    return out


def test_without_tie_breaks_the_window_takes_the_predictions_nearest_the_target():
    state = _null_state()
    assert _picks(state, 0.0, 0) == [0, 1, 2] == _picks(state, 0.0, 1)


def test_tie_breaks_reorder_near_ties_by_seed_and_leave_far_candidates_out():
    state = _null_state()
    runs = [_picks(state, 0.04, s) for s in range(8)]
    assert len({tuple(r) for r in runs}) > 1  # the seed matters
    assert all(set(r) <= set(range(6)) for r in runs)  # only the near-ties compete (std ~0.4 x 0.04)
    assert _picks(state, 0.04, 5) == _picks(state, 0.04, 5)  # and the same seed repeats


def test_tie_breaks_need_the_window_on_the_neighbour_surrogate():
    from screening.bo.strategy import DEFAULT_TIE_BREAK

    assert Strategy(surrogate="neighbour").tie_break == DEFAULT_TIE_BREAK > 0  # the default where it applies
    assert Strategy(surrogate="neighbour", acquisition="thompson").tie_break == 0.0
    assert Strategy(surrogate="gp").tie_break == 0.0
    with pytest.raises(StrategyError, match="tie_break"):
        Strategy(surrogate="neighbour", acquisition="thompson", tie_break=0.04)
    with pytest.raises(StrategyError, match="tie_break"):
        Strategy(surrogate="gp", tie_break=0.04)
    with pytest.raises(StrategyError, match="tie_break"):
        Strategy(surrogate="neighbour", tie_break=-0.1)
    stored = Strategy(surrogate="neighbour", tie_break=0.04)
    assert Strategy.from_dict(stored.to_dict()) == stored
    old = stored.to_dict()
    del old["tie_break"]  # a campaign stored before the field searches as it did
    assert Strategy.from_dict(old).tie_break == 0.0


def test_a_restarted_campaign_makes_the_same_choice():
    pool, gap, _ = _pool(with_known=False)
    strategy = Strategy(surrogate="neighbour", n_neighbours=8, neighbour_components=6)
    told = [pool.ids[i] for i in range(0, 60, 2)]  # 30 observations: refits at 10 and 20 on the way
    ys = gap[[pool.index_of(t) for t in told]]
    cache: dict = {}
    for n in range(8, 31):  # one campaign growing step by step, model kept in memory
        suggest_pool(
            strategy, pool, told[:n], ys[:n], np.abs(ys[:n] - 2.0), seed=1, target=Target(2.0, 0.02), hyper_cache=cache
        )
    fresh = suggest_pool(strategy, pool, told, ys, np.abs(ys - 2.0), seed=1, target=Target(2.0, 0.02), hyper_cache={})
    again = suggest_pool(
        strategy, pool, told, ys, np.abs(ys - 2.0), seed=1, target=Target(2.0, 0.02), hyper_cache=cache
    )
    assert fresh == again


def test_batches_are_distinct_and_avoid_pending():
    pool, gap, _ = _pool()
    strategy = Strategy(surrogate="neighbour", n_neighbours=8, neighbour_components=6)
    picks = suggest_pool(
        strategy, pool, [], np.zeros(0), np.zeros(0), q=5, target=Target(2.0, 0.02), pending_ids=["c0", "c1"]
    )
    assert len(set(picks)) == 5 and not {"c0", "c1"} & set(picks)


def test_neighbour_surrogate_refuses_the_loss_model():
    with pytest.raises(StrategyError):
        Strategy(surrogate="neighbour", model="loss", acquisition="ei")


# ------------------------------------------------------------------ files and CLI


def _featurised(path, ids, rng, gaps=None):
    E = rng.normal(size=(len(ids), 8))
    frame = pd.DataFrame({"id": ids, "formula": ["X"] * len(ids)})
    frame["pred_band_gap"] = np.abs(1.5 + E[:, 0])
    for k in range(8):
        frame[f"emb_{k}"] = E[:, k]
    frame["band_gap"] = np.abs(1.5 + E[:, 0] + 0.2 * E[:, 1]) if gaps is None else gaps
    if str(path).endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return frame


@pytest.mark.slow
def test_cli_search_with_known_data_until_budget(tmp_path):
    from typer.testing import CliRunner

    from screening.cli import app

    rng = np.random.default_rng(5)
    _featurised(tmp_path / "pool.parquet", [f"p{i}" for i in range(120)], rng)
    _featurised(tmp_path / "known.csv", [f"k{i}" for i in range(400)], rng)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "search",
            "--pool",
            str(tmp_path / "pool.parquet"),
            "--known",
            str(tmp_path / "known.csv"),
            "--target",
            "1.5",
            "--tol",
            "0.05",
            "--budget",
            "12",
            "--until",
            "budget",
            "--min-labelled",
            "100",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads((out / "summary.json").read_text())
    assert info["search_evaluations"] == 12  # kept going past the first hit
    assert info["evaluations_to_first_hit"] is not None and len(info["hits"]) >= 1
    assert info["strategy"]["surrogate"] == "neighbour"
    # reopened with the known data, it resumes
    res = CliRunner().invoke(
        app,
        [
            "search",
            "--pool",
            str(tmp_path / "pool.parquet"),
            "--target",
            "1.5",
            "--budget",
            "14",
            "--until",
            "budget",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["search_evaluations"] == 14


@pytest.mark.parametrize(
    "problem, message",
    [
        ("collide", "also candidates"),
        ("negative", "line 5: band_gap '-0.5'"),
        ("missing", "line 5: band_gap 'nan'"),
        ("nolabel", "need columns ['band_gap']"),
    ],
)
def test_bad_known_data_are_refused_naming_file_and_row(tmp_path, problem, message):
    from typer.testing import CliRunner

    from screening.cli import app

    rng = np.random.default_rng(6)
    _featurised(tmp_path / "pool.parquet", [f"p{i}" for i in range(50)], rng)
    ids = [f"k{i}" for i in range(50)]
    if problem == "collide":
        ids[7] = "p3"
    known = _featurised(tmp_path / "known.csv", ids, rng)
    if problem in ("negative", "missing"):
        known.loc[3, "band_gap"] = -0.5 if problem == "negative" else np.nan
    if problem == "nolabel":
        known = known.drop(columns=["band_gap"])
    known.to_csv(tmp_path / "known.csv", index=False)
    out = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        [
            "search",
            "--pool",
            str(tmp_path / "pool.parquet"),
            "--known",
            str(tmp_path / "known.csv"),
            "--target",
            "1.5",
            "-o",
            str(out),
            "--strict",  # without it, invalid rows are left out (tests/robustness/test_invalid_rows.py)
        ],
    )
    assert res.exit_code == 1
    assert "known.csv" in res.output and message in res.output, res.output
    assert not out.exists()  # nothing half-written


def test_load_known_gives_the_labels(tmp_path):
    from screening.objectives.bandgap.objective import load_known, load_pool

    rng = np.random.default_rng(7)
    _featurised(tmp_path / "pool.parquet", [f"p{i}" for i in range(30)], rng)
    frame = _featurised(tmp_path / "known.parquet", [f"k{i}" for i in range(40)], rng)
    known = load_known(tmp_path / "known.parquet", load_pool(tmp_path / "pool.parquet"))
    assert len(known) == 40 and known.embedding.shape == (40, 8)
    np.testing.assert_allclose(known.values, frame["band_gap"])
    with pytest.raises(RecordError):
        frame.loc[2, "emb_3"] = np.inf
        frame.to_parquet(tmp_path / "bad.parquet", index=False)
        load_known(tmp_path / "bad.parquet", load_pool(tmp_path / "pool.parquet"))


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(8)
    P, Q = torch.as_tensor(rng.normal(size=(200, 5))), torch.as_tensor(rng.normal(size=(50, 5)))
    d, i = ng.nearest(Q, P, 7, chunk=16)
    ref = torch.cdist(Q, P)
    rd, ri = torch.topk(ref, 7, largest=False)
    np.testing.assert_allclose(d.numpy(), rd.numpy(), atol=1e-9)
    assert (i == ri).all()


def _network_std_pool(n=400, seed=0):
    """No known data; two candidates predicted on the target, the network surer of the second."""
    rng = np.random.default_rng(seed)
    prior = rng.uniform(2.5, 4.0, size=n)
    prior[:2] = 2.0
    std = rng.uniform(0.2, 0.4, size=n)
    std[:2] = [0.4, 0.15]
    return DiscretePool([f"c{i}" for i in range(n)], rng.normal(size=(n, 4)), prior_mean=prior, prior_std=std)


def test_without_local_structure_the_network_std_is_the_predictive_std():
    from screening.bo.optimise_pool import neighbour_state

    pool = _network_std_pool()
    strategy = Strategy(surrogate="neighbour", n_neighbours=8, neighbour_components=4)
    state = neighbour_state(strategy, pool, told_ids=[], told_y=np.zeros(0), hyper_cache={}, tolerance=0.01)
    _, std = ns.predictive(state)
    np.testing.assert_allclose(std, np.sqrt(pool.prior_std**2 + ns.NETWORK_STD_FLOOR**2))
    # Equally near the target, the crystal the network is surer of comes first; one fitted std
    # for all (--fitted-std, and campaigns stored before the option) leaves the prediction's order.
    assert _picks(state, 0.0, 0, n=1) == [1]
    fitted = Strategy(surrogate="neighbour", n_neighbours=8, neighbour_components=4, trust_network_std=False)
    state = neighbour_state(fitted, pool, told_ids=[], told_y=np.zeros(0), hyper_cache={}, tolerance=0.01)
    _, std = ns.predictive(state)
    assert np.ptp(std) < 1e-12 and _picks(state, 0.0, 0, n=1) == [0]
    stored = Strategy(surrogate="neighbour").to_dict()
    del stored["trust_network_std"]
    assert Strategy.from_dict(stored).trust_network_std is False


def test_with_local_structure_the_fitted_model_gives_the_std():
    pool, gap, pred = _pool()
    rng = np.random.default_rng(1)
    std = rng.uniform(0.1, 0.5, size=len(pred))
    with_std = DiscretePool(
        pool.ids, pool.features, prior_mean=pred, prior_std=std, embedding=pool.embedding, known=pool.known
    )
    state = _dense_state(with_std)  # 1,500 known crystals, the minimum lowered to 0: local structure
    plain = ns.predictive(state)[1].copy()
    state.network_std = std
    assert ns.has_local_structure(state)
    np.testing.assert_array_equal(ns.predictive(state)[1], plain)
