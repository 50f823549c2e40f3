"""The neighbour GP's numpy path (everything after the hyper-parameter fit) against its torch path.

Why: a command-line ``campaign ask`` reloads the fitted model and predicts; doing that in numpy
spares it torch's import (issue 11), and must not change a single prediction beyond rounding.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from screening.bo import neighbour_gp as ng

RTOL = 1e-10  # relative to the largest magnitude of the quantity compared


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL) -> None:
    expected = np.asarray(expected)
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a)


def _case(seed: int):
    rng = np.random.default_rng(seed)
    d, n, m, k = (
        int(rng.integers(2, 17)),
        int(rng.integers(5, 300)),
        int(rng.integers(1, 400)),
        int(rng.integers(1, 33)),
    )
    spread = rng.uniform(0.1, 5.0)
    X, Xq = spread * rng.normal(size=(n, d)), spread * rng.normal(size=(m, d))
    r = rng.normal(size=n)
    params = ng.NeighbourGPParams(*(float(v) for v in rng.uniform([0.05, 0.2, 0.01, 0.01], [2.0, 5.0, 1.0, 1.0])))
    return rng, X, Xq, r, params, k


@pytest.mark.parametrize("seed", range(12))
def test_nearest_and_local_prediction_match_torch(seed):
    _, X, Xq, r, params, k = _case(seed)  # k up to 32: torch's cdist switches method above 25
    d_np, i_np = ng.nearest_np(Xq, X, k, chunk=64)
    d_t, i_t = ng.nearest(_t(Xq), _t(X), k, chunk=64)
    assert np.array_equal(i_np, i_t.numpy())
    np.testing.assert_allclose(d_np, d_t.numpy(), rtol=1e-12, atol=1e-12)
    m_np, v_np = ng.local_predict_np(params, X, r, d_np, i_np)
    m_t, v_t = ng.local_predict(params, _t(X), _t(r), _t(d_np), _t(i_np))
    _close(m_np, m_t.numpy())
    _close(v_np, v_t.numpy())


def test_no_neighbours_and_the_jittered_factor_match_torch():
    rng = np.random.default_rng(3)
    params = ng.NeighbourGPParams(0.5, 1.0, 0.2, 0.3)
    none = np.zeros((4, 0))
    m_np, v_np = ng.local_predict_np(params, np.zeros((0, 3)), np.zeros(0), none, none.astype(np.int64))
    m_t, v_t = ng.local_predict(params, _t(np.zeros((0, 3))), _t(np.zeros(0)), _t(none), _t(none.astype(np.int64)))
    _close(m_np, m_t.numpy())
    _close(v_np, v_t.numpy())
    # exact duplicates under a huge signal and no noise: the plain factor fails, both jitter it
    X = np.repeat(rng.normal(size=(3, 2)), 4, axis=0)
    r = rng.normal(size=12)
    loud = ng.NeighbourGPParams(1e4, 1.0, 1e4, 0.0)
    d, i = ng.nearest_np(X[:5] + 0.01, X, 8)
    D2 = ((X[i[0]][:, None, :] - X[i[0]][None, :, :]) ** 2).sum(-1)
    with pytest.raises(np.linalg.LinAlgError):  # the first query's plain factor
        np.linalg.cholesky(1e8 * np.exp(-0.5 * D2) + 1e8 + 1e-9 * np.eye(8))
    m_np, v_np = ng.local_predict_np(loud, X, r, d, i)
    m_t, v_t = ng.local_predict(loud, _t(X), _t(r), _t(d), _t(i))
    # the jittered kernel's condition number is about k * 1e6 whatever the scale, so two
    # implementations agree to about that times the float64 epsilon, not to 1e-10
    _close(m_np, m_t.numpy(), rtol=1e-8)
    _close(v_np, v_t.numpy(), rtol=1e-8)


@pytest.mark.parametrize("seed", range(6))
def test_the_model_after_its_fit_matches_the_torch_equations(seed):
    """index / add / preview_add / predict / loo_predict against the torch functions on the whole set."""
    rng, X, Xq, r, params, k = _case(seed)
    E, r_e = X.std() * rng.normal(size=(5, X.shape[1])), rng.normal(size=5)

    def torch_predict(P: np.ndarray, res: np.ndarray, Q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, i = ng.nearest(_t(Q), _t(P), k)
        m, v = ng.local_predict(params, _t(P), _t(res), d, i)
        return m.numpy(), np.sqrt(v.numpy())

    gp = ng.NeighbourGP(k).fit(X, r, params=params).index(Xq)
    m0, s0 = torch_predict(X, r, Xq)
    _close(gp.predict()[0], m0)
    _close(gp.predict()[1], s0)
    np.testing.assert_allclose(gp.neighbour_distances(), ng.nearest(_t(Xq), _t(X), 1)[0].numpy()[:, 0], atol=1e-12)

    both, r_both = np.vstack([X, E]), np.concatenate([r, r_e])
    m1, s1 = torch_predict(both, r_both, Xq)
    rows, m_prev, s_prev = gp.preview_add(E, r_e)
    _close(m_prev, m1[rows])
    _close(s_prev, s1[rows])
    _close(gp.predict()[0], m0)  # preview changed nothing
    changed = gp.add(E, r_e)
    assert set(changed) <= set(rows)
    _close(gp.predict()[0], m1)
    _close(gp.predict()[1], s1)

    loo_rows = rng.choice(len(both), size=min(len(both), 25), replace=False)
    d, i = ng._loo_neighbours(_t(both), loo_rows, k)
    m_t, v_t = ng.local_predict(params, _t(both), _t(r_both), d, i)
    m_np, s_np = gp.loo_predict(loo_rows)
    _close(m_np, m_t.numpy())
    _close(s_np, np.sqrt(v_t.numpy()))


def _run_without_torch(code: str) -> None:
    """Run ``code`` in a fresh interpreter, then fail if it imported torch (or a library on top of it)."""
    check = textwrap.dedent(code) + textwrap.dedent(
        """
        import sys
        heavy = sorted(m for m in ("torch", "botorch", "gpytorch") if m in sys.modules)
        assert not heavy, f"imported {heavy}"
        """
    )
    res = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_the_ask_path_modules_import_no_torch():
    _run_without_torch(
        """
        import screening.bo.neighbour_gp, screening.bo.neighbour_search, screening.bo.optimise_pool
        import screening.bo.strategy, screening.bo.campaign, screening.cli
        """
    )


def test_the_model_after_its_fit_needs_no_torch():
    _run_without_torch(
        """
        import numpy as np
        from screening.bo import neighbour_gp as ng
        rng = np.random.default_rng(0)
        X, Xq, r = rng.normal(size=(40, 4)), rng.normal(size=(50, 4)), rng.normal(size=40)
        gp = ng.NeighbourGP(8).fit(X, r, params=ng.NeighbourGPParams(0.5, 1.0, 0.2, 0.3)).index(Xq)
        gp.preview_add(X[:2] + 0.1, r[:2])
        gp.add(X[:2] + 0.1, r[:2])
        gp.predict(), gp.neighbour_distances(), gp.loo_predict(np.arange(5))
        """
    )


def test_reloading_a_saved_model_and_choosing_needs_no_torch(tmp_path):
    from screening.bo import neighbour_search as ns

    rng = np.random.default_rng(5)
    emb, prior = rng.normal(size=(120, 6)), rng.normal(size=120)
    settings = ns.NeighbourSettings(8, 4)
    told = [3, 40, 77]
    state = ns.build_state(settings, emb, prior, None, told, prior[told] + 0.1, seed=0)
    key = ns.state_key(settings, emb, prior, None, None)
    path = tmp_path / "neighbour_state.arrays"
    ns.save_state(state, path, key)
    expected = ns.select(state, np.arange(120), 2, "window", 0.5, 0.05, np.random.default_rng(0), [10])
    _run_without_torch(
        f"""
        import numpy as np
        from screening.bo import neighbour_search as ns
        state = ns.load_state({str(path)!r}, {key!r}, ns.NeighbourSettings(8, 4))
        assert state is not None
        picks = ns.select(state, np.arange(120), 2, "window", 0.5, 0.05, np.random.default_rng(0), [10])
        assert picks == {expected!r}, picks
        """
    )


# ---------------------------------------------------------------- a new observation, updated in place


def _reference_add(gp: ng.NeighbourGP, P: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, ...]:
    """What ``add`` computed before it re-merged only the candidates a new point reaches: every
    list merged, every changed row predicted again (the rule the faster path must equal)."""
    base = gp.n_labelled
    lab_points, lab_res = np.concatenate([gp._lab_points, P]), np.concatenate([gp._lab_res, r])
    d_new, i_new = ng.nearest_np(gp._cand_points, P, gp.k)
    d = np.concatenate([gp._nbr_dist, d_new], axis=1)
    i = np.concatenate([gp._nbr_idx, i_new + base], axis=1)
    order = np.argsort(d, axis=1, kind="stable")[:, : gp.k]
    nd, ni = np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)
    rows = np.flatnonzero((ni != gp._nbr_idx).any(axis=1)) if ni.shape == gp._nbr_idx.shape else np.arange(len(nd))
    mean, var = gp._pred_mean.copy(), gp._pred_var.copy()
    m, v = ng.local_predict_np(gp.params, lab_points, lab_res, nd[rows], ni[rows])
    mean[rows], var[rows] = m, v
    return rows, nd, ni, mean, var


@pytest.mark.parametrize("seed", range(6))
def test_add_and_preview_equal_merging_every_list_to_the_last_bit(seed) -> None:
    rng = np.random.default_rng(seed)
    d, k = 6, 5
    lab = np.round(rng.normal(size=(40 if seed % 2 else 3, d)), 1)  # few labelled: lists not full yet
    cand = np.round(rng.normal(size=(500, d)), 1)  # rounded: ties between distances occur
    gp = ng.NeighbourGP(k, seed=0)
    gp.fit(lab, rng.normal(size=len(lab)), params=ng.NeighbourGPParams(0.8, 1.3, 0.4, 0.3))
    gp.index(cand)
    for step in range(3):
        P = np.concatenate([cand[rng.integers(0, len(cand), 1)], np.round(rng.normal(size=(step, d)), 1)])
        r = rng.normal(size=len(P))
        rows, nd, ni, mean, var = _reference_add(gp, P, r)
        p_rows, p_mean, p_std = gp.preview_add(P, r)
        np.testing.assert_array_equal(p_rows, rows)
        np.testing.assert_array_equal(p_mean, mean[rows])
        np.testing.assert_array_equal(p_std, np.sqrt(var[rows]))
        np.testing.assert_array_equal(gp.add(P, r), rows)
        for got, want in ((gp._nbr_dist, nd), (gp._nbr_idx, ni), (gp._pred_mean, mean), (gp._pred_var, var)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_points", [300, 50_000])  # pair codes in 32 bits, then in 64
@pytest.mark.parametrize("k", [8, 2, 1, 0])
def test_pair_distances_of_distinct_pairs_equal_every_entry_summed_to_the_last_bit(k: int, n_points: int) -> None:
    rng = np.random.default_rng(1)
    # queries sharing neighbours (and a list holding one point twice), as the reached ones do
    points = rng.normal(size=(n_points, 64)) * 30
    idx = rng.integers(n_points - 300, n_points, (529, k))
    which, lo, hi = ng.distinct_pairs(idx, n_points)
    assert np.all(lo <= hi) and len(set(zip(lo.tolist(), hi.tolist()))) == len(lo)  # each pair once
    first, second = np.triu_indices(k, 1)
    expected = _every_entry_d2(points, idx)
    np.testing.assert_array_equal(ng.pair_sq_distances(points, lo, hi)[which], expected[:, first, second])


def _every_entry_d2(points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The former (n, k, k) squared distances: every entry, one coordinate at a time."""
    n, k = idx.shape
    expected = np.zeros((n, k, k))
    for c in np.ascontiguousarray(points.T)[:, idx]:
        expected += (c[:, :, None] - c[:, None, :]) ** 2
    return expected


