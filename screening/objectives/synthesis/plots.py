"""Figures of a synthesis campaign: best loss per round, best spectrum vs target, SHAP importance.

Each function takes plain arrays / frames and writes one PNG (matplotlib, Agg backend); none
reads campaign files, so scripts and the CLI can draw from whatever they hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from screening.io.atomic import save_figure_atomic  # noqa: E402
from screening.objectives.synthesis.spectral_loss import WAVELENGTHS_NM, minmax  # noqa: E402

METHOD_COLOURS = {"bo": "tab:blue", "bo+dnn": "tab:orange", "random": "tab:green", "dnn": "tab:orange"}


def plot_best_loss_per_round(
    curves: Mapping[str, np.ndarray], path: str | Path, references: Mapping[str, float] | None = None, title: str = ""
) -> Path:
    """Best condition loss after each round. ``curves[method]`` is (n_campaigns, n_rounds) or
    (n_rounds,); several campaigns are drawn as median with an interquartile band."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, c in curves.items():
        c = np.atleast_2d(np.asarray(c, dtype=float))
        rounds = np.arange(1, c.shape[1] + 1)
        colour = METHOD_COLOURS.get(method)
        ax.plot(
            rounds,
            np.nanmedian(c, axis=0),
            marker="o",
            color=colour,
            label=f"{method} (n={c.shape[0]})" if c.shape[0] > 1 else method,
        )
        if c.shape[0] > 1:
            ax.fill_between(
                rounds, np.nanpercentile(c, 25, axis=0), np.nanpercentile(c, 75, axis=0), color=colour, alpha=0.2
            )
    for label, value in (references or {}).items():
        ax.axhline(value, ls="--", lw=0.8, color="grey")
        ax.text(1, value, f" {label}", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("round")
    ax.set_ylabel("best condition loss (median over droplets)")
    ax.set_title(title or "Best loss per round")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_spectrum_vs_target(
    spectrum: np.ndarray,
    target: np.ndarray,
    path: str | Path,
    label: str = "best condition",
    droplets: np.ndarray | None = None,
) -> Path:
    """The best condition's median spectrum (and its droplets) against the target, both min-max
    scaled as the loss sees them; absolute absorbance on the right axis."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if droplets is not None:
        for d in np.atleast_2d(droplets):
            ax.plot(WAVELENGTHS_NM, minmax(d), color="tab:blue", alpha=0.1, lw=0.7)
    ax.plot(WAVELENGTHS_NM, minmax(spectrum), color="tab:blue", lw=2, label=f"{label} (min-max)")
    ax.plot(WAVELENGTHS_NM, minmax(target), color="black", ls="--", lw=2, label="target (min-max)")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("scaled absorbance")
    # The measured absorbance on its own axis: dotted and drawn on top, because when the spectrum's
    # minimum is near 0 it lies exactly on the scaled curve and a solid line there was invisible.
    ax2 = ax.twinx()
    (absolute,) = ax2.plot(
        WAVELENGTHS_NM, spectrum, color="tab:red", ls=":", lw=1.5, zorder=3, label=f"{label} (absorbance, right axis)"
    )
    ax2.set_ylabel("absorbance")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles=[*handles, absolute], labels=[*labels, str(absolute.get_label())], loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_shap_importance(table: pd.DataFrame, path: str | Path) -> Path:
    """Mean |SHAP| per input, one panel per explained quantity (columns of ``table``)."""
    cols = list(table.columns)
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        s = table[col].sort_values()
        ax.barh(s.index, s.values, color="tab:purple")
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("mean |SHAP|")
    fig.tight_layout()
    path = Path(path)
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def best_loss_by_round(rounds: Sequence[dict] | pd.DataFrame) -> np.ndarray:
    """Running best loss at the end of each round from round logs (``best_loss_so_far``)."""
    frame = pd.DataFrame(rounds)
    return frame["best_loss_so_far"].to_numpy(dtype=float)
