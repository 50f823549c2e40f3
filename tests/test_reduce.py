"""PCA reducer: scikit-learn shape, persisted with the run, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from screening.errors import MatscreenError
from screening.reduce import PCAReducer, embedding_columns


@pytest.fixture()
def embeddings():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(300, 3)) * [5.0, 2.0, 1.0]
    return latent @ rng.normal(size=(3, 128)) + 0.01 * rng.normal(size=(300, 128))


def test_projection_matches_sklearn_up_to_sign(embeddings):
    ours = PCAReducer().fit_transform(embeddings)
    ref = PCA(n_components=3, svd_solver="full").fit_transform(embeddings)
    assert ours.shape == (300, 3)
    for k in range(3):
        assert np.allclose(ours[:, k], ref[:, k], atol=1e-8) or np.allclose(ours[:, k], -ref[:, k], atol=1e-8)


def test_explained_variance_is_reported_and_dominated_by_the_latent_space(embeddings):
    reducer = PCAReducer(n_components=5).fit(embeddings)
    ratios = reducer.explained_variance_ratio_
    assert np.all(np.diff(ratios) <= 0) and ratios.sum() <= 1 + 1e-12
    assert ratios[:3].sum() > 0.99  # the data are 3-d plus noise


def test_saved_and_loaded_reducer_transforms_identically(embeddings, tmp_path):
    reducer = PCAReducer(n_components=3).fit(embeddings)
    reducer.save(tmp_path / "pca.json")
    loaded = PCAReducer.load(tmp_path / "pca.json")
    np.testing.assert_array_equal(loaded.transform(embeddings), reducer.transform(embeddings))
    np.testing.assert_allclose(loaded.inverse_transform(loaded.transform(embeddings[:5])), embeddings[:5], atol=0.1)


def test_drops_into_a_pipeline(embeddings):
    out = make_pipeline(StandardScaler(), PCAReducer(n_components=2)).fit_transform(embeddings)
    assert out.shape == (300, 2)


def test_clear_errors(embeddings, tmp_path):
    with pytest.raises(MatscreenError, match="not fitted"):
        PCAReducer().transform(embeddings)
    with pytest.raises(MatscreenError, match="n_components"):
        PCAReducer(n_components=200).fit(embeddings)
    reducer = PCAReducer().fit(embeddings)
    with pytest.raises(MatscreenError, match="128 features"):
        reducer.transform(embeddings[:, :10])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(MatscreenError, match="not a matscreen PCA"):
        PCAReducer.load(tmp_path / "bad.json")


def test_embedding_columns_are_found_in_numeric_order():
    frame = pd.DataFrame(columns=["id", "emb_10", "emb_2", "emb_0", "pred_band_gap", "emb_x"])
    assert embedding_columns(frame.columns) == ["emb_0", "emb_2", "emb_10"]