def test_squared_norms_in_blocks_equal_one_pass_to_the_last_bit() -> None:
    x = np.random.default_rng(2).normal(size=(1000, 64)) * 40
    np.testing.assert_array_equal(ng.squared_norms(x, rows=97), (x * x).sum(axis=1))


def _former_local_predict(params, points, residuals, nbr_dist, nbr_idx):
    """local_predict_np before it evaluated the kernel per distinct pair and factored in blocks:
    the (n, k, k) distances, one kernel over them, one factor for the whole call."""
    s1, ell, s0, sn = params.local_signal**2, params.lengthscale, params.offset_signal**2, params.noise**2
    k = nbr_idx.shape[1]
    K = s1 * np.exp(-0.5 * _every_entry_d2(points, nbr_idx) / ell**2) + s0
    K = K + (sn + 1e-9) * np.eye(k)
    ks = s1 * np.exp(-0.5 * nbr_dist**2 / ell**2) + s0
    try:
        L = np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        L = np.linalg.cholesky(K + 1e-6 * (s1 + s0) * np.eye(k))
    fwd = ng._solve_lower(L, np.stack([residuals[nbr_idx], ks], axis=-1))
    alpha = ng._solve_lower_transposed(L, fwd[..., 0])
    v = fwd[..., 1]
    return (ks * alpha).sum(axis=-1), np.maximum(s1 + s0 + sn - (v * v).sum(axis=-1), 1e-6 * sn + 1e-12)


@pytest.mark.parametrize("loud", [False, True], ids=["plain", "jittered"])
def test_local_prediction_in_blocks_equals_the_former_one_to_the_last_bit(monkeypatch, loud: bool) -> None:
    rng = np.random.default_rng(7)
    monkeypatch.setattr(ng, "PREDICT_BLOCK", 64)  # several blocks and a remainder of one query
    # far from the others, exact duplicates: the last query's plain factor fails, and every query
    # of the call is then jittered, as before
    X = np.concatenate([rng.normal(size=(60, 5)), 50 + np.repeat(rng.normal(size=(3, 5)), 4 if loud else 1, axis=0)])
    r = rng.normal(size=len(X))
    d, i = ng.nearest_np(np.concatenate([rng.normal(size=(64 * 3, 5)), [X[-1] + 0.01]]), X, 8)
    params = ng.NeighbourGPParams(1e4, 1.0, 1e4, 0.0) if loud else ng.NeighbourGPParams(0.7, 1.1, 0.3, 0.2)
    got, want = ng.local_predict_np(params, X, r, d, i), _former_local_predict(params, X, r, d, i)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
