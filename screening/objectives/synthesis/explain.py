"""Which inputs matter: SHAP importance of the synthesis conditions.

For any prediction function of the five conditions (the spectrum network's predicted loss, its
predicted peak wavelength or peak absorbance, or the virtual lab's loss), Shapley values split
each prediction into per-input contributions relative to a background set. The mean absolute
SHAP value per input ranks the inputs; the paper found Q_seed and Q_AgNO3 the most important.

Kept fast on two cores: a permutation explainer (exact for additive structure, ~2·d·|background|
model calls per explained row) with a small background, batched calls of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from screening.models.spectrum_mlp import SpectrumEnsemble
from screening.objectives.synthesis.spectral_loss import WAVELENGTHS_NM, spectrum_losses


def shap_values(
    predict: Callable[[np.ndarray], np.ndarray], background: np.ndarray, explain: np.ndarray, seed: int = 0
) -> np.ndarray:
    """SHAP values (n_explain, d) of ``predict`` (rows → one number per row) at ``explain``.

    ``background`` (a few dozen rows) defines the reference: the values of a row sum to
    ``predict(row) − mean(predict(background))``.
    """
    import shap

    masker = shap.maskers.Independent(np.asarray(background, dtype=float), max_samples=len(background))
    explainer = shap.PermutationExplainer(
        lambda Z: np.asarray(predict(np.asarray(Z, dtype=float)), dtype=float), masker, seed=seed
    )
    out = explainer(np.asarray(explain, dtype=float), max_evals=2 * np.shape(explain)[1] + 1, silent=True)
    return np.asarray(out.values, dtype=float)


def importance(values: np.ndarray, names: Sequence[str]) -> pd.Series:
    """Mean |SHAP| per input, largest first."""
    return pd.Series(np.abs(values).mean(axis=0), index=list(names)).sort_values(ascending=False)


def spectrum_summaries(model: SpectrumEnsemble, target: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Scalar views of a spectrum network: predicted loss, peak wavelength (nm), peak absorbance."""

    def spectra(X: np.ndarray) -> np.ndarray:
        return np.clip(model.predict(X), 0.0, None)

    def loss(X: np.ndarray) -> np.ndarray:
        v = spectrum_losses(spectra(X), target)
        return np.where(np.isfinite(v), v, 1.0)

    return {
        "loss": loss,
        "peak_wavelength_nm": lambda X: WAVELENGTHS_NM[np.argmax(spectra(X), axis=1)],
        "peak_absorbance": lambda X: spectra(X).max(axis=1),
    }


def shap_table(
    functions: dict[str, Callable[[np.ndarray], np.ndarray]],
    X: np.ndarray,
    names: Sequence[str],
    n_background: int = 30,
    n_explain: int = 60,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Mean |SHAP| of each input (rows) for each function (columns), on conditions ``X``.

    The background and the explained rows are random subsets of ``X`` (the measured conditions).
    Returns the table and the raw SHAP values per function (for beeswarm-style plots).
    """
    rng = np.random.default_rng(seed)
    X = np.asarray(X, dtype=float)
    bg = X[rng.choice(len(X), size=min(n_background, len(X)), replace=False)]
    ex = X[rng.choice(len(X), size=min(n_explain, len(X)), replace=False)]
    raw = {name: shap_values(f, bg, ex, seed=seed) for name, f in functions.items()}
    table = pd.DataFrame({name: np.abs(v).mean(axis=0) for name, v in raw.items()}, index=list(names))
    return table, raw
