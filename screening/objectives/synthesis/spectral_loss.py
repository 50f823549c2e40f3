"""The AgBONN spectral loss: how far a UV-Vis absorbance spectrum is from the target spectrum.

Mekki-Berrada et al., npj Comput. Mater. 7, 55 (2021). For one droplet's spectrum ``s`` on the
380–800 nm grid (1 nm steps, 421 points, absorbance units) with peak absorbance ``A = max(s)``:

    loss = 1 − cos(minmax(t), minmax(s)) · δ(A)
    δ(A) = 0 if A > 1.2,   1 if 0.7 ≤ A ≤ 1.2,   A / 0.7 if A < 0.7

``minmax`` rescales a spectrum to [0, 1] (baseline and absolute scale removed), so the cosine only
judges the *shape*; δ judges the *amount*: a weak spectrum (too few particles) is penalised
linearly, a saturated one (A > 1.2, outside the spectrometer's linear range) scores loss 1.
The authors' code returned ``None`` for ``A ≤ 0``; here a non-positive or non-finite spectrum is a
failed droplet and its loss is NaN, so callers must drop it explicitly (it is never a silent 0).

A condition is run as a train of replicate droplets; its loss is the median of the finite
droplet losses (robust to the occasional bad droplet), and the failures are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WAVELENGTHS_NM = np.arange(380.0, 801.0, 1.0)
"""The paper's spectral grid: 380–800 nm in 1 nm steps (421 points)."""

PEAK_ABSORBANCE_LOW = 0.7
PEAK_ABSORBANCE_HIGH = 1.2


def minmax(spectra: np.ndarray) -> np.ndarray:
    """Rescale each spectrum (last axis) to [0, 1]; a flat spectrum becomes NaN (no shape)."""
    s = np.asarray(spectra, dtype=float)
    lo = s.min(axis=-1, keepdims=True)
    span = s.max(axis=-1, keepdims=True) - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), np.nan)


def intensity_factor(peak_absorbance: np.ndarray) -> np.ndarray:
    """δ(A): 1 on [0.7, 1.2], A/0.7 below, 0 above 1.2 (saturated); NaN where A ≤ 0 or not finite."""
    a = np.asarray(peak_absorbance, dtype=float)
    delta = np.where(a > PEAK_ABSORBANCE_HIGH, 0.0, np.where(a >= PEAK_ABSORBANCE_LOW, 1.0, a / PEAK_ABSORBANCE_LOW))
    return np.where(np.isfinite(a) & (a > 0), delta, np.nan)


