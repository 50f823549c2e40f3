"""SHAP importance: exact on an additive function, and the network's summaries rank real inputs."""

from __future__ import annotations

import numpy as np
import pytest

from screening.objectives.synthesis import twostep
from screening.objectives.synthesis.explain import importance, shap_table, shap_values, spectrum_summaries
from screening.objectives.synthesis.objective import INPUT_NAMES, synthesis_box
from screening.objectives.synthesis.spectral_loss import load_target
from screening.objectives.synthesis.virtual_lab import VirtualLab


@pytest.mark.slow
def test_shap_values_are_exact_for_an_additive_function():
    rng = np.random.default_rng(0)
    bg, X = rng.random((20, 3)), rng.random((5, 3))
    f = lambda Z: 3.0 * Z[:, 0] - 1.0 * Z[:, 2]  # noqa: E731
    v = shap_values(f, bg, X)
    np.testing.assert_allclose(v[:, 0], 3.0 * (X[:, 0] - bg[:, 0].mean()), atol=1e-9)
    np.testing.assert_allclose(v[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(v.sum(1), f(X) - f(bg).mean(), atol=1e-9)
    assert list(importance(v, ["a", "b", "c"]).index) == ["a", "c", "b"]


@pytest.mark.slow
def test_shap_table_of_the_spectrum_network_finds_the_ignored_input():
    box = synthesis_box("full")
    lab = VirtualLab(n_replicates=3, seed=0)
    X = box.latin_hypercube(50, seed=2)
    Xt, Yt = twostep.training_set(X, lab.measure(X))
    model = twostep.fit_spectrum_model(Xt, Yt, box, seed=0, n_members=2, epochs=500)
    table, raw = shap_table(spectrum_summaries(model, load_target()), Xt, INPUT_NAMES, n_background=15, n_explain=20)
    assert list(table.columns) == ["loss", "peak_wavelength_nm", "peak_absorbance"]
    assert raw["loss"].shape == (20, 5)
    # in the virtual lab (as in the paper's data) PVA barely matters and Q_seed / Q_AgNO3 do
    top2 = set(table["peak_absorbance"].nlargest(2).index)
    assert top2 & {"Q_seed", "Q_AgNO3"}
    assert table.loc["Q_PVA", "loss"] < table.loc[["Q_seed", "Q_AgNO3"], "loss"].max()
