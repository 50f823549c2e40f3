"""PCA of crystal embeddings to a few dimensions, persisted with the run.

The GP surrogate works best in a handful of dimensions, so embeddings (128-d) are projected to
3 principal components by default. The reducer is a scikit-learn-style estimator (``fit`` learns,
``transform`` applies, learned state ends in ``_``) so it drops into a ``Pipeline``, and it saves
to a small JSON file — no pickle — so a campaign can be resumed or audited months later with the
exact same projection.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from screening.errors import MatscreenError
from screening.io.atomic import write_json_atomic


class PCAReducer:
    """Standardise-free PCA (embeddings share units) with JSON persistence.

    ``n_components`` components are kept (3 by default); ``explained_variance_ratio_`` reports
    how much of the embedding variance each keeps, which the CLI prints so a user knows what the
    3-d map throws away.

    A scikit-learn style estimator (``fit`` / ``transform`` / ``fit_transform``, ``get_params`` /
    ``set_params``, so ``sklearn.base.clone`` and pipelines take it) that does not inherit from
    scikit-learn: importing sklearn costs ~0.8 s, and a campaign that only *applies* a saved PCA
    (every `campaign ask`) should not pay it. ``fit`` uses scikit-learn's PCA itself.
    """

    _PARAMS = ("n_components", "whiten", "random_state")

    def __init__(self, n_components: int = 3, whiten: bool = False, random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params) -> PCAReducer:
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(f"PCAReducer has no parameter {name!r}")
            setattr(self, name, value)
        return self

    def fit_transform(self, X: np.ndarray, y=None) -> np.ndarray:
        return self.fit(X).transform(X)

    def fit(self, X: np.ndarray, y=None) -> PCAReducer:
        from sklearn.decomposition import PCA

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise MatscreenError(f"PCA needs a 2-d array with at least 2 rows, got shape {X.shape}")
        if self.n_components > min(X.shape):
            raise MatscreenError(f"n_components={self.n_components} exceeds min(n_samples, n_features)={min(X.shape)}")
        pca = PCA(n_components=self.n_components, whiten=self.whiten, svd_solver="full", random_state=self.random_state)
        pca.fit(X)
        self.mean_ = pca.mean_
        self.components_ = pca.components_
        self.explained_variance_ = pca.explained_variance_
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "components_"):
            raise MatscreenError("PCAReducer is not fitted yet: call fit() or load() first")
        X = np.asarray(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise MatscreenError(f"PCA was fitted on {self.n_features_in_} features, got {X.shape[1]}")
        Z = (X - self.mean_) @ self.components_.T
        if self.whiten:
            Z = Z / np.sqrt(self.explained_variance_)
        return Z

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        if self.whiten:
            Z = Z * np.sqrt(self.explained_variance_)
        return Z @ self.components_ + self.mean_

    def save(self, path: str | Path) -> None:
        state = {
            "format": "matscreen-pca-1",
            "params": self.get_params(),
            "mean_": self.mean_.tolist(),
            "components_": self.components_.tolist(),
            "explained_variance_": self.explained_variance_.tolist(),
            "explained_variance_ratio_": self.explained_variance_ratio_.tolist(),
            "n_features_in_": int(self.n_features_in_),
        }
        write_json_atomic(state, path)  # a killed save never leaves a half-written PCA file

    @classmethod
    def load(cls, path: str | Path) -> PCAReducer:
        try:
            state = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise MatscreenError(f"{path}: cannot read PCA state ({exc})") from exc
        if state.get("format") != "matscreen-pca-1":
            raise MatscreenError(f"{path}: not a matscreen PCA file")
        reducer = cls(**state["params"])
        for key in ("mean_", "components_", "explained_variance_", "explained_variance_ratio_"):
            setattr(reducer, key, np.asarray(state[key], dtype=np.float64))
        reducer.n_features_in_ = int(state["n_features_in_"])
        return reducer


def embedding_columns(columns) -> list[str]:
    """The ``emb_<k>`` columns of a featurized frame, in numeric order."""
    cols = [c for c in columns if isinstance(c, str) and c.startswith("emb_") and c[4:].isdigit()]
    return sorted(cols, key=lambda c: int(c[4:]))
