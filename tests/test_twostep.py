"""Step 2: the spectrum network trains on all spectra, proposes low-loss conditions in bounds, and
the stop rules read the right numbers."""

from __future__ import annotations

import numpy as np
import pytest

from screening.models.spectrum_mlp import train_spectrum_ensemble, train_spectrum_mlp
from screening.objectives.synthesis import twostep
from screening.objectives.synthesis.objective import SynthesisObjective, synthesis_box
from screening.objectives.synthesis.rounds import SynthesisCampaign
from screening.objectives.synthesis.spectral_loss import WAVELENGTHS_NM, load_target, spectrum_losses
from screening.objectives.synthesis.virtual_lab import VirtualLab


@pytest.fixture(scope="module")
def lab_data():
    box = synthesis_box("full")
    lab = VirtualLab(n_replicates=3, seed=0)
    X = box.latin_hypercube(60, seed=0)
    return box, lab, X, lab.measure(X)


def test_training_set_takes_medians_and_skips_failed_conditions():
    a = np.vstack([np.full(4, 1.0), np.full(4, 3.0), np.full(4, np.nan), np.full(4, 2.0)])
    dead = np.full((2, 4), np.nan)
    X, Y = twostep.training_set([[1, 2], [3, 4]], [a, dead])
    np.testing.assert_array_equal(X, [[1, 2]])
    np.testing.assert_array_equal(Y, [[2.0] * 4])
    with pytest.raises(ValueError):
        twostep.training_set([[3, 4]], [dead])


def test_network_learns_spectra_of_the_virtual_lab(lab_data):
    box, lab, X, blocks = lab_data
    Xt, Yt = twostep.training_set(X, blocks)
    model = twostep.fit_spectrum_model(Xt[:50], Yt[:50], box, seed=0, n_members=2, epochs=600)
    pred = model.predict(Xt[50:])
    truth = lab.mean_spectra(Xt[50:])
    cos = (pred * truth).sum(1) / np.linalg.norm(pred, axis=1) / np.linalg.norm(truth, axis=1)
    assert np.median(cos) > 0.95  # held-out conditions, not seen in training
    mean_only = np.tile(Yt[:50].mean(0), (10, 1))
    assert np.abs(pred - truth).mean() < np.abs(mean_only - truth).mean()


def test_proposals_are_in_bounds_distinct_and_better_than_random(lab_data):
    box, lab, X, blocks = lab_data
    target = load_target()
    Xt, Yt = twostep.training_set(X, blocks)
    model = twostep.fit_spectrum_model(Xt, Yt, box, seed=0, n_members=2, epochs=600)
    P = twostep.propose(model, box, target, 8, seed=1, n_candidates=4000, exclude=Xt)
    assert P.shape == (8, 5) and box.feasible(P).all()
    U = box.to_unit(P)
    D = np.linalg.norm(U[:, None] - U[None], axis=-1) + np.eye(8) * 9
    assert D.min() >= 0.05
    pred = twostep.predicted_loss(model, P, target)
    rand = twostep.predicted_loss(model, box.uniform(500, np.random.default_rng(3)), target)
    assert pred.max() <= np.quantile(rand, 0.1)
    # and the lab agrees that they are good conditions, better than the median random one
    true_loss = spectrum_losses(lab.mean_spectra(P), target)
    assert np.median(true_loss) < np.median(
        spectrum_losses(lab.mean_spectra(box.uniform(200, np.random.default_rng(4))), target)
    )


def test_single_network_shapes_and_input_scaling():
    X = np.random.default_rng(0).random((20, 5)) * [40, 30, 30, 20, 800] + [4, 10, 0.5, 0.5, 200]
    Y = np.sin(X[:, :1] / 10 + WAVELENGTHS_NM[None, :] / 50)
    m = train_spectrum_mlp(X, Y, np.array([4, 10, 0.5, 0.5, 200.0]), np.array([45, 40, 30, 20, 1000.0]), epochs=50)
    assert m(__import__("torch").as_tensor(X[:3], dtype=__import__("torch").float32)).shape == (3, WAVELENGTHS_NM.size)
    ens = train_spectrum_ensemble(X, Y, X.min(0), X.max(0), n_members=2, epochs=20)
    mean, std = ens.predict(X[:4], return_std=True)
    assert mean.shape == std.shape == (4, WAVELENGTHS_NM.size) and (std >= 0).all()


def test_stop_rules():
    probe = np.array([0.3, 0.5, 0.7])
    c = twostep.check_stop(0.09, 0.1, probe, probe + 0.01, np.array([0.2, 0.3]), np.array([0.22, 0.31]))
    assert c.loss_reached and c.stable and c.accurate and c.stop
    c = twostep.check_stop(0.2, 0.1, probe, probe + 0.1, np.array([0.2, 0.3]), np.array([0.22, 0.31]))
    assert not c.loss_reached and not c.stable and c.accurate and not c.stop
    c = twostep.check_stop(0.2, 0.1, probe, probe, np.array([0.2, 0.3]), np.array([0.5, np.nan]))
    assert c.stable and c.newest_error == pytest.approx(0.3) and not c.accurate and not c.stop
    c = twostep.check_stop(0.2, 0.1, probe, None, None, None)
    assert c.stability is None and not c.stop


@pytest.mark.slow
def test_bo_plus_network_rounds_record_proposals_and_stop_checks(tmp_path):
    obj = SynthesisObjective(lab=VirtualLab(n_replicates=3, seed=1), domain=synthesis_box("full"))
    sc = SynthesisCampaign(tmp_path / "c", obj, method="bo+dnn", batch=6, seed=0, dnn_from=2, dnn_batch=4)
    logs = sc.run(3)
    assert [r.method for r in logs] == ["lhs", "bo+dnn", "bo+dnn"]
    assert logs[-1].n_conditions_so_far == 6 + 2 * (6 + 4)
    obs = sc.observations()
    assert (obs["source"] == "dnn").sum() == 8
    assert obj.domain.feasible(obs[["Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot"]].to_numpy()).all()
    assert logs[1].stop["stability"] is None and logs[2].stop["stability"] is not None
    assert logs[2].stop["newest_error"] is not None and len(logs[2].stop["dnn_predicted"]) == 4
