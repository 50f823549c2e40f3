"""Figures for campaigns (matplotlib, Agg backend: works headless and in CI).

- :func:`convergence_plot`: best loss (e.g. |gap - target| in eV) against search evaluations,
  with the exact random-search expectation for the same pool and the hit tolerance.
- :func:`pool_map_plot`: the pool in its first two PCA coordinates coloured by the property,
  with the campaign's picks numbered in order and the hits marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from screening.io.atomic import save_figure_atomic  # noqa: E402


def convergence_plot(
    best_loss: Sequence[float] | np.ndarray,
    path: str | Path,
    random_expectation: Sequence[float] | np.ndarray | None = None,
    tolerance: float | None = None,
    start: float | None = None,
    ylabel: str = "best |gap − target| (eV)",
    title: str | None = None,
) -> Path:
    """Best loss after each search evaluation; ``start`` is the best of the prior data."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=120)
    k = np.arange(0, len(best_loss) + 1)
    first = start if start is not None and np.isfinite(start) else (best_loss[0] if len(best_loss) else np.nan)
    ax.step(k, np.concatenate([[first], np.asarray(best_loss, dtype=float)]), where="post", lw=2, label="this campaign")
    if random_expectation is not None and len(random_expectation):
        r = np.asarray(random_expectation, dtype=float)
        ax.plot(
            np.arange(0, r.size + 1), np.concatenate([[first], r]), "--", color="grey", label="random search (expected)"
        )
    if tolerance is not None and tolerance > 0:
        ax.axhline(tolerance, color="tab:green", lw=1, ls=":", label=f"tolerance {tolerance:g}")
    ax.set_yscale("symlog", linthresh=max((tolerance or 1e-2) / 10.0, 1e-5))
    ax.set_ylim(bottom=0.0)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("evaluations (after the prior data)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


def pool_map_plot(
    coords: np.ndarray,
    values: np.ndarray | None,
    path: str | Path,
    picks: Sequence[int] = (),
    prior: Sequence[int] = (),
    hits: Sequence[int] = (),
    value_label: str = "band gap (eV)",
    title: str | None = None,
) -> Path:
    """PC1 vs PC2 of the pool; ``picks`` (row indices, in order), ``prior`` rows and ``hits`` rows."""
    path = Path(path)
    coords = np.asarray(coords, dtype=float)
    fig, ax = plt.subplots(figsize=(6.0, 5.0), dpi=120)
    y = coords[:, 1] if coords.shape[1] > 1 else np.zeros(len(coords))
    sc = ax.scatter(
        coords[:, 0], y, c=values if values is not None else "lightgrey", s=4, cmap="viridis", alpha=0.5, lw=0
    )
    if values is not None:
        fig.colorbar(sc, ax=ax, label=value_label)
    if len(prior):
        p = np.asarray(prior)
        ax.scatter(coords[p, 0], y[p], s=14, facecolors="none", edgecolors="black", lw=0.6, label="prior data")
    if len(picks):
        p = np.asarray(picks)
        ax.plot(coords[p, 0], y[p], "-", color="tab:red", lw=0.6, alpha=0.6)
        ax.scatter(coords[p, 0], y[p], s=22, color="tab:red", label="campaign picks")
        for n, row in enumerate(p[:40], start=1):
            ax.annotate(str(n), (coords[row, 0], y[row]), fontsize=6, xytext=(2, 2), textcoords="offset points")
    if len(hits):
        h = np.asarray(hits)
        ax.scatter(coords[h, 0], y[h], marker="*", s=120, color="gold", edgecolors="black", lw=0.6, label="hit")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if title:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path


def learned_map_plot(
    predicted: np.ndarray,
    measured: np.ndarray,
    grid: np.ndarray,
    map_mean: np.ndarray,
    map_std: np.ndarray,
    title: str,
    path: str | Path,
) -> Path:
    """Measured against predicted (eV) for the told results, with the learned map and its 95 %
    band, and the identity for reference: why the campaign prefers the crystals it now does."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    lo = float(min(np.min(grid), np.min(predicted, initial=np.inf)))
    hi = float(max(np.max(grid), np.max(predicted, initial=-np.inf)))
    ax.plot([lo, hi], [lo, hi], color="0.6", ls=":", lw=1, label="measured = predicted")
    ax.fill_between(
        grid, map_mean - 1.96 * map_std, map_mean + 1.96 * map_std, color="C0", alpha=0.2, label="95 % band"
    )
    ax.plot(grid, map_mean, color="C0", lw=2, label="learned map")
    ax.scatter(predicted, measured, s=18, color="C3", zorder=3, label=f"results ({len(measured)})")
    ax.set_xlabel("predicted gap (eV)")
    ax.set_ylabel("measured gap (eV)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    save_figure_atomic(fig, path)
    plt.close(fig)
    return path