def spectrum_losses(spectra: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-spectrum AgBONN loss for an ``(n, 421)`` (or ``(421,)``) array of absorbances.

    ``target`` is the target spectrum on the same grid (any scale; it is min-max scaled here).
    Spectra with any NaN, or with a non-positive peak, get loss NaN (failed droplets).
    """
    s = np.atleast_2d(np.asarray(spectra, dtype=float))
    t = np.asarray(target, dtype=float)
    if s.shape[-1] != t.shape[-1]:
        raise ValueError(f"spectra have {s.shape[-1]} points but the target has {t.shape[-1]}")
    t_mm = minmax(t)
    valid = np.isfinite(s).all(axis=1)
    s_safe = np.where(valid[:, None], s, 0.0)
    s_mm = minmax(s_safe)
    cos = (s_mm @ t_mm) / (np.linalg.norm(s_mm, axis=1) * np.linalg.norm(t_mm))
    loss = 1.0 - cos * intensity_factor(s_safe.max(axis=1))
    loss = np.where(valid, loss, np.nan)
    return loss if np.ndim(spectra) > 1 else loss[:1]


def unusable_reason(spectrum: np.ndarray) -> str | None:
    """Why :func:`spectrum_losses` cannot score one spectrum (absorbances), or None when it can.

    Negative absorbances are not a reason: a baseline-subtracted spectrum dips below zero and
    ``minmax`` removes the baseline. A spectrum with a NaN or infinite value, a peak at or below
    zero (δ(A) is undefined there) or no shape at all (flat) has no loss.
    """
    s = np.asarray(spectrum, dtype=float)
    if not np.isfinite(s).all():
        return "no spectrum (NaN)"
    if s.max() <= 0:
        return "non-positive peak"
    if s.max() == s.min():
        return "flat spectrum"
    return None


@dataclass(frozen=True)
class ConditionLoss:
    """The loss of one condition from its replicate droplets.

    ``loss`` is the median of the finite droplet losses (NaN when every droplet failed);
    ``n_ok`` / ``n_failed`` count the droplets used and excluded.
    """

    loss: float
    droplet_losses: tuple[float, ...]
    n_ok: int
    n_failed: int

    @property
    def failed(self) -> bool:
        return self.n_ok == 0


def condition_loss(spectra: np.ndarray, target: np.ndarray) -> ConditionLoss:
    """Median over replicate droplets of the AgBONN loss; failed droplets are counted, not used."""
    losses = spectrum_losses(np.atleast_2d(spectra), target) if np.size(spectra) else np.empty(0)
    ok = np.isfinite(losses)
    med = float(np.median(losses[ok])) if ok.any() else float("nan")
    return ConditionLoss(med, tuple(float(v) for v in losses), int(ok.sum()), int((~ok).sum()))


# --- the target spectrum ------------------------------------------------------------------------

DEFAULT_TARGET_RESOURCE = "agbonn_target.json"
"""Shipped parametric target (``screening/data/``): a sum of Gaussians fitted by
``scripts/fit_virtual_lab.py`` to the AgBONN target (DDA extinction of a 50 nm-edge, 10 nm-thick
Ag nanoprism in water, main in-plane dipole peak at 642 nm). Not the authors' data: our fit."""


def gaussian_sum(
    wavelengths_nm: np.ndarray, centres_nm: np.ndarray, widths_nm: np.ndarray, heights: np.ndarray, offset: float
) -> np.ndarray:
    """Σ_k h_k exp(−(λ − c_k)² / 2w_k²) + offset: the parametric form of the shipped target."""
    lam = np.asarray(wavelengths_nm, dtype=float)[:, None]
    c, w, h = (np.asarray(v, dtype=float)[None, :] for v in (centres_nm, widths_nm, heights))
    return (h * np.exp(-0.5 * ((lam - c) / w) ** 2)).sum(axis=1) + float(offset)


def load_target(path: str | None = None) -> np.ndarray:
    """The target spectrum on ``WAVELENGTHS_NM``.

    ``None``: the shipped Gaussian-sum fit. A ``.json`` path: the same format
    (``centres_nm``, ``widths_nm``, ``heights``, ``offset``). A ``.csv`` path: two numeric columns,
    wavelength (nm) and absorbance (any scale), linearly interpolated onto the 1 nm grid; the
    CSV must cover 380–800 nm.
    """
    import json
    from importlib import resources
    from pathlib import Path

    from screening.errors import RecordError

    if path is None:
        spec = json.loads(resources.files("screening").joinpath("data", DEFAULT_TARGET_RESOURCE).read_text())
    elif str(path).endswith(".json"):
        spec = json.loads(Path(path).read_text())
    else:
        import pandas as pd

        frame = pd.read_csv(path)
        if frame.shape[1] < 2:
            raise RecordError("target", "needs two columns: wavelength (nm), absorbance", str(path))
        lam = pd.to_numeric(frame.iloc[:, 0], errors="coerce").to_numpy()
        ab = pd.to_numeric(frame.iloc[:, -1], errors="coerce").to_numpy()
        ok = np.isfinite(lam) & np.isfinite(ab)
        if ok.sum() < 2 or lam[ok].min() > WAVELENGTHS_NM[0] or lam[ok].max() < WAVELENGTHS_NM[-1]:
            raise RecordError("target", "wavelengths must cover 380–800 nm with numeric values", str(path))
        order = np.argsort(lam[ok])
        return np.interp(WAVELENGTHS_NM, lam[ok][order], ab[ok][order])
    try:
        return gaussian_sum(WAVELENGTHS_NM, spec["centres_nm"], spec["widths_nm"], spec["heights"], spec["offset"])
    except KeyError as exc:
        raise RecordError("target", f"missing key {exc}", str(path or DEFAULT_TARGET_RESOURCE)) from exc
